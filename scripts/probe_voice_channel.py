"""How far the shipped voice head moves when the same speech reaches it through another channel: a stand-in
for "a corpus never seen" (another room, microphone, codec), built from RAVDESS's held-out actors.

    python scripts/probe_voice_channel.py [--split test] [--channels clean,gain_-12,phone,...] [--checkpoint CKPT]
    python scripts/probe_voice_channel.py cv-states [VARIANTS] [LEVELS] [--every N] [--work DIR]   # CV statistics
    python scripts/probe_voice_channel.py cv-import VARIANT LEVEL --pkl FEATURES.pkl               # ... from a pickle
    python scripts/probe_voice_channel.py cv [--work DIR]        # the decision table: grouped CV over actors 01-18
    python scripts/probe_voice_channel.py wer [--per-actor 4]    # words with and without level normalisation

`cv` (issue 10's decision, never the test actors): the pooled voice head alone (scripts/probe_pooled_heads.py's
protocol: linear on standardised utterance mean+std of the Whisper states, dropout 0.2, + and - drawn equally
often; 6 grouped folds over actors 01-18; 3 seeds averaged) trained on the clean clips, without or with their
channel copies (`copy`: scripts/make_channel_copies.py's random channels; the held-out actors' copies never
train; copies double the clips, so they are compared at equal optimisation steps as well), at audio_level none
or rms_-23, scored on the held-out folds clean AND through the probe's fixed channels below, plus each channel's
mean score shift against the same clips clean. The statistics come from `cv-states` (the Transcriber the
features use, clip by clip) or `cv-import` (the training pickles: identical values, checked on 5 clips).

Each channel is applied to the clips of one split of runs/data_v2/ravdess/label.csv (RAVDESS actors 19-22 for
test), the result is written as FLAC under --work, featurized by `moodlens featurize` with the shipped weights'
featurizer settings (Whisper encoder states, 15 s input; text from label.csv, no ASR), and scored by the shipped
weights (`moodlens.train.trainer.predict`). Per channel: the audio head's balanced Acc-2, its mean score on the
neutral, positive and negative clips, and how far the mean moved from the clean channel. No training; the
labels are the ones the weights were evaluated on. Results are read, not tuned to: this probe chooses nothing.

Result, stage-4 weights (default.pt at 10baca7), RAVDESS test actors 19-22 (176 clips), one thread, 2-vCPU VM,
21:10 UTC, ~25 s a channel:

| channel | balanced Acc-2 | mean neutral / positive / negative | shift vs clean |
|---|---|---|---|
| clean | 0.895 | -0.02 / +1.10 / -1.08 | +0.00 |
| gain_-12 | 0.816 | -0.50 / +0.57 / -1.36 | -0.34 |
| phone | 0.855 | +0.20 / +0.95 / -0.89 | +0.13 |
| noise_20 | 0.840 | +0.22 / +0.64 / -1.20 | -0.15 |
| noise_10 | 0.770 | -0.17 / +0.08 / -1.39 | -0.42 |
| reverb | 0.859 | -0.04 / +0.95 / -1.14 | -0.07 |
| laptop | 0.895 | +0.08 / +1.17 / -0.95 | +0.12 |

The level of the recording alone moves the voice score: the same speech 12 dB quieter reads 0.34 more
negative and loses 8 points (Whisper's log-mel is clamped relative to its maximum but scaled absolutely), and
pink noise at 10 dB SNR costs 12. A webcam microphone is rarely at RAVDESS's studio level, so this is a likely
part of the out-of-corpus negative lean the model card reports.

Stage 5 voice (/work/runs_keep/voice_v4/stage5_voice.pt: trained with scripts/make_channel_copies.py's copies,
no level normalisation, chosen by `cv` below; cross-fitted neutral offset -0.131), same clips, 22:19 UTC:
clean 0.906, gain_-12 0.871 (shift -0.02), phone 0.844, noise_20 0.859, noise_10 0.820, reverb 0.840, laptop 0.883;
mean of the six channels 0.853 (stage 4 0.839). Neutral test voices positive: 10/16 clean.

`cv` on all 792 clips of actors 01-18 through every channel (21:50 UTC; `--work /work/runs_keep/voice_v4/cv_full`):
level normalisation (rms_-23) clean 0.821 -> 0.826, channels mean 0.794 -> 0.805 (+1.1, the rule asked +3: not
shipped); copies at equal steps clean 0.821 -> 0.856, channels 0.794 -> 0.829 (+3.5: added). Full table and the
decision: /work/runs_keep/voice_v4/DECISION.md (the model card section quotes it).

Channels (all deterministic, seeded): `clean` (the FLAC as it is), `gain_-12` (12 dB quieter), `phone`
(8 kHz narrow band: 300-3400 Hz band-pass, down to 8 kHz and back), `noise_20` / `noise_10` (pink noise at
20 / 10 dB SNR over the clip), `reverb` (a synthetic room: exponentially decaying noise tail, RT60 0.5 s, direct
path kept), `laptop` (a small built-in microphone: 200 Hz high-pass, 5 kHz low-pass, 4 dB presence peak at 3 kHz).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SR = 16_000
REPO = Path(__file__).resolve().parents[1]
CHANNELS = ("clean", "gain_-12", "phone", "noise_20", "noise_10", "reverb", "laptop")


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise of unit RMS, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _peaking(x: np.ndarray, f0: float, gain_db: float, q: float = 1.0) -> np.ndarray:
    """An RBJ peaking-EQ biquad (Audio EQ Cookbook)."""
    from scipy.signal import lfilter

    a_gain = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / SR
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a_gain, -2 * np.cos(w0), 1 - alpha * a_gain]
    a = [1 + alpha / a_gain, -2 * np.cos(w0), 1 - alpha / a_gain]
    return lfilter(b, a, x)


def apply_channel(name: str, x: np.ndarray, seed: int) -> np.ndarray:
    from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

    rng = np.random.default_rng(seed)
    if name == "clean":
        y = x
    elif name == "gain_-12":
        y = x * 10 ** (-12 / 20)
    elif name == "phone":
        y = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos"), x)
        y = resample_poly(resample_poly(y, 1, 2), 2, 1)[: len(x)]
    elif name.startswith("noise_"):
        snr_db = float(name.split("_")[1])
        rms = np.sqrt(np.mean(x ** 2)) + 1e-12
        y = x + _pink(len(x), rng) * rms * 10 ** (-snr_db / 20)
    elif name == "reverb":
        t = np.arange(int(0.6 * SR)) / SR
        tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / 0.5)   # -60 dB at RT60 = 0.5 s
        tail[: int(0.005 * SR)] = 0                                   # 5 ms before the first reflection
        rir = np.concatenate([[1.0], 0.3 * tail / np.sqrt(np.sum(tail ** 2))])
        y = fftconvolve(x, rir)[: len(x)]
    elif name == "laptop":
        y = sosfilt(butter(2, 200, btype="highpass", fs=SR, output="sos"), x)
        y = sosfilt(butter(2, 5000, btype="lowpass", fs=SR, output="sos"), y)
        y = _peaking(y, 3000, 4.0)
    else:
        raise SystemExit(f"unknown channel {name!r}; known: {', '.join(CHANNELS)}")
    peak = np.max(np.abs(y)) + 1e-12
    return (y / peak * 0.99 if peak > 0.99 else y).astype(np.float32)   # no clipping


def write_channel(name: str, rows: list[dict], src: Path, work: Path) -> Path:
    import soundfile as sf

    root = work / name
    if (root / "label.csv").exists():
        return root
    for i, row in enumerate(rows):
        x, sr = sf.read(src / row["video_id"] / f"{row['clip_id']}.flac", dtype="float32")
        assert sr == SR, f"{row['clip_id']}: {sr} Hz"
        out = root / "Raw" / row["video_id"] / f"{row['clip_id']}.flac"
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, apply_channel(name, x, seed=i), SR)
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def featurize(root: Path, workers: int, whisper_input: str = "15s", audio_level: str = "none") -> Path:
    """The channel's clips featurized as the checkpoint's featurizer config says (encoder input, level)."""
    import pickle

    out = root / ("features.pkl" if audio_level == "none" else f"features_{audio_level}.pkl")
    if whisper_input != "15s":
        out = out.with_name(f"{out.stem}_{whisper_input}.pkl")
    if not out.exists():
        cmd = [sys.executable, "-m", "moodlens.realtime.cli", "featurize", "--raw", str(root), "--labels",
               str(root / "label.csv"), "--out", str(out), "--audio-features", "whisper_encoder",
               "--vision-features", "mediapipe_v2", "--whisper-input", whisper_input, "--audio-level", audio_level,
               "--no-asr", "--workers", str(workers)]
        subprocess.run(cmd, check=True, cwd=REPO)
    with out.open("rb") as f:
        meta = pickle.load(f)["meta"]
    found = (meta.get("whisper_input", "30s"), meta.get("audio_level", "none"))
    if found != (whisper_input, audio_level):
        raise SystemExit(f"{out} holds features made with {found}, the checkpoint wants {(whisper_input, audio_level)}")
    return out


def score(pkl: Path, split: str, model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import pickle

    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.trainer import predict

    mc = model.config
    data = load_dataset(str(pkl), DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                              audio_dim=mc.audio_dim, vision_dim=mc.vision_dim))
    with pkl.open("rb") as f:
        raw = pickle.load(f)
    emotion = np.array([a.split("/")[0] for a in raw[split]["annotations"]])
    part = data.split(split)
    label = part.labels.numpy()
    label = label[:, 2] if label.ndim == 2 else label           # columns fused / text / audio / vision
    return predict(model, part)["audio"], label, emotion


# ---- grouped CV of the pooled voice head (issue 10's decision: level normalisation, channel copies) ------------
CV_VARIANTS = CHANNELS + ("copy",)   # "copy": scripts/make_channel_copies.py random_channel, seed [0, i, 0]


def cv_rows(labels: Path) -> list[dict]:
    with labels.open() as f:
        return [r for r in csv.DictReader(f) if r["mode"] in ("train", "valid")]


def cv_states(variant: str, level: str, rows: list[dict], src: Path, out: Path, every: int = 1) -> Path:
    """Pooled statistics (PooledHead.statistics: mean and std of the 40 ms Whisper frames) of the train + valid
    clips through `variant`, at `level`, with the Transcriber the features use (15 s input, one thread):
    the same `Transcriber.encoder_states` -> `pool_states` as `moodlens featurize --no-asr`. `every` > 1: only
    every so many clips (the probe's channels are scored on a subset when the CPU is short; seeds stay the
    clip's index in `rows`)."""
    import soundfile as sf
    import torch
    from moodlens.models.hcrl_mfd import PooledHead
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber
    from moodlens.realtime.perception.features.whisper_states import pool_states

    path = out / f"{variant}_{level}.npz"
    if path.exists():
        return path
    tr = Transcriber(AsrOptions(warmup=False, whisper_input="15s", audio_level=level, cpu_threads=1))
    head = PooledHead(384, True, 0, 0.0)
    stats, start, index = [], time.time(), list(range(0, len(rows), every))
    for i in index:
        row = rows[i]
        x, _ = sf.read(src / row["video_id"] / f"{row['clip_id']}.flac", dtype="float32")
        if variant == "copy":
            from make_channel_copies import random_channel

            y = random_channel(x, np.random.default_rng([0, i, 0]))[0]
        else:
            y = apply_channel(variant, x, seed=i)
        frames = torch.from_numpy(np.nan_to_num(pool_states(tr.encoder_states(y))))[None]
        stats.append(head.statistics(frames, torch.ones(1, len(frames[0]), dtype=torch.bool))[0].numpy())
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.stack(stats), index=np.array(index),
             ids=np.array([f"{rows[i]['video_id']}/{rows[i]['clip_id']}" for i in index]))
    print(f"{variant} {level}: {len(index)} clips in {time.time() - start:.0f} s", flush=True)
    return path


