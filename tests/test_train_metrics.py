"""MMSA metrics against hand-computed cases (MOSI/MOSEI and SIMS variants)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moodlens.train.metrics import format_mean_std, format_value, json_safe, mean_std, mmsa_regression_metrics

TRUTH = [1.0, -1.0, 0.0, 2.5, -0.5, 2.8]
PRED = [0.5, -2.0, 0.3, 1.5, 0.0, 2.2]


def test_mosi_metrics_hand_computed():
    m = mmsa_regression_metrics(PRED, TRUTH, "mosi")
    # Has0: truth>=0 [T,F,T,T,F,T] vs pred>=0 [T,F,T,T,T,T] (pred 0.0 counts as >= 0)
    assert m["Has0_acc_2"] == pytest.approx(5 / 6)
    # weighted F1: F1(T) = 8/9 (support 4), F1(F) = 2/3 (support 2)
    assert m["Has0_F1_score"] == pytest.approx((4 * 8 / 9 + 2 * 2 / 3) / 6)
    # Non0 drops the exact-zero truth; pred 0.0 is not > 0, truth -0.5 is not > 0 either
    assert m["Non0_acc_2"] == pytest.approx(1.0)
    assert m["Non0_F1_score"] == pytest.approx(1.0)
    # rounding half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0
    # a7: [0,-2,0,2,0,2] vs [1,-1,0,2,-0,3] -> 3 of 6
    assert m["Mult_acc_7"] == pytest.approx(3 / 6)
    # a5 clips 2.8 -> 2 and 2.2 -> 2: [0,-2,0,2,0,2] vs [1,-1,0,2,-0,2] -> 4 of 6
    assert m["Mult_acc_5"] == pytest.approx(4 / 6)
    assert m["MAE"] == pytest.approx((0.5 + 1.0 + 0.3 + 1.0 + 0.5 + 0.6) / 6)
    p, t = np.array(PRED), np.array(TRUTH)
    pearson = ((p - p.mean()) * (t - t.mean())).sum() / math.sqrt(((p - p.mean()) ** 2).sum() * ((t - t.mean()) ** 2).sum())
    assert m["Corr"] == pytest.approx(pearson)


def test_round_half_to_even_not_half_up():
    # Python-style half-up would give 1 and 3 for the first two truths and fail the match.
    m = mmsa_regression_metrics([0.4, 2.0, -2.4], [0.5, 2.5, -1.5], "mosi")
    assert m["Mult_acc_7"] == 1.0
    assert m["Mult_acc_5"] == 1.0


def test_mae_is_unclipped_and_tensors_accepted():
    m = mmsa_regression_metrics(torch.tensor([5.0, -1.0]), torch.tensor([1.0, -1.0]), "mosei")
    assert m["MAE"] == pytest.approx(2.0)  # |5 - 1| / 2, not |3 - 1| / 2
    assert m["Mult_acc_7"] == pytest.approx(0.5)


def test_all_zero_truth_has_no_non0_metrics():
    m = mmsa_regression_metrics([0.2, -0.3, 0.0], [0.0, 0.0, 0.0])
    assert math.isnan(m["Non0_acc_2"]) and math.isnan(m["Non0_F1_score"])
    assert m["Has0_acc_2"] == pytest.approx(2 / 3)
    assert math.isnan(m["Corr"])  # constant truth
    assert json_safe(m)["Corr"] is None


def test_sims_metrics_hand_computed():
    truth = [-1.0, 0.0, 0.05, 0.5, 0.8, -0.3]
    pred = [-0.5, 0.0, -0.2, 1.5, 0.6, -0.05]
    m = mmsa_regression_metrics(pred, truth, "sims")
    assert set(m) == {"Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"}
    # 2 classes: 0 counts as negative: truth [0,0,1,1,1,0], pred [0,0,0,1,1,0]
    assert m["Mult_acc_2"] == pytest.approx(5 / 6)
    # 3 classes (-0.1 / 0.1 edges): truth [0,1,1,2,2,0], pred [0,1,0,2,2,1]
    assert m["Mult_acc_3"] == pytest.approx(4 / 6)
    # 5 classes (-0.7/-0.1/0.1/0.7): truth [0,2,2,3,4,1], pred [1,2,1,4,3,2]
    assert m["Mult_acc_5"] == pytest.approx(1 / 6)
    # SIMS clips predictions to [-1, 1] before MAE: 1.5 -> 1.0
    assert m["MAE"] == pytest.approx((0.5 + 0 + 0.25 + 0.5 + 0.2 + 0.25) / 6)


def test_report_formatting_and_seed_statistics():
    assert format_value(0.84449) == "84.45"
    assert format_value(0.7125) == "71.25"
    stats = mean_std([{"MAE": 0.70}, {"MAE": 0.80}])
    assert stats["MAE"]["mean"] == pytest.approx(0.75)
    assert stats["MAE"]["std"] == pytest.approx(0.05)  # population std, as MMSA's np.std
    assert format_mean_std(0.75, 0.05) == "75.00 ± 5.00"


def test_unknown_variant_and_length_mismatch():
    with pytest.raises(ValueError):
        mmsa_regression_metrics([0.1], [0.2], "iemocap")
    with pytest.raises(ValueError):
        mmsa_regression_metrics([0.1, 0.2], [0.2], "mosi")
