"""The shipped default weights (models/weights/default.pt): size, loading, and sentiment sign."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from moodlens.models.checkpoint import default_checkpoint_path, load_checkpoint, read_checkpoint
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
    # audio = Whisper tiny.en encoder states (384-d), vision = the live 71-d face features (mediapipe_v3)
    assert default.model_config["audio_dim"] == 384 and default.model_config["vision_dim"] == 71
    assert default.featurizer_config["audio_features"] == "whisper_encoder"
    # v2's 64 dims + the expression CNN's 7 (docs/model_card.md); the live featurizer follows the checkpoint,
    # and the face head pools the 7 CNN dims alone
    assert default.featurizer_config["vision_features"] == "mediapipe_v3"
    assert len(default.featurizer_config["vision_expression_sha"]) == 16
    assert list(default.model_config["pooled_inputs_vision"]) == [64, 71]
    assert default.featurizer_config["text_max_len"] == default.model_config["text_max_len"]
    # MOSI text + RAVDESS voices + face stills: every branch was trained, the scorer scores all three
    assert default.extra["trained_modalities"] == ["text", "audio", "vision"]


def _scores(loaded, texts):
    mc = loaded.model.config
    split = text_split("test", texts, torch.zeros(len(texts)).numpy(),
                      DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                  audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
    with torch.no_grad():
        return loaded.model(*split.batch.tensors())


def test_default_fuses_late_with_words_counting_double(default):
    """The default weights use the product additions (configs/train/default_trimodal.yaml): pooled heads
    for voice and face and the late fusion (2, 1, 1); words alone score as the text strip, and an
    absent voice or face has no say."""
    mc = default.model_config
    assert list(mc["late_fusion"]) == [2.0, 1.0, 1.0]
    assert sorted(mc["pooled_heads"]) == ["audio", "vision"] and list(mc["pooled_std"]) == ["audio"]
    model = default.model
    batch = model.example_inputs(3, seed=5)
    bound = model.config.output_range
    model.config.output_range = 1e6     # the rule holds on the unclamped scores (each output is clamped after)
    try:
        with torch.no_grad():
            words = model(*batch.replace(present=torch.tensor([[True, False, False]] * 3)).tensors())
            full = model(*batch.tensors())
            no_face = model(*batch.replace(present=torch.tensor([[True, True, False]] * 3)).tensors())
    finally:
        model.config.output_range = bound
    assert torch.allclose(words.fused, words.text, atol=1e-6)
    assert torch.allclose(full.fused, (2 * full.text + full.audio + full.vision) / 4, atol=1e-5)
    assert torch.allclose(no_face.fused, (2 * no_face.text + no_face.audio) / 3, atol=1e-5)
    assert torch.allclose(no_face.audio, full.audio) and torch.allclose(no_face.text, full.text)


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
    # issue 10's MAE target (0.78) is met and pinned; Non0 is 82.77 today (target 83.5, docs/model_card.md)
    assert result["Non0_acc_2"] >= 0.82 and result["MAE"] <= 0.78, result


@pytest.mark.shared
def test_default_text_strip_on_mosi_valid_is_the_chosen_score(default, shared_data):
    """The text strip was chosen on MOSI valid (docs/model_card.md, text round: s_T 83.80 / 0.827 beat every
    head, ensemble and blend tried); text only, the fused score is that text score."""
    from moodlens.train.data import load_dataset
    from moodlens.train.metrics import mmsa_regression_metrics
    from moodlens.train.trainer import predict

    mc = default.model.config
    split = load_dataset(shared_data / "mosi_text", DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                                                audio_dim=mc.audio_dim, vision_dim=mc.vision_dim)).valid
    preds = predict(default.model, split)
    assert np.array_equal(preds["fused"], preds["text"])
    m = mmsa_regression_metrics(preds["text"], split.labels.numpy(), "mosi")
    assert m["Non0_acc_2"] >= 0.835 and m["MAE"] <= 0.83, m


def test_fine_tuning_from_the_default_weights(default, tmp_path):
    """`moodlens train --init-from default` (no --model): hcrl_mfd with the default's config; with
    learning rates 0 the first epoch's validation loss is the default's own on that split; the result
    keeps the default's trained modalities and featurizer config (a TSV brings none)."""
    from moodlens.realtime.cli import main
    from moodlens.train.trainer import evaluate_split

    words = ["good", "bad", "great", "awful", "fine", "poor"]
    for split, n in (("train", 16), ("dev", 8), ("test", 8)):
        lines = [f"this film is {words[i % 6]} number {i}\t{(-1) ** i * (i % 3):.1f}" for i in range(n)]
        (tmp_path / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(lines) + "\n")
    out = tmp_path / "run"
    code = main(["train", "--init-from", "default", "--data", str(tmp_path), "--epochs", "1", "--batch-size", "8",
                 "--lr", "1e-12", "--text-lr", "1e-12", "--threads", "1", "--quiet", "--json", "--seed", "3",
                 "--out", str(out)])
    assert code == 0
    mc = default.model.config
    rows = [line.split("\t") for line in (tmp_path / "dev.tsv").read_text().splitlines()[1:]]
    valid = text_split("valid", [text for text, _ in rows], np.array([float(label) for _, label in rows]),
                       DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                   audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
    own, _ = evaluate_split(default.model, valid)
    first = next(csv.DictReader((out / "seed_3" / "log.csv").open()))
    assert float(first["valid_loss"]) == pytest.approx(own["loss"], abs=1e-5)
    tuned = load_checkpoint(out / "best.pt")
    # the same config (options added since the default was saved take their defaults in both)
    assert tuned.model_name == "hcrl_mfd" and tuned.model.config == default.model.config
    assert tuned.extra["trained_modalities"] == ["text", "audio", "vision"]   # what the init learned stays
    assert tuned.featurizer_config == default.featurizer_config