def cv_import(pkl: Path, variant: str, level: str, rows: list[dict], out: Path) -> Path:
    """The same statistics from a `moodlens featurize` pickle (train + valid splits; channel copies' clip ids
    end in -ch0): RAVDESS and its copies are featurized for training anyway, so the CV reads those."""
    import torch
    from moodlens.core.safeload import safe_pickle_load
    from moodlens.models.hcrl_mfd import PooledHead
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    data = safe_pickle_load(str(pkl))
    config = FeaturizerConfig.from_dict(data["meta"], source=f"featurizer config of {pkl}")
    if config.audio_level != level or config.whisper_input != "15s":
        raise SystemExit(f"{pkl}: audio_level {config.audio_level}, whisper_input {config.whisper_input}; "
                         f"expected {level}, 15s")
    stats = {}
    for split in ("train", "valid"):
        part = data[split]
        st = PooledHead(384, True, 0, 0.0).statistics(torch.tensor(part["audio"]), torch.tensor(part["audio_mask"]))
        stats.update(zip([i.removesuffix("-ch0") for i in part["id"]], st.numpy()))
    ids = [f"{r['video_id']}/{r['clip_id']}" for r in rows]
    path = out / f"{variant}_{level}.npz"
    np.savez(path, x=np.stack([stats[i] for i in ids]), index=np.arange(len(ids)), ids=np.array(ids))
    print(f"{path}: {len(ids)} clips from {pkl}")
    return path


