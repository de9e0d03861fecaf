"""The shipped default weights (models/weights/default.pt): size, loading, and sentiment sign."""

from __future__ import annotations

import json

import pytest
import torch

from moodlens.train.checkpoint import default_checkpoint_path, load_checkpoint, read_checkpoint
from moodlens.train.data import DataOptions, text_split

POSITIVE = [
    "i really loved this movie it was wonderful and the acting was great",
    "what a fantastic film i enjoyed every minute of it",
]
NEGATIVE = [
    "this movie was terrible boring and way too long i hated it",
    "the worst film i have ever seen awful acting and a stupid plot",
]


@pytest.fixture(scope="module")
def default():
    if not default_checkpoint_path().exists():
        pytest.fail(f"the default weights {default_checkpoint_path()} are missing from the package")
    return load_checkpoint("default")


def test_default_checkpoint_is_small_and_complete(default):
    path = default_checkpoint_path()
    assert path.stat().st_size <= 25 * 1024 * 1024
    payload, _ = read_checkpoint("default")
    assert payload["format"] == "moodlens-checkpoint/1" and payload["model_name"] == default.model_name
    # trained on MOSI transcripts, the branches the live featurizer feeds keep the live dims
    assert default.model_config["audio_dim"] == 40 and default.model_config["vision_dim"] == 64
    assert default.featurizer_config["text_max_len"] == default.model_config["text_max_len"]
    assert default.metrics["Non0_acc_2"] >= 0.80 and default.metrics["MAE"] <= 0.85
    # text-only training: the scorer must feed audio/vision as absent (those branches are untrained)
    assert default.extra["trained_modalities"] == ["text"]


def _scores(loaded, texts):
    mc = loaded.model.config
    split = text_split("test", texts, torch.zeros(len(texts)).numpy(),
                      DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                  audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
    with torch.no_grad():
        return loaded.model(*split.batch.tensors())


def test_default_scores_sentences_with_the_right_sign(default):
    out = _scores(default, POSITIVE + NEGATIVE)
    fused = out.fused
    assert (fused[:2] > 0.5).all(), fused
    assert (fused[2:] < -0.5).all(), fused
    assert torch.isfinite(out.text).all()


@pytest.mark.shared
def test_evaluate_default_on_mosi_test(shared_data, capsys):
    from moodlens.realtime.cli import main

    code = main(["evaluate", "--checkpoint", "default", "--data", str(shared_data / "mosi_text" / "test.tsv"),
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 686
    assert result["Non0_acc_2"] >= 0.80 and result["MAE"] <= 0.85, result
