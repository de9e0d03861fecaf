"""Input-side study of the face features (issue 10, vision head): how the frame given to MediaPipe's
face landmarker changes the 64-d features and what a probe makes of them, never on the test split.

    python scripts/probe_face_inputs.py featurize base  --out /tmp/faces/base.npz      # train + valid stills
    python scripts/probe_face_inputs.py featurize grey  --out /tmp/faces/grey.npz
    python scripts/probe_face_inputs.py probe /tmp/faces/base.npz /tmp/faces/grey.npz --repeats 3

`featurize VARIANT` runs every train + valid still of runs/data/faces/label.csv through the live
VisionFeaturizer exactly as `moodlens featurize` does (train/datasets.py `still_faces`: three tracked
frames of the held face, the window mean over them as the 30-frame window has it), after the
variant's frame preparation (VARIANTS below), and stores the mean features, the face-found flag, label,
group and emotion. `probe` scores each file with (a) a logistic probe (standardised features, balanced
classes) and (b) the shipped face head form (models/hcrl_mfd.py PooledHead: 3 MLP-64 members trained
jointly, dropout 0.2, 20 passes, + and - drawn equally often, mirror-averaged at inference), by
balanced Acc-2 on grouped CV (5 folds over the train + valid persons), train -> valid, and across
corpora (web faces -> CK+ and back, train + valid persons). Faces a variant does not find are
compared two ways: on the stills every file found (the same images for all, "common") and on all
labelled stills with a missed face scored 0 (wrong for both classes, "all").
One thread; featurizing the 3631 train + valid stills takes ~2 min a variant alone, ~4.5 min two at a
time, on the shared 2-vCPU VM (load 7-8 from other engineers); the shipped-head probe ~7 min a file.
`retag-audio-only` relabels a face-free feature file (RAVDESS) for another vision_features kind.

Results (issue 10, 2026-12-01; `base` reproduces runs/data/faces.pkl bit for bit on the train + valid
stills). Balanced Acc-2; shipped head mean ± sd over 3 seeds, logistic deterministic; "common" = the
stills every file in that run found (3452-3495 of 3631; the fold assignment follows it, so base moves
0.850-0.855 between runs: read differences within one run).

| variant | found | logistic CV common / valid / web->CK+ / CK+->web | shipped CV common / CV all / valid / web->CK+ / CK+->web |
|---|---|---|---|
| base (today) | 0.963 | 0.837-0.843 / 0.840 / 0.889-0.895 / 0.688 | 0.850-0.855 / 0.806 / 0.840-0.846 / 0.810 / 0.717 |
| pad 25 % border (frame mean colour) | 0.984 | 0.832 / 0.815 / 0.888 / 0.687 | - |
| upscale to 256 px short side | 0.961 | 0.839 / 0.825 / 0.888 / 0.691 | - |
| upscale 256 + pad 25 % | 0.982 | 0.825 / 0.803 / 0.869 / 0.692 | 0.845 / 0.824 / 0.822 / 0.803 / 0.713 |
| pad only where base finds no face | 0.983 | - | 0.855 / 0.825 / 0.846 / 0.810 / 0.717 |
| grey -> 3 channels | 0.961 | 0.844 / 0.842 / 0.891 / 0.686 | - |
| autocontrast (1 % cut) | 0.960 | 0.845 / 0.822 / 0.889 / 0.676 | - |
| grey + pad 25 % | 0.985 | 0.829 / 0.798 / 0.891 / 0.688 | - |
| base, framing dims zeroed | 0.963 | 0.835 / 0.803 / 0.894 / 0.694 | 0.842 / 0.795 / 0.795 / 0.826 / 0.718 |
| vision_features mediapipe_v2 | 0.963 | 0.851 / 0.819 / 0.921 / 0.700 | 0.845 / 0.802 / 0.812 / 0.849 / 0.714 |

The framing dims (x/y/z translation, face width over image width) on real video (the demo clip, the
two 1920x804 and the 640x360 clips of ../shared/data/clips) sit 8-31 training sds from the stills
(tz -18 to -31, width -8 to -10); the v2 slots sit within 0.1-1.8 sd there.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np

RAW = Path("../shared/data/faces")
LABELS = Path("runs/data/faces/label.csv")
TRACKED = 3     # train/datasets.py STILL_TRACKED_FRAMES
WINDOW = 30     # 2 s at 15 fps


def _pad(rgb: np.ndarray, fraction: float) -> np.ndarray:
    """A border of `fraction` of the longer side on every side, filled with the frame's mean colour."""
    h, w = rgb.shape[:2]
    p = int(round(fraction * max(h, w)))
    fill = rgb.reshape(-1, 3).mean(0).round().astype(np.uint8)
    out = np.empty((h + 2 * p, w + 2 * p, 3), np.uint8)
    out[:] = fill
    out[p:p + h, p:p + w] = rgb
    return out


