"""Choose the default weights' pooled-statistics heads (models/hcrl_mfd.py, product additions) without
touching the test split: grouped cross-validation inside the train + valid actors / face persons, and the
valid split for blending with the paper's own heads. docs/model_card.md quotes its output.

    python scripts/probe_pooled_heads.py cv audio          # 6 folds over actors 01-18
    python scripts/probe_pooled_heads.py cv vision         # 5 folds over the train+valid face persons
    python scripts/probe_pooled_heads.py valid --checkpoint runs/default_stage2/best.pt
    python scripts/probe_pooled_heads.py face [--only TAG ...] [--repeats 4]   # mirror, ensembles, regularisers

`cv` trains the shipped PooledHead (standardised utterance mean[/std] -> linear or MLP, MSE, + and -
labels drawn equally often) on each fold's training groups and reports balanced Acc-2 (mean recall of
+ and - over non-zero labels) of the out-of-fold predictions; neutral clips are label 0 and left out of
Acc-2, their mean score is shown. `valid` trains on the train split, scores the valid split, and
compares the pooled head, 3 members in one head (as shipped: one data order), 3 heads trained with
different seeds and data orders (how the choice was first probed), the checkpoint's MLP_m and blends.
Reads the feature files of configs/data/default_trimodal.yaml (runs/data/{ravdess,faces}.pkl) and their
label.csv (groups). One thread, ~1-3 min per setting on the shared 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import csv
import pickle
from pathlib import Path

import numpy as np
import torch

SOURCES = {"audio": ("ravdess", "A", 384), "vision": ("faces", "V", 64)}
# (hidden, dropout, passes) tried per modality; hidden 0 = linear
GRID = {"audio": [(0, 0.2, 10), (0, 0.2, 30), (0, 0.5, 10), (64, 0.5, 10), (64, 0.5, 20)],
        "vision": [(0, 0.2, 10), (64, 0.2, 10), (64, 0.2, 30), (128, 0.2, 30), (64, 0.5, 30)]}


def load(modality: str, splits=("train", "valid"), data: Path = Path("runs/data")):
    """Per clip: pooled statistics (mean[, std] over real frames), label, group, emotion."""
    name, column, _ = SOURCES[modality]
    with (data / name / "label.csv").open() as f:
        groups = {f"{r['video_id']}/{r['clip_id']}": r["group"] for r in csv.DictReader(f)}
    with (data / f"{name}.pkl").open("rb") as f:
        raw = pickle.load(f)
    out = {"x": [], "y": [], "group": [], "emotion": []}
    for split in splits:
        s = raw[split]
        x, mask = torch.tensor(s[modality], dtype=torch.float32), torch.tensor(s[f"{modality}_mask"])
        y = np.asarray(s[f"regression_labels_{column}"], np.float64)
        keep = np.isfinite(y) & np.asarray(s["present"])[:, 1 if modality == "audio" else 2].astype(bool)
        from moodlens.models.hcrl_mfd import PooledHead

        stats = PooledHead(x.shape[-1], modality == "audio", 0, 0.0).statistics(x, mask).numpy()
        out["x"].append(stats[keep])
        out["y"].append(y[keep])
        out["group"] += [groups[i] for i, k in zip(s["id"], keep) if k]
        out["emotion"] += [a.split("/")[0] for a, k in zip(s["annotations"], keep) if k]
    return np.concatenate(out["x"]), np.concatenate(out["y"]), np.array(out["group"]), np.array(out["emotion"])


def balanced_acc_2(pred, y) -> float:
    k = y != 0
    pred, y = pred[k], y[k]
    return float(0.5 * ((pred[y > 0] > 0).mean() + (pred[y < 0] < 0).mean()))


def draw_weights(y):
    """+ and - drawn equally often, zeros keep their share (train/mixture.py `balance: true`)."""
    s, w = np.sign(y), np.ones(len(y))
    for c in (-1, 1):
        w[s == c] = (s != 0).sum() / (2 * (s == c).sum())
    return w / w.sum()


def fit_predict(x_train, y_train, x_test, modality, hidden, dropout, passes, seed=0, members=1, *,
                mirror=False, independent=False, weight_decay=0.0, tta=False, noise=0.0):
    """As stage 3 trains a pooled head: `mirror` adds each face's mirror image to its batch
    (`pooled_mirror_training`), `independent` fits each member on its own (`pooled_independent`), `weight_decay`
    is `pooled_l2`, `tta` also scores each test face mirrored and averages the two, `noise` adds Gaussian
    noise of that many feature standard deviations to each training batch."""
    from moodlens.models.hcrl_mfd import PooledHead, mirror_face

    torch.manual_seed(seed)
    dim = SOURCES[modality][2]
    head = PooledHead(dim, modality == "audio", hidden, dropout, members)
    head.statistics = lambda x, mask: x[:, 0]          # the inputs are the statistics already
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x_train, dtype=torch.float32)[:, None], torch.tensor(y_train, dtype=torch.float32)
    rng, n, p = np.random.default_rng(seed), len(y_train), draw_weights(y_train)
    scale, g = xt.std(0), torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(passes):
        rows = rng.choice(n, n, p=p)
        for s in range(0, n - 1, 32):
            b = rows[s:s + 32]
            xb, yb = xt[b], yt[b]
            if mirror:
                xb, yb = torch.cat([xb, mirror_face(xb)]), torch.cat([yb, yb])
            if noise:
                xb = xb + noise * scale * torch.randn(xb.shape, generator=g)
            out = head.member_outputs(xb, torch.ones(len(xb), 1, dtype=torch.bool),
                                      torch.ones(len(xb), dtype=torch.bool))
            out = out if independent else out.mean(0, keepdim=True)
            loss = (out - yb).pow(2).mean()
            if weight_decay:
                loss = loss + weight_decay * sum(p.pow(2).sum() for name, p in head.named_parameters()
                                                 if name.endswith("weight"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    with torch.no_grad():
        n_test, xs = len(x_test), torch.tensor(x_test, dtype=torch.float32)[:, None]
        views = [xs, mirror_face(xs)] if tta else [xs]
        return np.mean([head(v, torch.ones(n_test, 1, dtype=torch.bool), torch.ones(n_test, dtype=torch.bool)).numpy()
                        for v in views], 0)


def group_folds(groups, k):
    """k folds of whole groups (actors / persons), balanced by size, deterministic."""
    names, counts = np.unique(groups, return_counts=True)
    load_, fold_of = np.zeros(k), {}
    for i in np.argsort(-counts, kind="stable"):
        f = int(np.argmin(load_))
        fold_of[names[i]] = f
        load_[f] += counts[i]
    fold = np.array([fold_of[g] for g in groups])
    return [(np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]) for f in range(k)]


def report(tag, pred, y, emotion):
    neutral = emotion == "neutral"
    line = f"{tag:34s} balanced Acc-2 {balanced_acc_2(pred, y):.3f}  MAE {np.abs(pred - y).mean():.3f}"
    if neutral.any():
        line += f"  neutral mean {pred[neutral].mean():+.2f}"
    print(line, flush=True)


# The second face round (issue 10): (tag, settings) on top of MLP-64, dropout 0.2, 20 passes.
FACE = [("one head", {}), ("one head + mirror", {"mirror": True}),
        ("3 members, joint (as shipped)", {"members": 3}),
        ("3 members, independent", {"members": 3, "independent": True}),
        ("3 members, independent + mirror", {"members": 3, "independent": True, "mirror": True}),
        ("3 seeds", {"seeds": 3}), ("3 seeds + mirror", {"seeds": 3, "mirror": True}),
        ("one head + mirror, l2 1e-4", {"mirror": True, "weight_decay": 1e-4}),
        ("one head + mirror, dropout 0.5", {"mirror": True, "dropout": 0.5}),
        ("3 members, joint + mirror", {"members": 3, "mirror": True}),
        ("one head + mirror, mirrored at test too", {"mirror": True, "tta": True}),
        ("3 members, joint + mirror, mirrored at test too", {"members": 3, "mirror": True, "tta": True}),
        ("3 members, joint, l2 1e-3", {"members": 3, "weight_decay": 1e-3}),
        ("3 members, joint, input noise 0.3 sd", {"members": 3, "noise": 0.3}),
        ("3 members, joint, 10 passes", {"members": 3, "passes": 10}),
        ("3 members, joint, 40 passes", {"members": 3, "passes": 40})]


def face_study(only=None, repeats=1) -> None:
    """`face`: each FACE setting on grouped CV (5 folds over train+valid persons), train -> valid, and
    across corpora (web faces -> CK+ and back, train+valid persons);
    `repeats` > 1 reruns each with other seeds (init, dropout, data order) and gives mean and spread."""
    x, y, groups, emotion = load("vision")
    folds = group_folds(groups, 5)
    x_train, y_train, _, _ = load("vision", ("train",))
    x_valid, y_valid, _, emotion_valid = load("vision", ("valid",))
    corpus = np.array([g.split(":")[0] for g in groups])     # mux (web faces) / ck (CK+), train+valid persons
    for tag, setting in FACE:
        if only and tag not in only:
            continue
        setting = dict(setting)
        seeds, dropout, passes = setting.pop("seeds", 1), setting.pop("dropout", 0.2), setting.pop("passes", 20)

        cv, valid, cross = [], [], {"mux->ck": [], "ck->mux": []}
        for r in range(repeats):
            def fit(a, b, c):
                return np.mean([fit_predict(a, b, c, "vision", 64, dropout, passes, seed=100 * r + s, **setting)
                                for s in range(seeds)], 0)

            pred = np.zeros(len(y))
            for train, test in folds:
                pred[test] = fit(x[train], y[train], x[test])
            cv.append(balanced_acc_2(pred, y))
            valid.append(balanced_acc_2(fit(x_train, y_train, x_valid), y_valid))
            for a, b in (("mux", "ck"), ("ck", "mux")):   # another corpus: train on one, score the other
                tr, te = corpus == a, corpus == b
                cross[f"{a}->{b}"].append(balanced_acc_2(fit(x[tr], y[tr], x[te]), y[te]))
            if repeats == 1:
                report(f"CV    {tag}", pred, y, emotion)
                report(f"valid {tag}", fit(x_train, y_train, x_valid), y_valid, emotion_valid)
        if repeats > 1:
            print(f"{tag:48s} CV {np.mean(cv):.3f} ± {np.std(cv):.3f}   valid {np.mean(valid):.3f} ± "
                  f"{np.std(valid):.3f}   " + "   ".join(f"{k} {np.mean(v):.3f}" for k, v in cross.items())
                  + f"   ({repeats} seeds: CV {' '.join(f'{v:.3f}' for v in cv)})", flush=True)
        else:
            print(f"{'':6s}{tag:28s} another corpus: "
                  + "   ".join(f"{k} {np.mean(v):.3f}" for k, v in cross.items()), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["cv", "valid", "face"])
    parser.add_argument("modality", nargs="?", choices=["audio", "vision"])
    parser.add_argument("--checkpoint", default="runs/default_stage2/best.pt")
    parser.add_argument("--only", nargs="*", help="face: only these FACE settings (tags)")
    parser.add_argument("--repeats", type=int, default=1, help="face: seeds per setting (mean ± sd)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "face":
        face_study(args.only, args.repeats)
        return 0
    if args.what == "cv":
        x, y, groups, emotion = load(args.modality)
        folds = group_folds(groups, 6 if args.modality == "audio" else 5)
        print(f"{args.modality}: {len(y)} clips, {len(set(groups))} groups, {len(folds)} folds")
        for hidden, dropout, passes in GRID[args.modality]:
            pred = np.zeros(len(y))
            for train, test in folds:
                pred[test] = fit_predict(x[train], y[train], x[test], args.modality, hidden, dropout, passes)
            report(f"hidden {hidden} dropout {dropout} passes {passes}", pred, y, emotion)
        return 0
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.trainer import predict

    model = load_checkpoint(args.checkpoint).model
    mc = model.config
    setting = {"audio": (0, 0.2, 10), "vision": (64, 0.2, 20)}
    for modality in ("audio", "vision"):
        name = SOURCES[modality][0]
        x_train, y_train, _, _ = load(modality, ("train",))
        x_valid, y_valid, _, emotion = load(modality, ("valid",))
        data = load_dataset(f"runs/data/{name}.pkl", DataOptions(text_encoder=mc.text_encoder,
                            text_max_len=mc.text_max_len, audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
        valid = data.split("valid")
        column = 1 if modality == "audio" else 2
        known = valid.batch.present[:, column].numpy() & np.isfinite(valid.head_labels()[:, column + 1].numpy())
        paper = predict(model, valid)[modality][known]
        hidden, dropout, passes = setting[modality]
        one = fit_predict(x_train, y_train, x_valid, modality, hidden, dropout, passes)
        three = fit_predict(x_train, y_train, x_valid, modality, hidden, dropout, passes, members=3)
        seeds = np.mean([fit_predict(x_train, y_train, x_valid, modality, hidden, dropout, passes, seed=s)
                         for s in range(3)], 0)
        for tag, pred in ((f"{modality} checkpoint MLP_m", paper), (f"{modality} pooled", one),
                          (f"{modality} pooled, 3 members", three), (f"{modality} pooled, 3 seeds", seeds),
                          (f"{modality} half pooled + half MLP_m", 0.5 * (one + paper)),
                          (f"{modality} half 3 members + half MLP_m", 0.5 * (three + paper))):
            report(tag, pred, y_valid, emotion)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
