"""MMSA's regression metrics (`utils/metricsTop.py`), so our numbers compare with every paper.

Definitions as in MMSA:
- MOSI / MOSEI: Has0 uses `truth >= 0` vs `pred >= 0`; Non0 drops samples whose truth is exactly 0
  and uses `> 0`; F1 is sklearn's weighted F1 on those binary labels; Mult_acc_5 / _7 clip both
  sides to +-2 / +-3 and compare `np.round` (half to even); MAE on unclipped values; Corr is Pearson.
- SIMS: both sides clipped to +-1 first (MAE included), classes from MMSA's bin edges
  (2: -1.01/0/1.01, 3: -1.01/-0.1/0.1/1.01, 5: -1.01/-0.7/-0.1/0.1/0.7/1.01), so 0 counts as negative.

Values are unrounded fractions (MMSA rounds to 4 places only when printing). Reports multiply by
100 and show two decimals, as MMSA's result tables do, with mean +- std over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MOSI_METRICS = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7",
                "MAE", "Corr")
SIMS_METRICS = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")
LOWER_IS_BETTER = ("MAE",)


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _multiclass_acc(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sum(np.round(pred) == np.round(truth)) / float(len(truth)))


def _weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, pred, average="weighted"))


def _pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    if len(pred) < 2 or np.std(pred) == 0 or np.std(truth) == 0:
        return float("nan")  # undefined (MMSA's np.corrcoef gives nan with a warning)
    return float(np.corrcoef(pred, truth)[0][1])


def mosi_regression_metrics(pred, truth) -> dict[str, float]:
    """MMSA `__eval_mosei_regression` (used for MOSI and MOSEI)."""
    pred, truth = _as_array(pred), _as_array(truth)
    if len(pred) != len(truth) or len(truth) == 0:
        raise ValueError(f"metrics need equal, non-empty pred/truth, got {len(pred)} and {len(truth)}")
    non_zero = truth != 0
    if non_zero.any():
        nz_truth, nz_pred = truth[non_zero] > 0, pred[non_zero] > 0
        non0_acc = float(np.mean(nz_truth == nz_pred))
        non0_f1 = _weighted_f1(nz_truth, nz_pred)
    else:
        non0_acc = non0_f1 = float("nan")
    has0_truth, has0_pred = truth >= 0, pred >= 0
    return {
        "Has0_acc_2": float(np.mean(has0_truth == has0_pred)),
        "Has0_F1_score": _weighted_f1(has0_truth, has0_pred),
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": _multiclass_acc(np.clip(pred, -2.0, 2.0), np.clip(truth, -2.0, 2.0)),
        "Mult_acc_7": _multiclass_acc(np.clip(pred, -3.0, 3.0), np.clip(truth, -3.0, 3.0)),
        "MAE": float(np.mean(np.abs(pred - truth))),
        "Corr": _pearson(pred, truth),
    }


def _sims_classes(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Class i where edges[i] < x <= edges[i+1] (MMSA's loop over bins on clipped values)."""
    out = x.copy()
    for i in range(len(edges) - 1):
        out[np.logical_and(x > edges[i], x <= edges[i + 1])] = i
    return out


def sims_regression_metrics(pred, truth) -> dict[str, float]:
    """MMSA `__eval_sims_regression` (CH-SIMS and SIMS v2)."""
    pred, truth = np.clip(_as_array(pred), -1.0, 1.0), np.clip(_as_array(truth), -1.0, 1.0)
    if len(pred) != len(truth) or len(truth) == 0:
        raise ValueError(f"metrics need equal, non-empty pred/truth, got {len(pred)} and {len(truth)}")
    edges2, edges3, edges5 = (-1.01, 0.0, 1.01), (-1.01, -0.1, 0.1, 1.01), (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)
    p2, t2 = _sims_classes(pred, edges2), _sims_classes(truth, edges2)
    return {
        "Mult_acc_2": _multiclass_acc(p2, t2),
        "Mult_acc_3": _multiclass_acc(_sims_classes(pred, edges3), _sims_classes(truth, edges3)),
        "Mult_acc_5": _multiclass_acc(_sims_classes(pred, edges5), _sims_classes(truth, edges5)),
        "F1_score": _weighted_f1(t2, p2),
        "MAE": float(np.mean(np.abs(pred - truth))),
        "Corr": _pearson(pred, truth),
    }


def mmsa_regression_metrics(pred, truth, dataset: str = "mosi") -> dict[str, float]:
    """MMSA's metrics for `dataset` in {"mosi", "mosei", "sims", "simsv2"}; unrounded fractions."""
    name = dataset.lower()
    if name in ("mosi", "mosei", "text"):
        return mosi_regression_metrics(pred, truth)
    if name in ("sims", "simsv2", "sims2"):
        return sims_regression_metrics(pred, truth)
    raise ValueError(f"unknown metric variant '{dataset}' (use mosi, mosei, sims or simsv2)")


def metric_names(dataset: str = "mosi") -> tuple[str, ...]:
    return SIMS_METRICS if dataset.lower().startswith("sims") else MOSI_METRICS


def mean_std(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: mean and (population, as MMSA's np.std) std over seeds."""
    out = {}
    for key in runs[0]:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return out


def format_value(x: float) -> str:
    """x100 with two decimals, as MMSA's result tables."""
    return "nan" if x is None or math.isnan(x) else f"{x * 100:.2f}"


def format_mean_std(mean: float, std: float) -> str:
    return f"{format_value(mean)} ± {format_value(std)}"


def json_safe(value):
    """NaN -> None recursively, so metrics.json stays valid JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