def _upscale(rgb: np.ndarray, short: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    if min(h, w) >= short:
        return rgb
    s = short / min(h, w)
    return np.asarray(Image.fromarray(rgb).resize((round(w * s), round(h * s)), Image.BICUBIC))


def _grey(rgb: np.ndarray) -> np.ndarray:
    y = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().clip(0, 255)
    return np.repeat(y.astype(np.uint8)[..., None], 3, axis=2)


def _equalize(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image, ImageOps

    return np.asarray(ImageOps.autocontrast(Image.fromarray(rgb), cutoff=1))


# name -> frame preparation (applied before the landmarker; "base" is what featurize does today)
VARIANTS = {
    "base": lambda rgb: rgb,
    "pad25": lambda rgb: _pad(rgb, 0.25),
    "up256": lambda rgb: _upscale(rgb, 256),
    "up256pad25": lambda rgb: _pad(_upscale(rgb, 256), 0.25),
    "grey": _grey,
    "autocontrast": _equalize,
    "grey_pad25": lambda rgb: _pad(_grey(rgb), 0.25),
}


def rows(labels: Path = LABELS, splits=("train", "valid")):
    with labels.open() as f:
        for r in csv.DictReader(f):
            if r["mode"] in splits and r["label_V"] != "":
                yield r


def image_path(r) -> Path:
    found = list((RAW / r["video_id"]).glob(f"{r['clip_id']}.*"))
    if len(found) != 1:
        raise SystemExit(f"{r['video_id']}/{r['clip_id']}: {len(found)} files under {RAW}")
    return found[0]


def still_mean(vision, rgb: np.ndarray):
    """Window mean of the still as train/datasets.py builds it (frames 3..30 repeat frame 3)."""
    vision.reset()
    values = [vision.process_image(rgb, k / 15.0).values for k in range(TRACKED)]
    frames = values + [values[-1]] * (WINDOW - TRACKED)
    present = [v for v in frames if v is not None]
    return (np.mean(present, 0), True) if present else (np.zeros(64, np.float32), False)


def featurize(variant: str, out: Path, limit: int | None, every: int, kind: str = "mediapipe") -> None:
    from PIL import Image

    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    prepare = VARIANTS[variant]
    chosen = list(rows())[::every][:limit]
    x, found = np.zeros((len(chosen), 64), np.float32), np.zeros(len(chosen), bool)
    with VisionFeaturizer(FeaturizerConfig().for_vision_features(kind)) as vision:
        for i, r in enumerate(chosen):
            with Image.open(image_path(r)) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
            x[i], found[i] = still_mean(vision, prepare(rgb))
            if i % 500 == 0:
                print(f"{variant}: {i}/{len(chosen)}", flush=True)
    np.savez(out, x=x, found=found, y=np.array([float(r["label_V"]) for r in chosen]),
             group=np.array([r["group"] for r in chosen]), mode=np.array([r["mode"] for r in chosen]),
             emotion=np.array([r["annotation"].split("/")[0] for r in chosen]),
             id=np.array([f"{r['video_id']}/{r['clip_id']}" for r in chosen]))
    src = np.array([r["video_id"].split("/")[0] for r in chosen])
    print(f"{variant}: {found.mean():.4f} found ("
          + ", ".join(f"{s} {found[src == s].mean():.4f} of {(src == s).sum()}" for s in np.unique(src)) + f") -> {out}")


def _pooled():
    spec = importlib.util.spec_from_file_location("probe_pooled_heads", Path(__file__).with_name("probe_pooled_heads.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def logistic(x_train, y_train, x_test, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    k = y_train != 0
    scaler = StandardScaler().fit(x_train[k])
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit(scaler.transform(x_train[k]), np.sign(y_train[k]))
    return model.decision_function(scaler.transform(x_test))


def shipped(x_train, y_train, x_test, seed=0):
    return _pooled().fit_predict(x_train, y_train, x_test, "vision", 64, 0.2, 20, seed=seed, members=3, tta=True)


FRAMING = ("head_tx_dm", "head_ty_dm", "head_tz_dm", "face_width_over_image_width")   # where the face sits in the frame


def probe(files: list[Path], repeats: int, heads: list[str], drop: tuple[str, ...] = ()) -> None:
    import torch

    from moodlens.realtime.perception.features.config import VISION_FEATURE_NAMES

    torch.set_num_threads(1)
    pooled = _pooled()
    data = {f.stem: dict(np.load(f)) for f in files}
    ids = [d["id"] for d in data.values()]
    if any(len(i) != len(ids[0]) or (i != ids[0]).any() for i in ids):
        raise SystemExit("the files hold different stills (featurize them with the same --limit/--every)")
    common = np.logical_and.reduce([d["found"] for d in data.values()])
    print(f"{len(ids[0])} stills, found by every variant: {common.sum()}")
    fits = {"logistic": logistic, "shipped": shipped}
    for name, d in data.items():
        x, y, groups, mode = d["x"].copy(), d["y"], d["group"], d["mode"]
        x[:, [VISION_FEATURE_NAMES.index(n) for n in drop]] = 0.0     # a constant column: the head cannot use it
        corpus = np.array([g.split(":")[0] for g in groups])
        for head in heads:
            fit = fits[head]
            scores = {"CV common": [], "CV all": [], "valid": [], "mux->ck": [], "ck->mux": []}
            for r in range(repeats):
                for subset, key in ((common, "CV common"), (d["found"], "CV all")):
                    idx = np.nonzero(subset)[0]
                    pred = np.zeros(len(y))
                    for train, test in pooled.group_folds(groups[idx], 5):
                        pred[idx[test]] = fit(x[idx[train]], y[idx[train]], x[idx[test]], seed=100 * r)
                    keep = common if key == "CV common" else np.ones(len(y), bool)   # missed faces score 0
                    scores[key].append(pooled.balanced_acc_2(pred[keep], y[keep]))
                tr, va = common & (mode == "train"), common & (mode == "valid")
                scores["valid"].append(pooled.balanced_acc_2(fit(x[tr], y[tr], x[va], seed=100 * r), y[va]))
                for a, b in (("mux", "ck"), ("ck", "mux")):
                    tr, te = common & (corpus == a), common & (corpus == b)
                    scores[f"{a}->{b}"].append(pooled.balanced_acc_2(fit(x[tr], y[tr], x[te], seed=100 * r), y[te]))
                if head == "logistic":
                    break                                   # deterministic: one repeat is all
            print(f"{name + (' -framing' if drop else ''):22s} {head:8s} found {d['found'].mean():.3f}  " + "  ".join(
                f"{k} {np.mean(v):.3f}" + (f"±{np.std(v):.3f}" if len(v) > 1 else "") for k, v in scores.items()),
                flush=True)


def retag_audio_only(source: Path, out: Path, kind: str) -> None:
    """A copy of a feature file without any face (e.g. RAVDESS speech) whose featurizer config names the
    face feature kind `kind`, so train/mixture.py accepts it beside faces featurized with that kind.
    Honest only because no vision value was ever computed: refused when any sample has a face."""
    from moodlens.core.safeload import safe_pickle_load
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    data = safe_pickle_load(source)
    for split, part in data.items():
        if split != "meta" and np.asarray(part["present"])[:, 2].any():
            raise SystemExit(f"{source}: split {split} has faces; featurize it again with --vision-features {kind}")
    config = FeaturizerConfig.from_dict(data["meta"], source=f"featurizer config of {source}").for_vision_features(kind)
    data["meta"] = config.to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        import pickle

        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"{source} -> {out}: vision_features {kind} (no face in any sample)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("featurize")
    f.add_argument("variant", choices=sorted(VARIANTS))
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--kind", default="mediapipe", help="vision_features (features/config.py VISION_FEATURE_KINDS)")
    f.add_argument("--limit", type=int, default=None)
    f.add_argument("--every", type=int, default=1, help="every n-th still (a quicker subset)")
    p = sub.add_parser("probe")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--drop-framing", action="store_true", help=f"zero the framing features {', '.join(FRAMING)}")
    p.add_argument("--heads", nargs="+", default=["logistic", "shipped"], choices=["logistic", "shipped"])
    r = sub.add_parser("retag-audio-only", help="a face-free feature file relabelled for another vision_features kind")
    r.add_argument("source", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--kind", default="mediapipe_v2")
    args = parser.parse_args(argv)
    if args.what == "retag-audio-only":
        retag_audio_only(args.source, args.out, args.kind)
    elif args.what == "featurize":
        featurize(args.variant, args.out, args.limit, args.every, args.kind)
    else:
        probe(args.files, args.repeats, args.heads, FRAMING if args.drop_framing else ())
    return 0


if __name__ == "__main__":
    sys.exit(main())
