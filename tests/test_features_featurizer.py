"""Featurizer: text + audio + faces -> Sample -> MultimodalBatch with masks and present flags."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from moodlens.models.batch import MultimodalBatch
from moodlens.core.errors import ConfigError
from moodlens.realtime.perception.features.config import FeaturizerConfig
from moodlens.realtime.perception.features.featurizer import Featurizer
from moodlens.core.types import FaceFeatures


@pytest.fixture(scope="module")
def featurizer():
    f = Featurizer(FeaturizerConfig())
    yield f
    f.close()


def faces(pattern: str, dim: int = 64) -> list[FaceFeatures]:
    rng = np.random.default_rng(0)
    return [FaceFeatures(t=i / 15, values=rng.random(dim, dtype=np.float32) if c == "F" else None,
                         face_present=c == "F") for i, c in enumerate(pattern)]


def test_sample_and_collate_with_present_flags(featurizer, tts):
    speech, _ = sf.read(str(tts("This movie was great.")), dtype="float32")
    a = featurizer.sample("this movie was great", speech, faces("FF-F"))
    b = featurizer.sample("", np.zeros(0, np.float32), faces("---"))
    c = featurizer.sample("   ", speech[:8000], [])
    assert a.present.tolist() == [True, True, True]
    assert b.present.tolist() == [False, False, False]
    assert c.present.tolist() == [False, True, False]
    assert a.text_ids[0] == 101 and a.text_ids[-1] == 102   # [CLS] ... [SEP]
    assert a.audio.shape == (1 + len(speech) // 640, 40)
    assert a.vision_mask.tolist() == [True, True, False, True]
    assert (a.vision[2] == 0).all()

    batch = featurizer.collate([a, b, c])
    assert isinstance(batch, MultimodalBatch)
    assert batch.text_ids.dtype == torch.int64 and batch.text_mask.dtype == torch.bool
    assert batch.audio.shape == (3, len(a.audio), 40) and batch.vision.shape == (3, 4, 64)
    assert batch.audio_mask.sum(1).tolist() == [len(a.audio), 0, len(c.audio)]
    assert batch.vision_mask.sum(1).tolist() == [3, 0, 0]
    assert batch.present.tolist() == [[True, True, True], [False, False, False], [False, True, False]]
    assert batch.text_mask[0].sum() == len(a.text_ids)
    assert all(torch.isfinite(t.float()).all() for t in batch.tensors())


def test_text_is_truncated_to_the_configured_length(featurizer):
    long = " ".join(["word"] * 200)
    sample = featurizer.sample(long, None, [])
    assert len(sample.text_ids) == 50


def test_collate_runs_a_model_forward(featurizer):
    """The collated batch satisfies the model contract (a real model from the zoo, if any is built)."""
    from moodlens.models import MODEL_NAMES, build_model

    if not MODEL_NAMES:
        pytest.skip("no model in the zoo yet")
    model = build_model(MODEL_NAMES[0], {}).eval()
    batch = featurizer.collate([featurizer.sample("good", np.zeros(16000, np.float32), faces("F-F")),
                                featurizer.sample("bad", np.zeros(3200, np.float32), faces("--"))])
    with torch.no_grad():
        out = model(*batch.tensors())
    assert out.fused.shape == (2,) and torch.isfinite(out.fused).all()


def test_config_tokenizer_mismatch_is_refused():
    with pytest.raises(ConfigError, match="tokenizes differently"):
        Featurizer(FeaturizerConfig(text_tokenizer_sha="0000000000000000"))


def test_config_for_another_encoder_folder(tmp_path):
    import shutil

    from moodlens.core.assets import TEXT_ENCODER, resolve_path

    other = tmp_path / "my-bert"
    other.mkdir()
    vocab = (resolve_path(TEXT_ENCODER) / "vocab.txt").read_text().splitlines()
    (other / "vocab.txt").write_text("\n".join(vocab[:-1] + ["newtoken"]) + "\n")  # one word differs
    config = FeaturizerConfig().with_text_encoder(str(other))
    assert config.text_encoder == "my-bert" and config.text_tokenizer_sha != FeaturizerConfig().text_tokenizer_sha
    Featurizer(config, text_encoder_path=str(other)).close()
    with pytest.raises(ConfigError, match="text_tokenizer_sha"):
        FeaturizerConfig().check_compatible(config, "a checkpoint trained with my-bert")
    assert FeaturizerConfig().with_text_encoder(None) == FeaturizerConfig()
    shutil.rmtree(other)
