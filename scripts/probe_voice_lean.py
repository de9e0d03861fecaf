"""The voice head's negative lean (issue 10): measure it and choose a fix without touching the test actors.

    python scripts/probe_voice_lean.py checkpoint CKPT [CKPT ...]   # where a checkpoint's lean comes from
    python scripts/probe_voice_lean.py cv [--repeats 3]             # pooled-head candidates, grouped CV
    python scripts/probe_voice_lean.py offset CKPT [--out CKPT2]    # neutral offset of a checkpoint's voice
    python scripts/probe_voice_lean.py frozen CKPT --against STAGE3 # which weights stage 4 changed (bit level)
    python scripts/probe_voice_lean.py makefolds OUT                # OUT/{0,1,2}: fold data + configs for `folds`
    python scripts/probe_voice_lean.py folds DIR [DIR ...]          # stage 4 itself, grouped CV over actors 01-18

Neutral RAVDESS voices have label 0 and are left out of balanced Acc-2, so a head can meet its Acc-2
target and still call every neutral voice negative. Every mode reports, besides balanced Acc-2, the mean
score of the neutral clips and the share of them scored negative, and (report only, never used to
choose) the out-of-corpus windows: the 5 espeak-ng sentences of `moodlens demo` and the 3 real clips of
../shared/data/clips, recorded once with `moodlens demo|run FILE --headless --record DIR --record-video
faces` and featurized again from the recordings (train/sessions.py; `--ooc-sessions`, `--ooc-labels`:
a labels CSV of `moodlens export` rows with label 0 and split test; cached in `--ooc-cache`). Record them with
`--checkpoint` of the features being probed: a session is featurized again with the featurizer config it was
recorded with, so windows recorded under a 30 s checkpoint give 30 s Whisper states (data_v2), under the shipped
one 15 s states (data_v3).

`checkpoint`: RAVDESS train (actors 01-16, in-sample) and valid (17-18) per emotion, for the voice output
as shipped (pooled_share_audio of the checkpoint), the pooled head alone and the paper's MLP_A alone.
`cv`: the shipped pooled head (standardised mean+std of the Whisper states -> linear, 3 members, dropout
0.2, 10 passes) trained per fold of 6 grouped folds over actors 01-18 with each candidate fix; the OOC
columns come from the head trained on all of 01-18. `offset`: the mean voice output of a checkpoint over
the train actors' neutral clips, the number `audio_offset` stores (models/hcrl_mfd.py); `--value X` stores X
instead (the cross-fitted offset of `folds`), and `--share S` stores pooled_share_audio S. `folds`: the whole stage-4 recipe
trained once per fold of 3 grouped folds over actors 01-18 (each DIR holds ravdess.pkl with train = the other
12 actors, valid = test = its 6, and run/seed_1111/last.pt after 12 epochs, no early stop: nothing is chosen on
the held-out actors); reports the out-of-fold voice output and the cross-fitted neutral offset: the mean
out-of-fold score of the neutral clips, which in-sample is ~0 because the heads fit the train actors' neutrals.
The test actors 19-22 are never read here.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import torch

RAVDESS = Path("runs/data_v3/ravdess.pkl")   # the shipped features (15 s Whisper input); --data for data_v2 (30 s)
EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
OOC_NAMES = ["demo:love", "demo:terrible", "demo:meeting", "demo:fantastic", "demo:awful",
             "zh_0001", "zh_0008", "zh_raw_video"]


def balanced_acc_2(pred, y) -> float:
    k = y != 0
    pred, y = pred[k], y[k]
    return float(0.5 * ((pred[y > 0] > 0).mean() + (pred[y < 0] < 0).mean()))


def lean(pred, y) -> str:
    """balanced Acc-2, neutral mean, share of neutral clips scored negative."""
    n = y == 0
    return f"bal {balanced_acc_2(pred, y):.3f}  neutral mean {pred[n].mean():+.2f}  neg {np.mean(pred[n] < 0):.2f}"


def ooc_split(args):
    cache = Path(args.ooc_cache)
    if cache.exists():
        with cache.open("rb") as f:
            return pickle.load(f)
    from moodlens.train.data import DataOptions, load_dataset

    split = load_dataset([args.ooc_sessions], DataOptions(labels=args.ooc_labels)).split("test")
    with cache.open("wb") as f:
        pickle.dump(split, f)
    return split


def ravdess(splits=("train", "valid"), path: Path = RAVDESS):
    """Per clip of the given splits: audio (N, L, 384), mask, label_A, emotion, actor."""
    with path.open("rb") as f:
        raw = pickle.load(f)
    out = {k: [] for k in ("x", "mask", "y", "emotion", "actor")}
    for split in splits:
        s = raw[split]
        out["x"].append(torch.tensor(s["audio"], dtype=torch.float32))
        out["mask"].append(torch.tensor(s["audio_mask"]))
        out["y"].append(np.asarray(s["regression_labels_A"], np.float64))
        out["emotion"] += [a.split("/")[0] for a in s["annotations"]]
        out["actor"] += [i.split("/")[0] for i in s["id"]]
    width = max(x.shape[1] for x in out["x"])
    pad = lambda t, v: torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1]) if t.dim() == 3 else (0, width - t.shape[1]), value=v)
    return (torch.cat([pad(x, 0.0) for x in out["x"]]), torch.cat([pad(m, False) for m in out["mask"]]),
            np.concatenate(out["y"]), np.array(out["emotion"]), np.array(out["actor"]))


# ---- checkpoint --------------------------------------------------------------------------------

def cmd_checkpoint(args):
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.trainer import predict

    ooc = ooc_split(args)
    for ckpt in args.checkpoints:
        model = load_checkpoint(ckpt).model
        mc = model.config
        data = load_dataset(str(args.data), DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                                        audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
        with args.data.open("rb") as f:
            raw = pickle.load(f)
        shipped = mc.pooled_share_audio
        print(f"== {ckpt} (pooled_share_audio {shipped}, audio_offset "
              f"{float(getattr(model, 'audio_offset', torch.zeros(1))):+.3f})")
        for tag, share in (("as shipped", shipped), ("pooled head alone", 1.0), ("MLP_A alone", 0.0)):
            mc.pooled_share_audio = share
            line = f"  {tag:18s}"
            for split in ("train", "valid"):
                s = data.split(split)
                pred = predict(model, s)["audio"]
                y = np.asarray(raw[split]["regression_labels_A"], np.float64)
                em = np.array([a.split("/")[0] for a in raw[split]["annotations"]])
                means = " ".join(f"{e[:3]} {pred[em == e].mean():+.2f}" for e in EMOTIONS)
                line += f"\n    {split:5s} {lean(pred, y)} | {means}"
            o = predict(model, ooc)["audio"]
            line += f"\n    OOC   {np.mean(o < 0) * len(o):.0f}/{len(o)} negative: " + " ".join(f"{v:+.2f}" for v in o)
            if share == shipped:   # what recentring on the train actors' neutral clips would do
                tr = np.array([a.split("/")[0] for a in raw["train"]["annotations"]]) == "neutral"
                off = float(predict(model, data.split("train"))["audio"][tr].mean())
                pv = predict(model, data.split("valid"))["audio"] - off
                yv = np.asarray(raw["valid"]["regression_labels_A"], np.float64)
                line += (f"\n    recentred (offset {off:+.2f}): valid {lean(np.clip(pv, -3, 3), yv)} | OOC "
                         + " ".join(f"{v:+.2f}" for v in np.clip(o - off, -3, 3)))
            print(line, flush=True)
        mc.pooled_share_audio = shipped


def cmd_offset(args):
    """The mean voice output over the train actors' neutral clips (eval mode, offset 0); with --out, a copy
    of the checkpoint whose `audio_offset` buffer holds it (the model must have `recentre_audio: true`)."""
    from moodlens.models.checkpoint import load_checkpoint, read_checkpoint
    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.trainer import predict

    model = load_checkpoint(args.checkpoints[0]).model
    mc = model.config
    if args.share is not None:
        mc.pooled_share_audio = args.share
    if hasattr(model, "audio_offset"):
        model.audio_offset.zero_()
    data = load_dataset(str(args.data), DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                                    audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
    with args.data.open("rb") as f:
        raw = pickle.load(f)
    em = np.array([a.split("/")[0] for a in raw["train"]["annotations"]])
    pred = predict(model, data.split("train"))["audio"]
    offset = float(pred[em == "neutral"].mean())
    print(f"train neutral mean {offset:+.4f} over {(em == 'neutral').sum()} clips (in-sample)")
    if args.value is not None:
        offset = args.value
        print(f"storing the given offset {offset:+.4f}")
    if args.out:
        payload, _ = read_checkpoint(args.checkpoints[0])
        if "audio_offset" not in payload["state_dict"]:
            raise SystemExit(f"{args.checkpoints[0]} has no audio_offset: train it with recentre_audio: true.")
        old = payload["state_dict"]["audio_offset"]
        payload["state_dict"]["audio_offset"] = torch.full_like(old, offset)
        payload.setdefault("metrics", {})["audio_offset"] = offset
        if args.share is not None:   # an inference-time blend weight (training and epoch choice used the recipe's)
            payload["model_config"]["pooled_share_audio"] = args.share
        torch.save(payload, args.out)
        print(f"wrote {args.out} with audio_offset {float(payload['state_dict']['audio_offset']):+.4f}")


def cmd_frozen(args):
    """Per top-level module (two name levels): identical to `--against` bit for bit, changed, or new."""
    from moodlens.models.checkpoint import read_checkpoint

    new, _ = read_checkpoint(args.checkpoints[0])
    old, _ = read_checkpoint(args.against)
    groups: dict[str, set] = {}
    for key, value in new["state_dict"].items():
        group = ".".join(key.split(".")[:2])
        ref = old["state_dict"].get(key)
        state = "new" if ref is None else ("same" if ref.dtype == value.dtype and torch.equal(ref, value) else "changed")
        groups.setdefault(group, set()).add(state)
    for group in sorted(groups):
        print(f"{group:28s} {'/'.join(sorted(groups[group]))}")
    missing = sorted(set(old["state_dict"]) - set(new["state_dict"]))
    print(f"keys of {args.against} missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}")


def cmd_makefolds(args):
    """OUT/k/ravdess.pkl (train = actors 01-18 outside fold k, valid = test = fold k: actors with
    (number - 1) % 3 == k), OUT/k/data.yaml (configs/data/default_voice.yaml pointing at it) and OUT/train.yaml
    (configs/train/default_voice.yaml, 12 epochs, no early stop). Then, per fold:
    moodlens train --config OUT/train.yaml --data OUT/k/data.yaml --out OUT/k/run"""
    out = Path(args.checkpoints[0])
    with args.data.open("rb") as f:
        src = pickle.load(f)
    keys = list(src["train"])
    padded = ("audio", "audio_mask", "vision", "vision_mask", "text_bert")

    def cat(parts):
        merged = {}
        for k in keys:
            vals = [p[k] for p in parts]
            if isinstance(vals[0], np.ndarray):
                if k in padded:
                    n = max(v.shape[1] for v in vals)
                    vals = [np.pad(v, [(0, 0), (0, n - v.shape[1])] + [(0, 0)] * (v.ndim - 2)) for v in vals]
                merged[k] = np.concatenate(vals)
            else:
                merged[k] = sum((list(v) for v in vals), [])
        return merged

    def take(part, idx):
        return {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for k, v in part.items()}

    both = cat([src["train"], src["valid"]])
    actor = np.array([int(i.split("/")[0].split("_")[1]) for i in both["id"]])
    data_yaml = Path("configs/data/default_voice.yaml").read_text()
    train_yaml = Path("configs/train/default_voice.yaml").read_text()
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text("\n".join("early_stop: 99" if line.startswith("early_stop:") else line
                                              for line in train_yaml.splitlines()) + "\n")
    for k in range(3):
        held = (actor - 1) % 3 == k
        fold = {"train": take(both, np.nonzero(~held)[0]), "valid": take(both, np.nonzero(held)[0]),
                "test": take(both, np.nonzero(held)[0]), "meta": src["meta"]}
        (out / str(k)).mkdir(exist_ok=True)
        with (out / str(k) / "ravdess.pkl").open("wb") as f:
            pickle.dump(fold, f, protocol=pickle.HIGHEST_PROTOCOL)
        (out / str(k) / "data.yaml").write_text(data_yaml.replace(str(args.data), str(out / str(k) / "ravdess.pkl")))
        print(f"fold {k}: held-out actors {sorted(set(actor[held].tolist()))}, {(~held).sum()} train clips")


def cmd_folds(args):
    from moodlens.models.checkpoint import model_from_payload, read_checkpoint
    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.trainer import predict

    template, _ = read_checkpoint(args.template)
    shares = {"as shipped": None, "pooled head alone": 1.0, "MLP_A alone": 0.0, "share 0.25": 0.25,
              "share 0.75": 0.75}
    preds = {k: [] for k in shares}
    ys, ems = [], []
    for d in map(Path, args.checkpoints):
        state = torch.load(d / "run" / "seed_1111" / "last.pt", map_location="cpu", weights_only=False)["model"]
        payload = dict(template, state_dict=state)
        model = model_from_payload(payload, d).eval()
        if hasattr(model, "audio_offset"):
            model.audio_offset.zero_()
        mc = model.config
        data = load_dataset(str(d / "ravdess.pkl"), DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                                                audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
        with (d / "ravdess.pkl").open("rb") as f:
            raw = pickle.load(f)["valid"]
        shipped = mc.pooled_share_audio
        for tag, share in shares.items():
            mc.pooled_share_audio = shipped if share is None else share
            preds[tag].append(predict(model, data.split("valid"))["audio"])
        mc.pooled_share_audio = shipped
        ys.append(np.asarray(raw["regression_labels_A"], np.float64))
        ems += [a.split("/")[0] for a in raw["annotations"]]
        print(f"{d}: {lean(preds['as shipped'][-1], ys[-1])}", flush=True)
    y, em = np.concatenate(ys), np.array(ems)
    for tag in shares:
        p = np.concatenate(preds[tag])
        means = " ".join(f"{e[:3]} {p[em == e].mean():+.2f}" for e in EMOTIONS)
        off = float(p[y == 0].mean())
        print(f"{tag:18s} out of fold: {lean(p, y)} | {means}\n{'':18s} recentred by {off:+.3f}: "
              f"{lean(np.clip(p - off, -3, 3), y)}")
    p = np.concatenate(preds["as shipped"])
    offset = float(p[y == 0].mean())
    print(f"cross-fitted neutral offset {offset:+.4f}; recentred: {lean(np.clip(p - offset, -3, 3), y)}")


# ---- cv ----------------------------------------------------------------------------------------

def draw_weights(y, three_way: bool, neutral_weight: float = 1.0):
    """+ and - drawn equally often; `three_way`: +, 0 and - each a third of the draws (train/mixture.py
    `balance: three_way`); else zeros keep their share (`balance: true`), times `neutral_weight`."""
    s, w = np.sign(y), np.ones(len(y))
    if three_way:
        for c in (-1, 0, 1):
            w[s == c] = len(y) / (3 * (s == c).sum())
    else:
        for c in (-1, 1):
            w[s == c] = (s != 0).sum() / (2 * (s == c).sum())
        w[s == 0] *= neutral_weight
    return w / w.sum()


def fit(stats, y, seed, *, three_way=False, neutral_weight=1.0, smooth=0.0, passes=10, members=3, clip=0.0):
    """As stage 3/4 trains the voice pooled head (linear, dropout 0.2, MSE), on precomputed statistics."""
    from moodlens.models.hcrl_mfd import PooledHead

    torch.manual_seed(seed)
    head = PooledHead(stats.shape[1] // 2, True, 0, 0.2, members, clip)
    with torch.no_grad():   # the running standardisation the trainer accumulates = the training clips' own
        head.stat_mean.copy_(stats.mean(0))
        head.stat_log_std.copy_(stats.std(0).clamp_min(1e-6).log())
    head.statistics = lambda x, mask: x[:, 0]
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    target = torch.tensor(y * (1.0 - smooth), dtype=torch.float32)
    rng, n, p = np.random.default_rng(seed), len(y), draw_weights(y, three_way, neutral_weight)
    ones = lambda k: torch.ones(k, 1, dtype=torch.bool)
    head.train()
    for _ in range(passes):
        rows = rng.choice(n, n, p=p)
        for s in range(0, n - 1, 32):
            b = rows[s:s + 32]
            out = head.member_outputs(stats[b][:, None], ones(len(b)), torch.ones(len(b), dtype=torch.bool)).mean(0)
            loss = (out - target[b]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()

    def score(x):
        with torch.no_grad():
            return head(x[:, None], ones(len(x)), torch.ones(len(x), dtype=torch.bool)).numpy()
    return score


def folds(groups, k):
    names = sorted(set(groups))
    fold_of = {g: i % k for i, g in enumerate(names)}
    f = np.array([fold_of[g] for g in groups])
    return [(np.nonzero(f != i)[0], np.nonzero(f == i)[0]) for i in range(k)]


CANDIDATES = [
    ("+/- balanced (shipped)", {}, None),
    ("+/- balanced, neutral x2", {"neutral_weight": 2.0}, None),
    ("three-way balanced", {"three_way": True}, None),
    ("label smoothing 0.2", {"smooth": 0.2}, None),
    ("+/- balanced, offset in-sample", {}, "in"),
    ("+/- balanced, offset cross-fitted", {}, "cross"),
    ("three-way, offset in-sample", {"three_way": True}, "in"),
    ("+/- balanced, z clipped at 3 sd", {"clip": 3.0}, None),
    ("+/- balanced, z clipped at 2 sd", {"clip": 2.0}, None),
    ("three-way, z clipped at 3 sd", {"three_way": True, "clip": 3.0}, None),
]


def cmd_cv(args):
    from moodlens.models.hcrl_mfd import PooledHead

    torch.set_num_threads(1)
    x, mask, y, emotion, actor = ravdess(("train", "valid"), args.data)
    stats = PooledHead(384, True, 0, 0.0).statistics(x, mask)
    ooc = ooc_split(args)
    b = ooc.batch
    ooc_stats = PooledHead(384, True, 0, 0.0).statistics(b.audio.float(), b.audio_mask)

    def offset_of(score, train_rows, kind, settings, seed):
        if kind is None:
            return 0.0
        neutral = train_rows[y[train_rows] == 0]
        if kind == "in":
            return float(score(stats[neutral]).mean())
        inner = []   # cross-fitted: each training actor's neutral clips scored by a head that never saw that actor
        for tr, te in folds(actor[train_rows], 5):
            s = fit(stats[train_rows[tr]], y[train_rows[tr]], seed, **settings)
            rows = train_rows[te][y[train_rows[te]] == 0]
            inner.append(s(stats[rows]))
        return float(np.concatenate(inner).mean())

    for tag, settings, kind in CANDIDATES:
        accs, means, negs, oocs = [], [], [], []
        for r in range(args.repeats):
            pred = np.zeros(len(y))
            for tr, te in folds(actor, 6):
                score = fit(stats[tr], y[tr], r, **settings)
                pred[te] = score(stats[te]) - offset_of(score, tr, kind, settings, r)
            n = y == 0
            accs.append(balanced_acc_2(pred, y))
            means.append(pred[n].mean())
            negs.append(np.mean(pred[n] < 0))
            everything = np.arange(len(y))
            score = fit(stats, y, r, **settings)
            oocs.append(score(ooc_stats) - offset_of(score, everything, kind, settings, r))
        o = np.mean(oocs, 0)
        print(f"{tag:36s} bal {np.mean(accs):.3f} ± {np.std(accs):.3f}  neutral mean {np.mean(means):+.2f}  "
              f"neg {np.mean(negs):.2f}  | OOC {int(np.sum(o < 0))}/{len(o)} neg (sd over seeds "
              f"{np.mean(np.std(oocs, 0)):.2f}): " + " ".join(f"{v:+.2f}" for v in o), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("checkpoint", "cv", "offset", "frozen", "folds", "makefolds"))
    parser.add_argument("checkpoints", nargs="*", default=["default"])
    parser.add_argument("--data", type=Path, default=RAVDESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="offset: write the checkpoint with its audio_offset set here")
    parser.add_argument("--template", default="runs/default_voice/best.pt", help="folds: a stage-4 checkpoint")
    parser.add_argument("--share", type=float, help="offset: also store this pooled_share_audio (chosen by folds)")
    parser.add_argument("--value", type=float, help="offset: store this offset (e.g. the cross-fitted one of folds)")
    parser.add_argument("--against", default="runs/default_stage3/best.pt", help="frozen: the stage-3 checkpoint")
    parser.add_argument("--ooc-sessions", default="/tmp/voice/ooc/sessions")
    parser.add_argument("--ooc-labels", default="/tmp/voice/ooc/labels.csv")
    parser.add_argument("--ooc-cache", default="/tmp/voice/ooc/split.pkl")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    {"checkpoint": cmd_checkpoint, "cv": cmd_cv, "offset": cmd_offset, "frozen": cmd_frozen,
     "folds": cmd_folds, "makefolds": cmd_makefolds}[args.mode](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
