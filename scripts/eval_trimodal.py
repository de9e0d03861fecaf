"""Per-head test results of a checkpoint on the default trimodal data, the confusion by emotion, and
the fused-head behaviour check (docs/model_card.md quotes its output).

    python scripts/eval_trimodal.py --checkpoint default [--data configs/data/default_vision_cnn.yaml] [--split test]

The default data config is the shipped weights' (stages 5-7, runs/data_v4: `mediapipe_v3` faces, Whisper states on a
15 s input); stage 4 takes --data configs/data/default_voice.yaml, a checkpoint trained on runs/data_v2 (30 s)
configs/data/default_trimodal.yaml.

Fused-head check, on held-out samples only (the split's speakers, faces and MOSI clips):
- strong words: MOSI clips with |label| >= 1.5, each with a neutral face of the split (and once
  more with a random voice of the split as well); the fused sign should follow the words;
- neutral words: RAVDESS clips (lexically neutral statements) with their own voice and a face of the
  same valence sign; the fused sign should follow voice and face.
Neutral statements (`neutral_statements`): s_T on plain sentences never trained on (the held-out split of
configs/data/neutral_statements_v1.tsv matching --split, RAVDESS's two, CREMA-D's twelve): mean |s_T| and the share
within ±0.5 (scripts/probe_neutral_text.py).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import torch


def _annotations(pkl: Path, split: str) -> list[str]:
    with pkl.open("rb") as f:
        data = pickle.load(f)
    return list(data[split].get("annotations", []))


def main(argv=None) -> int:
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.head_metrics import balanced_acc_2, by_head, confusion_by_emotion
    from moodlens.train.metrics import json_safe
    from moodlens.train.mixture import MixedSplit
    from moodlens.train.trainer import predict

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--data", default="configs/data/default_vision_cnn.yaml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    loaded = load_checkpoint(args.checkpoint)
    model, mc = loaded.model, loaded.model.config
    data = load_dataset(args.data, DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                               audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
    split: MixedSplit = data.split(args.split)
    out: dict = {"checkpoint": str(loaded.path), "data": args.data, "split": split.name, "datasets": {}}
    for origin in sorted(set(split.origin)):
        part = split.subset(origin)
        preds = predict(model, part)
        out["datasets"][origin] = {"samples": len(part), "by_head": by_head(preds, part)}
        for entry in ("ravdess", "faces"):
            if origin == entry:
                path = next(Path(str(d["path"])) for d in _datasets(args.data) if d.get("name") == entry)
                notes = _annotations(path, split.name)
                head = "audio" if entry == "ravdess" else "vision"
                m = 1 if entry == "ravdess" else 2
                present = part.batch.present[:, m].numpy()
                out["datasets"][origin][f"confusion_{head}_head"] = confusion_by_emotion(
                    preds[head][present], [n for n, p in zip(notes, present) if p])

    # ---- fused-head behaviour ------------------------------------------------------------------
    rng = np.random.default_rng(args.seed)
    parts = {p.name: (i, p) for i, p in enumerate(split.parts)}
    mosi_i, mosi = parts["mosi"]
    rav_i, rav = parts["ravdess"]
    face_i, faces = parts["faces"]
    face_present = faces.split.batch.present[:, 2].numpy()
    face_label = faces.head[:, 3].numpy()
    neutral_faces = np.nonzero(face_present & (face_label == 0))[0]
    pos_faces = np.nonzero(face_present & (face_label > 0))[0]
    neg_faces = np.nonzero(face_present & (face_label < 0))[0]
    rav_rows = np.nonzero(rav.split.batch.present[:, 1].numpy() & np.isfinite(rav.head[:, 2].numpy()))[0]
    y_text = mosi.head[:, 1].numpy()
    strong = np.nonzero(np.abs(y_text) >= 1.5)[0]

    def score(refs: np.ndarray) -> np.ndarray:
        from moodlens.train.mixture import MixedSplit as MS

        n = len(refs)
        tmp = MS("check", split.parts, refs, torch.zeros(n, 4), ["check"] * n, np.ones(n),
                 split.batch.audio_dim, split.batch.vision_dim)
        return predict(model, tmp)["fused"]

    def refs_of(text, audio, vision):
        r = np.full((len(text), 3, 2), -1, np.int64)
        for m, src in enumerate((text, audio, vision)):
            if src is not None:
                r[:, m] = src
        return r

    checks = {}
    t = np.stack([np.full(len(strong), mosi_i), strong], 1)
    v = np.stack([np.full(len(strong), face_i), rng.choice(neutral_faces, len(strong))], 1)
    fused = score(refs_of(t, None, v))
    checks["strong_words+neutral_face"] = {"samples": len(strong), "sign_follows_words": float(
        np.mean(np.sign(fused) == np.sign(y_text[strong]))), "balanced_acc_2": balanced_acc_2(fused, y_text[strong])}
    a = np.stack([np.full(len(strong), rav_i), rng.choice(rav_rows, len(strong))], 1)
    fused = score(refs_of(t, a, v))
    checks["strong_words+random_voice+neutral_face"] = {"samples": len(strong), "sign_follows_words": float(
        np.mean(np.sign(fused) == np.sign(y_text[strong]))), "balanced_acc_2": balanced_acc_2(fused, y_text[strong])}
    y_voice = rav.head[rav_rows, 2].numpy()
    nonzero = rav_rows[y_voice != 0]
    yv = rav.head[nonzero, 2].numpy()
    same = np.array([rng.choice(pos_faces) if y > 0 else rng.choice(neg_faces) for y in yv])
    own = np.stack([np.full(len(nonzero), rav_i), nonzero], 1)
    fused = score(refs_of(own, own, np.stack([np.full(len(nonzero), face_i), same], 1)))
    checks["neutral_words+voice+same_sign_face"] = {"samples": len(nonzero), "sign_follows_voice_and_face": float(
        np.mean(np.sign(fused) == np.sign(yv))), "balanced_acc_2": balanced_acc_2(fused, yv)}
    fused = score(refs_of(own, own, None))
    checks["neutral_words+voice_only"] = {"samples": len(nonzero), "sign_follows_voice": float(
        np.mean(np.sign(fused) == np.sign(yv))), "balanced_acc_2": balanced_acc_2(fused, yv)}
    out["fused_checks"] = checks
    out["neutral_statements"] = _neutral_statements(model, args.split)
    print(json.dumps(json_safe(out), indent=2))
    return 0


def _neutral_statements(model, split: str) -> dict:
    """The words-only score s_T on plain statements (scripts/probe_neutral_text.py): the held-out split of
    configs/data/neutral_statements_v1.tsv that matches `split` (dev for valid), RAVDESS's two and CREMA-D's twelve."""
    import probe_neutral_text as probe   # a sibling script: scripts/ is on sys.path when a script runs

    sets = probe.sentence_sets()
    own = "neutral_v1 dev" if split == "valid" else "neutral_v1 test"
    out = {}
    for name in (own, "ravdess", "crema_d"):
        scores = probe.words_only_scores(model, sets[name])
        out[name] = {"samples": len(scores), "mean_abs": float(np.abs(scores).mean()),
                     "within_0.5": float(np.mean(np.abs(scores) < 0.5)), "scores": [float(x) for x in scores]
                     if len(scores) <= 2 else None}
    return out


def _datasets(path: str) -> list[dict]:
    from moodlens.core.options import read_yaml

    return [d if isinstance(d, dict) else {"path": d} for d in read_yaml(path)["datasets"]]


if __name__ == "__main__":
    raise SystemExit(main())
