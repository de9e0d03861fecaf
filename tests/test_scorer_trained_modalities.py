"""A checkpoint trained on text only must not let its random-weight audio/vision branches move
the live score: those branches are fed as absent and their scores reported as null."""

import torch

from moodlens.models import build_model
from moodlens.realtime.scoring.scorer import Scorer
from moodlens.models.checkpoint import load_checkpoint, save_checkpoint
from moodlens.realtime.perception.features.config import live_featurizer_config


def test_text_only_checkpoint_scores_audio_and_vision_as_untrained(tmp_path):
    torch.manual_seed(0)
    model = build_model("hcrl_mfd").eval()
    path = save_checkpoint(tmp_path / "text_only.pt", model, live_featurizer_config(), {},
                           extra={"trained_modalities": ["text"]})
    scorer = Scorer(load_checkpoint(path), backend="eager", quiet=True)
    assert scorer.describe()["trained_modalities"] == ["text"]

    batch = model.example_inputs(2)  # all three modalities present
    rows = scorer.score(batch)
    text_only = batch.replace(present=torch.tensor([[True, False, False]] * 2))
    with torch.inference_mode():
        expected = model(*text_only.tensors())
    for i, row in enumerate(rows):
        assert row.present == {"text": True, "audio": True, "vision": True}
        assert row.audio is None and row.vision is None
        assert abs(row.fused - float(expected.fused[i])) < 1e-4
        assert abs(row.text - float(expected.text[i])) < 1e-4

    # Changing the (untrained) audio and vision inputs does not move any score.
    noisy = batch.replace(audio=batch.audio * 50 + 3, vision=-batch.vision)
    assert [r.fused for r in scorer.score(noisy)] == [r.fused for r in rows]


def test_checkpoint_without_the_field_scores_every_modality(tmp_path):
    model = build_model("hcrl_mfd").eval()
    path = save_checkpoint(tmp_path / "all.pt", model, live_featurizer_config(), {})
    scorer = Scorer(load_checkpoint(path), backend="eager", quiet=True)
    rows = scorer.score(model.example_inputs(1))
    assert all(getattr(rows[0], m) is not None for m in ("text", "audio", "vision"))
