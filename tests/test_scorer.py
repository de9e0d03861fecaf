"""The Scorer: per-sample scores with None for absent modalities, model time, checkpoint loading,
featurizer-config mismatch refused, NaN features refused, warm-up builds before the first window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from moodlens.models import build_model
from moodlens.realtime.scoring import backends as B
from moodlens.core.errors import ConfigError, DataError
from moodlens.realtime.perception.features.config import FeaturizerConfig
from moodlens.realtime.scoring import WindowScores
from moodlens.realtime.scoring.scorer import Scorer
from moodlens.models.checkpoint import save_checkpoint
from helpers.models import make_tiny_model, ragged_batch


@pytest.fixture(scope="module")
def options(backend_options):
    return backend_options


@pytest.fixture(scope="module")
def hcrl_checkpoint(tmp_path_factory):
    """A real hcrl_mfd checkpoint (random fusion weights) written with the train engineer's format,
    its features made with a 30 fps face rate instead of the live default 15."""
    torch.manual_seed(0)
    model = build_model("hcrl_mfd").eval()
    trained = FeaturizerConfig(vision_fps=30.0)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "hcrl.pt", model, trained.to_dict(), {"mae": 1.0})
    return path, model


def test_scores_per_sample_with_none_for_absent(tiny, options):
    scorer = Scorer.from_model(tiny, backend="eager", options=options, quiet=True)
    batch = ragged_batch(tiny, 3, 10, 30, 12, absent=1)   # row 0 has no audio
    result = scorer.score(batch)
    assert len(result) == 3 and result.model_ms > 0 and result.backend == "eager"
    with torch.inference_mode():
        ref = tiny(*batch.tensors())
    for i, row in enumerate(result):
        assert isinstance(row, WindowScores)
        assert row.fused == pytest.approx(float(ref.fused[i]), abs=1e-5)
        assert row.text == pytest.approx(float(ref.text[i]), abs=1e-5)
    assert result[0].audio is None and result[0].present["audio"] is False
    assert result[1].audio == pytest.approx(float(ref.audio[1]), abs=1e-5)


def test_auto_backend_logs_its_reason_and_the_cli_shows_it(tiny, options, caplog):
    import logging

    from rich.console import Console

    from moodlens.core.cli import configure_logging

    console = Console(record=True, width=300)
    handler = configure_logging(console)        # what the CLI does: the library logs, the CLI prints
    # An order whose first entry is unavailable here, so auto must skip it and say why.
    opts = dataclasses.replace(options, auto_order=B.AutoOrder(cpu=["tensorrt", "eager"]))
    try:
        with caplog.at_level(logging.INFO, logger="moodlens"):
            scorer = Scorer.from_model(tiny, backend="auto", options=opts)
    finally:
        logging.getLogger("moodlens").removeHandler(handler)
    printed = console.export_text()
    assert [r.getMessage() for r in caplog.records if r.name.endswith("scorer")] == [scorer.backend_reason]
    assert scorer.backend_name == "eager"
    assert "auto chose eager on cpu" in printed
    assert "skipped tensorrt (unavailable: install" in printed


def test_warmup_builds_before_the_first_window(tiny, options):
    opts = dataclasses.replace(options, buckets=B.Buckets(batch=[1], text=[32], audio=[128], vision=[64]))
    scorer = Scorer.from_model(tiny, backend="compile", options=opts, quiet=True)
    assert scorer.backend.builds == 0
    scorer.warmup([3.0])            # 3 s window: 20 tokens, 75 audio frames, 45 face frames
    built = scorer.backend.builds
    assert built >= 1 and scorer.warmed_up
    result = scorer.score(scorer.typical_batch(1, 2.5))  # shorter window, same buckets
    assert scorer.backend.builds == built
    assert np.isfinite(result[0].fused)


def test_nan_feature_is_refused_with_a_sentence(tiny, options):
    scorer = Scorer.from_model(tiny, backend="eager", options=options, quiet=True)
    batch = ragged_batch(tiny, 2, 8, 20, 10)
    audio = batch.audio.clone()
    audio[1, 0, 3] = float("nan")
    with pytest.raises(DataError, match="audio features of sample 1 hold a NaN"):
        scorer.score(batch.replace(audio=audio))
    # A NaN in a padded (masked-out) frame is harmless and passes.
    audio = batch.audio.clone()
    mask = batch.audio_mask.clone()
    mask[0, -1] = False
    audio[0, -1, 0] = float("nan")
    assert np.isfinite(scorer.score(batch.replace(audio=audio, audio_mask=mask))[0].fused)


def test_checkpoint_featurizer_mismatch_is_refused(hcrl_checkpoint, options):
    path, _ = hcrl_checkpoint
    with pytest.raises(ConfigError) as err:
        Scorer(path, backend="eager", featurizer_config=FeaturizerConfig(), options=options, quiet=True)
    message = str(err.value)
    assert "vision_fps" in message and str(path) in message and "\n" not in message


def test_checkpoint_loads_and_scores_like_the_model(hcrl_checkpoint, options):
    path, model = hcrl_checkpoint
    scorer = Scorer(path, backend="eager", options=options, quiet=True)
    assert scorer.model_name == "hcrl_mfd" and scorer.checkpoint_path == str(path)
    assert scorer.featurizer_config.vision_fps == 30.0      # the live featurizer follows the checkpoint
    batch = scorer.typical_batch(2, 3.0)
    assert batch.vision.shape[1] == 90                        # 3 s at the checkpoint's 30 fps
    with torch.inference_mode():
        ref = model(*batch.tensors())
    result = scorer.score(batch)
    assert [r.fused for r in result] == pytest.approx(ref.fused.tolist(), abs=1e-5)


def test_model_dims_must_match_the_featurizer(tmp_path, options):
    small = make_tiny_model(tmp_path / "enc")
    small.config.audio_dim = 20
    with pytest.raises(ConfigError, match="audio_dim=20 but the live featurizer computes 40"):
        Scorer.from_model(small, backend="eager", options=options, quiet=True)


@pytest.mark.parametrize("absent", [0, 1, 2])
def test_an_absent_modality_is_cut_short_and_scores_the_same(options, absent):
    """A modality absent from every row is fed as 2 steps instead of its full length: the window's scores are
    those of the full batch (eager; hcrl_mfd with random weights and the product additions: pooled heads,
    late fusion, recentred voice), and the branch really gets the short input."""
    torch.manual_seed(3)
    model = build_model("hcrl_mfd", {"pooled_heads": ["audio", "vision"], "pooled_std": ["audio"],
                                     "late_fusion": [2.0, 1.0, 1.0], "recentre_audio": True,
                                     "dropout": 0.0, "pooled_dropout": 0.0}).eval()
    scorer = Scorer.from_model(model, backend="eager", options=options, quiet=True)
    batch = model.example_inputs(2, text_len=14, audio_len=60, vision_len=30, seed=absent)
    present = batch.present.clone()
    present[:, absent] = False
    batch = batch.replace(present=present)
    seen = []
    original = scorer.backend.run
    scorer.backend.run = lambda b: seen.append(b) or original(b)
    out, _ms = scorer.predict(batch)
    field = ("text_ids", "audio", "vision")[absent]
    assert getattr(seen[0], field).shape[1] == 2
    assert all(getattr(seen[0], f).shape == getattr(batch, f).shape for f in ("text_ids", "audio", "vision")
               if f != field)
    with torch.inference_mode():
        ref = model(*batch.tensors())
    for name, got, want in zip(("fused", "text", "audio", "vision"), out, ref):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, err_msg=name)
    # present in one row only: nothing is cut
    present[0, absent] = True
    seen.clear()
    scorer.predict(batch.replace(present=present))
    assert getattr(seen[0], field).shape == getattr(batch, field).shape
