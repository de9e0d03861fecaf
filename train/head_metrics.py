"""Per-head evaluation: each head scored on the samples whose label for that head is known.

`by_head(preds, split)` -> {"text": {...}, "audio": {...}, "vision": {...}, "fused": {...}}: the
usual MMSA metrics (train/metrics.py) plus `balanced_acc_2` and `samples`. A unimodal head counts
a sample only where its modality is present (an absent modality's head output means nothing);
the fused head counts every sample with a known fused label.

`balanced_acc_2`: the mean of the recalls of the positive and the negative class over samples
with a non-zero label (MMSA's Non0 convention for which samples count). Acted-emotion corpora are
lopsided (RAVDESS: happy vs sad/angry/fearful/disgust is 1 : 4, so always answering "negative"
scores 0.80 plain accuracy but 0.50 balanced); a class the split lacks leaves it undefined (NaN).
"""

from __future__ import annotations

import numpy as np

from moodlens.models.losses import LABEL_HEADS

HEAD_MODALITY = {"text": 0, "audio": 1, "vision": 2}


def balanced_acc_2(pred, truth) -> float:
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    keep = truth != 0
    pred, truth = pred[keep], truth[keep]
    pos, neg = truth > 0, truth < 0
    if not pos.any() or not neg.any():
        return float("nan")
    return float(0.5 * ((pred[pos] > 0).mean() + (pred[neg] < 0).mean()))


def head_labels(split) -> np.ndarray:
    """(N, 4) labels in LABEL_HEADS order for any split (a (N,) split gives its label to every head)."""
    if hasattr(split, "head_labels"):
        return split.head_labels().numpy()
    labels = split.labels.numpy()
    return np.repeat(labels[:, None], len(LABEL_HEADS), 1)


def by_head(preds: dict, split, metric_dataset: str = "mosi") -> dict[str, dict]:
    from moodlens.train.metrics import mmsa_regression_metrics

    labels = head_labels(split)
    present = split.batch.present.numpy().astype(bool)
    out = {}
    for column, head in enumerate(LABEL_HEADS):
        truth = labels[:, column]
        known = np.isfinite(truth)
        if head in HEAD_MODALITY:
            known &= present[:, HEAD_MODALITY[head]]
        n = int(known.sum())
        if n == 0:
            out[head] = {"samples": 0}
            continue
        pred = np.asarray(preds[head])[known]
        metrics = mmsa_regression_metrics(pred, truth[known], metric_dataset) if n >= 2 else {}
        out[head] = {"samples": n, **metrics, "balanced_acc_2": balanced_acc_2(pred, truth[known])}
    return out


def confusion_by_emotion(pred, annotations: list[str]) -> dict[str, dict[str, int]]:
    """{emotion: {"positive": n, "negative": n, "zero": n}} of the predicted sign, for model cards."""
    table: dict[str, dict[str, int]] = {}
    for p, note in zip(np.asarray(pred, np.float64), annotations):
        emotion = (note or "?").split("/")[0]
        row = table.setdefault(emotion, {"positive": 0, "negative": 0, "zero": 0})
        row["positive" if p > 0 else ("negative" if p < 0 else "zero")] += 1
    return table