def cv_main(argv) -> int:
    """`cv-states VARIANT,... LEVEL` caches pooled statistics; `cv` scores the decision table."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    p = argparse.ArgumentParser(description="grouped CV of the pooled voice head through channels")
    p.add_argument("what", choices=["cv-states", "cv", "cv-import"])
    p.add_argument("variants", nargs="?", default=",".join(CV_VARIANTS))
    p.add_argument("levels", nargs="?", default="none,rms_-23")
    p.add_argument("--labels", type=Path, default=REPO / "runs/data_v2/ravdess/label.csv")
    p.add_argument("--src", type=Path, default=REPO.parent / "shared/data/ravdess_speech")
    p.add_argument("--work", type=Path, default=Path("/work/runs_keep/voice_v4/cv_states"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--every", type=int, default=1, help="cv-states: the probe's channels on every N-th clip only")
    p.add_argument("--pkl", type=Path, help="cv-import: the feature pickle of VARIANT at LEVEL")
    args = p.parse_args(argv)
    rows = cv_rows(args.labels)
    if args.what == "cv-import":
        cv_import(args.pkl, args.variants, args.levels, rows, args.work)
        return 0
    if args.what == "cv-states":
        for level in args.levels.split(","):
            for variant in args.variants.split(","):
                cv_states(variant, level, rows, args.src, args.work,
                          every=1 if variant in ("clean", "copy") else args.every)
        return 0
    import torch
    from probe_pooled_heads import balanced_acc_2, fit_predict, group_folds

    torch.set_num_threads(1)
    y = np.array([float(r["label_A"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    emotion = np.array([r["annotation"].split("/")[0] for r in rows])
    folds = group_folds(groups, 6)
    channels = [c for c in CHANNELS if c != "clean"]
    print(f"{len(y)} clips (train + valid actors 01-18), {len(folds)} grouped folds, linear pooled head "
          f"(mean+std, dropout 0.2), {args.seeds} seeds averaged")
    print("| level | train on | clean CV | " + " | ".join(channels) + " | channels mean | neutral mean clean |")
    print("|---" * (5 + len(channels)) + "|")
    shifts = []
    for level in args.levels.split(","):
        x, index = {}, {}
        for v in CV_VARIANTS:
            if (args.work / f"{v}_{level}.npz").exists():
                saved = np.load(args.work / f"{v}_{level}.npz")
                x[v] = np.zeros((len(y), saved["x"].shape[1]), np.float32)
                index[v] = saved["index"] if "index" in saved else np.arange(len(y))
                x[v][index[v]] = saved["x"]
        # copies double the training clips: compared at equal optimisation steps (clean at 2x the passes)
        for with_copies, passes in ((False, 10), (True, 5), (False, 20), (True, 10)):
            if with_copies and "copy" not in x:
                continue
            preds = {v: np.zeros((args.seeds, len(y))) for v in ["clean"] + channels if v in x}
            for seed in range(args.seeds):
                for train, test in folds:
                    xt, yt = x["clean"][train], y[train]
                    if with_copies:   # the held-out actors' copies never train
                        xt, yt = np.concatenate([xt, x["copy"][train]]), np.concatenate([yt, yt])
                    keep = np.isfinite(yt)
                    xs = np.concatenate([x[v][test] for v in preds])
                    out = fit_predict(xt[keep], yt[keep], xs, "audio", 0, 0.2, passes, seed=seed)
                    for k, v in enumerate(preds):
                        preds[v][seed, test] = out[k * len(test):(k + 1) * len(test)]
            score = {}
            for v in preds:   # each variant on the held-out clips it has
                has = np.zeros(len(y), bool)
                has[index[v]] = True
                has &= np.isfinite(y)
                score[v] = balanced_acc_2(preds[v].mean(0)[has], y[has])
            chan = [score[c] for c in channels if c in score]
            neutral = preds["clean"].mean(0)[emotion == "neutral"].mean()
            shift = {v: float(preds[v].mean(0)[index[v]].mean() - preds["clean"].mean(0)[index[v]].mean())
                     for v in channels if v in preds}
            shifts.append(f"{level} {'+ copies' if with_copies else 'clean'} {passes} passes: "
                          + ", ".join(f"{v} {d:+.2f}" for v, d in shift.items()))
            print(f"| {level} | clean{' + copies' if with_copies else ''}, {passes} passes | {score['clean']:.3f} | "
                  + " | ".join(f"{score[c]:.3f}" if c in score else "-" for c in channels)
                  + f" | {np.mean(chan):.3f} | {neutral:+.2f} |", flush=True)
    print("mean score shift vs the same clips clean (out of fold):")
    for line in shifts:
        print("  " + line)
    return 0


def wer_main(argv) -> int:
    """`wer`: does level normalisation cost words? benchmarks/whisper_context.py's windows (RAVDESS, espeak-ng,
    the demo's VAD windows) transcribed with the live options at 15 s input, audio_level none vs rms_-23, each
    window also 12 dB quieter; WER vs the truth and the paired bootstrap 95 % CI of the difference."""
    import tempfile

    sys.path.insert(0, str(REPO / "benchmarks"))
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber
    from whisper_context import (
        bootstrap_diff,
        demo_windows,
        edit_distance,
        espeak_windows,
        hallucinated,
        normalise,
        ravdess_windows,
        uptime,
    )

    p = argparse.ArgumentParser(description="WER with and without level normalisation")
    p.add_argument("what", choices=["wer"])
    p.add_argument("--per-actor", type=int, default=4)
    p.add_argument("--cpu-threads", type=int, default=1)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        windows = ravdess_windows(args.per_actor) + espeak_windows(Path(tmp)) + demo_windows()
    print(f"{len(windows)} windows; {uptime()}", flush=True)
    levels = ("none", "rms_-23")
    trs = {lv: Transcriber(AsrOptions(word_timestamps=False, cpu_threads=args.cpu_threads, whisper_input="15s",
                                      audio_level=lv)) for lv in levels}
    gains = {"as recorded": 1.0, "12 dB quieter": 10 ** (-12 / 20)}
    for w in windows:
        w["hyp"] = {(lv, g): normalise(trs[lv].transcribe(w["audio"] * np.float32(k), keep_encoder_states=True).text)
                    for lv in levels for g, k in gains.items()}
    print(f"done; {uptime()}")
    print("| corpus | windows | input | WER none | WER rms_-23 | diff (95 % CI) | halluc. none / rms |")
    print("|---|---|---|---|---|---|---|")
    for corpus in ("ravdess", "espeak", "demo"):
        ws = [w for w in windows if w["corpus"] == corpus]
        truth = [normalise(w["truth"]) for w in ws]
        words = np.array([len(t) for t in truth], float)
        for g in gains:
            err = {lv: np.array([edit_distance(t, w["hyp"][(lv, g)]) for t, w in zip(truth, ws)], float)
                   for lv in levels}
            hal = {lv: sum(hallucinated(w["hyp"][(lv, g)], t) for t, w in zip(truth, ws)) for lv in levels}
            lo, hi = bootstrap_diff(err["rms_-23"], err["none"], words)
            print(f"| {corpus} | {len(ws)} | {g} | {err['none'].sum() / words.sum():.3f} | "
                  f"{err['rms_-23'].sum() / words.sum():.3f} | "
                  f"{(err['rms_-23'].sum() - err['none'].sum()) / words.sum():+.3f} ({lo:+.3f}, {hi:+.3f}) | "
                  f"{hal['none']} / {hal['rms_-23']} |", flush=True)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("cv-states", "cv", "cv-import"):
        return cv_main(argv)
    if argv and argv[0] == "wer":
        return wer_main(argv)
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.head_metrics import balanced_acc_2

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=Path, default=REPO / "runs/data_v2/ravdess/label.csv")
    p.add_argument("--src", type=Path, default=REPO.parent / "shared/data/ravdess_speech")
    p.add_argument("--split", default="test")
    p.add_argument("--channels", default=",".join(CHANNELS))
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--work", type=Path, default=Path("/tmp/probe_voice_channel"))
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)

    with args.labels.open() as f:
        rows = [r for r in csv.DictReader(f) if r["mode"] == args.split]
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    whisper_input = loaded.featurizer_config.get("whisper_input", "30s")
    audio_level = loaded.featurizer_config.get("audio_level", "none")
    print(f"{len(rows)} {args.split} clips, checkpoint {args.checkpoint} (whisper_input {whisper_input}, "
          f"audio_level {audio_level})")
    print("| channel | balanced Acc-2 | mean neutral / positive / negative | neutral > 0 | shift vs clean | s |")
    print("|---|---|---|---|---|---|")
    table = []
    clean_mean = None
    for name in args.channels.split(","):
        start = time.time()
        pkl = featurize(write_channel(name, rows, args.src, args.work), args.workers, whisper_input, audio_level)
        pred, label, emotion = score(pkl, args.split, model)
        known = ~np.isnan(label)
        bacc = balanced_acc_2(pred[known], label[known])
        means = [float(pred[emotion == "neutral"].mean()), float(pred[label > 0].mean()), float(pred[label < 0].mean())]
        overall = float(pred.mean())
        clean_mean = overall if name == "clean" else clean_mean
        shift = "" if clean_mean is None else f"{overall - clean_mean:+.2f}"
        neutral = pred[emotion == "neutral"]
        print(f"| {name} | {bacc:.3f} | {means[0]:+.2f} / {means[1]:+.2f} / {means[2]:+.2f} | "
              f"{int((neutral > 0).sum())}/{len(neutral)} | {shift} | {time.time() - start:.0f} |", flush=True)
        table.append(bacc)
    if len(table) > 1:
        print(f"mean over the channels but clean: {np.mean(table[1:]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
