"""Linear probes on pooled features: how much valence a featurized corpus carries (docs/model_card.md, "for
scale"). Valence = happy vs sad/angry/fearful/disgust(/contempt), balanced Acc-2 (mean recall of both).

    python scripts/probe_linear.py ravdess runs/data/ravdess.pkl     # Whisper states (or a librosa pickle)
    python scripts/probe_linear.py faces runs/data/faces.pkl

RAVDESS: train actors 01-18 -> test 19-22 at C = 0.01, 0.1, 1, and leave-4-actors-out folds over all 22
(a probe spread, not a model choice). Faces: the pickle's own person split (train+valid -> test), by source.
Utterance statistics: mean and std over real frames (faces: mean; a still has no motion). Needs
scikit-learn (not a project dependency: `python -m pip install scikit-learn`).
"""

from __future__ import annotations

import argparse
import pickle

import numpy as np

POSITIVE = {"happy"}
NEGATIVE = {"sad", "angry", "fearful", "disgust", "contempt"}


def pooled(split: dict, modality: str, std: bool) -> np.ndarray:
    x, m = split[modality].astype(np.float64), split[f"{modality}_mask"].astype(np.float64)[..., None]
    n = m.sum(1).clip(1)
    mean = (x * m).sum(1) / n
    if not std:
        return mean
    return np.concatenate([mean, np.sqrt((((x - mean[:, None]) ** 2) * m).sum(1) / n)], 1)


def rows(data: dict, splits, modality: str, std: bool):
    xs, emotions, ids = [], [], []
    for s in splits:
        xs.append(pooled(data[s], modality, std))
        emotions += [a.split("/")[0] for a in data[s]["annotations"]]
        ids += list(data[s]["id"])
    x, emotion = np.concatenate(xs), np.array(emotions)
    keep = np.isin(emotion, list(POSITIVE | NEGATIVE))
    return x[keep], np.isin(emotion[keep], list(POSITIVE)).astype(int), np.array(ids)[keep]


def probe(x, y, train, test, c: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))
    clf.fit(x[train], y[train])
    return float(balanced_accuracy_score(y[test], clf.predict(x[test])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=["ravdess", "faces"])
    parser.add_argument("pickle")
    args = parser.parse_args(argv)
    with open(args.pickle, "rb") as f:
        data = pickle.load(f)
    if args.corpus == "ravdess":
        x, y, ids = rows(data, ("train", "valid", "test"), "audio", std=True)
        actor = np.array([int(i.split("/")[0].split("_")[1]) for i in ids])
        train, test = actor <= 18, actor >= 19
        print(f"{len(y)} clips; train 01-18 -> test 19-22: "
              + ", ".join(f"C={c} {probe(x, y, train, test, c):.3f}" for c in (0.01, 0.1, 1.0)))
        folds = [list(range(s, min(s + 4, 23))) for s in range(1, 23, 4)]
        scores = [probe(x, y, ~np.isin(actor, f), np.isin(actor, f), 0.1) for f in folds]
        print(f"leave-4-actors-out (C=0.1): mean {np.mean(scores):.3f}, min {np.min(scores):.3f}")
        return 0
    x_train, y_train, _ = rows(data, ("train", "valid"), "vision", std=False)
    x_test, y_test, ids = rows(data, ("test",), "vision", std=False)
    x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    train = np.arange(len(y)) < len(y_train)
    source = np.array([""] * len(y_train) + [i.split("/")[0] for i in ids])
    for c in (0.01, 0.1, 1.0):
        line = f"C={c}: all {probe(x, y, train, ~train, c):.3f}"
        for s in ("ckplus48", "muxspace"):
            if (source == s).any():
                line += f", {s} {probe(x, y, train, source == s, c):.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
