"""`balance: emotions` (train/mixture.py; scripts/probe_face_fear.py): signs balanced as `balance: true`, and
within each sign every emotion of the samples' annotations drawn equally often, so a scarce emotion (fearful
faces) is not drowned by the common ones of its sign. Synthetic feature files (no shared data needed)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

EMOTIONS = ["happy"] * 6 + ["neutral"] * 4 + ["sad"] * 8 + ["angry"] * 5 + ["fearful"] * 1
VALENCE = {"happy": 2.0, "neutral": 0.0, "sad": -2.0, "angry": -2.0, "fearful": -2.0}


def test_emotion_rows_balance_signs_and_emotions_within_a_sign():
    from moodlens.train.mixture import emotion_balanced_rows, sign_balanced_rows

    emotion = np.array(EMOTIONS)
    sign = np.sign([VALENCE[e] for e in EMOTIONS])
    signs, emos = sign_balanced_rows(sign), emotion_balanced_rows(sign, emotion)
    for w in (signs, emos):                              # + and - equal, zeros keep their share
        assert w[sign > 0].sum() == pytest.approx(w[sign < 0].sum())
        assert w[sign == 0].sum() == pytest.approx(4.0)
    share = emos[sign < 0].sum()
    for e in ("sad", "angry", "fearful"):                # a third of the negatives' draws each
        assert emos[emotion == e].sum() == pytest.approx(share / 3)
    # signs only: the one fearful face gets 1 of the 14 negative draws; emotions: a third of them
    assert signs[emotion == "fearful"].sum() / share == pytest.approx(1 / 14)
    assert emos[emotion == "fearful"][0] == pytest.approx(14 * signs[emotion == "fearful"][0] / 3)
    assert np.array_equal(emos[sign > 0], signs[sign > 0])   # one emotion in the sign: unchanged


def _faces(path, emotions, annotations: bool = True) -> None:
    n = len(emotions)
    rng = np.random.default_rng(0)
    labels = np.array([VALENCE[e] for e in emotions], np.float32)
    nan = np.full(n, np.nan, np.float32)
    split = {
        "id": [f"face{i}" for i in range(n)], "raw_text": [""] * n, "text_bert": np.zeros((n, 3, 8), np.int64),
        "audio": np.zeros((n, 2, 6), np.float32), "audio_lengths": np.zeros(n, np.int64),
        "audio_mask": np.zeros((n, 2), bool), "vision": rng.standard_normal((n, 5, 4)).astype(np.float32),
        "vision_lengths": np.full(n, 5), "vision_mask": np.ones((n, 5), bool), "present": np.tile([False, False, True], (n, 1)),
        "regression_labels": labels, "regression_labels_T": nan, "regression_labels_A": nan, "regression_labels_V": labels,
    }
    if annotations:
        split["annotations"] = [f"{e}/ck/emotion_valence_v1" for e in emotions]
    with path.open("wb") as f:
        pickle.dump({"train": split, "valid": dict(split), "test": dict(split), "meta": None}, f)


def _config(tmp_path, balance: str):
    (tmp_path / "mix.yaml").write_text(f"datasets:\n  - {{path: {tmp_path / 'face.pkl'}, weight: 2.0, "
                                       f"balance: {balance}, name: faces}}\n")
    return tmp_path / "mix.yaml"


def test_mixture_draws_every_emotion_of_a_sign_equally_often(tmp_path):
    from moodlens.train.data import load_dataset

    _faces(tmp_path / "face.pkl", EMOTIONS)
    emotion = np.array(EMOTIONS)
    emos = load_dataset(_config(tmp_path, "emotions")).train
    signs = load_dataset(_config(tmp_path, "true")).train
    assert emos.weights.sum() == pytest.approx(2.0 * len(EMOTIONS))          # the dataset weight is kept
    neg = emos.weights[np.isin(emotion, ["sad", "angry", "fearful"])].sum()
    assert emos.weights[emotion == "fearful"].sum() == pytest.approx(neg / 3)
    assert signs.weights[emotion == "fearful"].sum() == pytest.approx(neg / 14)
    assert emos.weights[emotion == "happy"].sum() == pytest.approx(neg)      # signs still balanced
    # the draws follow the weights: over many epochs fearful is a third of the negatives drawn
    g = torch.Generator().manual_seed(0)
    rows = np.concatenate([emos.epoch_rows(g).numpy() for _ in range(300)])
    drawn = emotion[rows]
    fear = (drawn == "fearful").sum() / np.isin(drawn, ["sad", "angry", "fearful"]).sum()
    assert fear == pytest.approx(1 / 3, abs=0.04)
    # valid / test take every sample once, whatever the balance
    assert np.all(load_dataset(_config(tmp_path, "emotions")).valid.weights == 2.0)


def test_emotions_balance_without_annotations_is_one_sentence(tmp_path):
    from moodlens.core.errors import DataError
    from moodlens.train.data import load_dataset

    _faces(tmp_path / "face.pkl", EMOTIONS, annotations=False)
    with pytest.raises(DataError) as info:
        load_dataset(_config(tmp_path, "emotions"))
    message = " ".join(str(info.value).split())
    assert "faces" in message and "needs an emotion annotation on every sample (found 0 of 24)" in message
    assert load_dataset(_config(tmp_path, "true")).train.weights.sum() == pytest.approx(48.0)   # signs need none


def test_balance_mode_names_emotions(tmp_path):
    from moodlens.core.errors import DataError
    from moodlens.train.mixture import _balance_mode

    assert _balance_mode({"balance": "emotions"}, tmp_path / "d.yaml", 0) == "emotions"
    with pytest.raises(DataError, match="known: true, false, three_way, emotions"):
        _balance_mode({"balance": "emotion"}, tmp_path / "d.yaml", 0)
