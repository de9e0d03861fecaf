"""Channel copies of RAVDESS for training the voice head (issue 10): the train + valid actors' clips (never the
test actors 19-22) through random channels of the families scripts/probe_voice_channel.py evaluates, with
random parameters, written as a raw dataset with the same labels, actor groups and split columns.

    python scripts/make_channel_copies.py --out /work/runs_keep/voice_v4/copies_raw [--copies 1] [--seed 0]
    nice -n 10 moodlens featurize --raw /work/runs_keep/voice_v4/copies_raw --audio-features whisper_encoder \
        --vision-features mediapipe_v2 --whisper-input 15s --audio-level rms_-23 --no-asr --out ...

Each copy draws, independently (seeded by --seed, the clip's index and the copy's index):
  microphone EQ (p 0.5): high-pass 80-300 Hz, low-pass 4-8 kHz, a peak of -3...+6 dB at 1.5-5 kHz;
  reverb (p 0.4): the probe's synthetic room, RT60 0.2-0.8 s, reflections 0.1-0.5 of the direct path;
  phone band (p 0.25): 300-3400 Hz band-pass, down to 8 kHz and back (as the probe);
  noise (p 0.5): pink or white, 5-30 dB SNR over the clip;
  gain (always): -24...+6 dB, then the peak kept under 0.99 (no clipping), as the probe does.
The probe's fixed channels on the test actors stay evaluation only; these copies are of the same families, so
scores on those channels are optimistic for them: an unseen corpus's channel may differ.
A copy's clip_id is `<clip_id>-ch<k>`; label.csv keeps every other column of the source row and adds
`channel` (what was drawn). Copies keep the source row's mode (train / valid) and group (actor).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_voice_channel import SR, _peaking, _pink

REPO = Path(__file__).resolve().parents[1]
TEST_GROUPS = {"actor19", "actor20", "actor21", "actor22"}


def random_channel(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One random channel applied to 16 kHz float audio: (the result, a short description)."""
    from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

    y, parts = np.asarray(x, np.float64), []
    if rng.random() < 0.5:
        hp, lp, f0, g = rng.uniform(80, 300), rng.uniform(4000, 8000), rng.uniform(1500, 5000), rng.uniform(-3, 6)
        y = sosfilt(butter(2, hp, btype="highpass", fs=SR, output="sos"), y)
        if lp < 7900:
            y = sosfilt(butter(2, lp, btype="lowpass", fs=SR, output="sos"), y)
        y = _peaking(y, f0, g)
        parts.append(f"eq{hp:.0f}-{lp:.0f}@{f0:.0f}{g:+.0f}")
    if rng.random() < 0.4:
        rt60, wet = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.5)
        t = np.arange(int(1.2 * rt60 * SR)) / SR
        tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)   # -60 dB at RT60
        tail[: int(0.005 * SR)] = 0
        rir = np.concatenate([[1.0], wet * tail / np.sqrt(np.sum(tail ** 2))])
        y = fftconvolve(y, rir)[: len(x)]
        parts.append(f"rt{rt60:.2f}x{wet:.2f}")
    if rng.random() < 0.25:
        y = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos"), y)
        y = resample_poly(resample_poly(y, 1, 2), 2, 1)[: len(x)]
        parts.append("phone")
    if rng.random() < 0.5:
        snr, pink = rng.uniform(5, 30), rng.random() < 0.5
        rms = np.sqrt(np.mean(y ** 2)) + 1e-12
        noise = _pink(len(y), rng) if pink else rng.standard_normal(len(y))
        y = y + noise * rms * 10 ** (-snr / 20)
        parts.append(f"{'pink' if pink else 'white'}{snr:.0f}")
    gain = rng.uniform(-24, 6)
    y = y * 10 ** (gain / 20)
    parts.append(f"gain{gain:+.0f}")
    peak = np.max(np.abs(y)) + 1e-12
    return (y / peak * 0.99 if peak > 0.99 else y).astype(np.float32), "+".join(parts)


def main(argv=None) -> int:
    import soundfile as sf

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=Path, default=REPO / "runs/data_v2/ravdess/label.csv")
    p.add_argument("--src", type=Path, default=REPO.parent / "shared/data/ravdess_speech")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--copies", type=int, default=1, help="copies per clip")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    with args.labels.open() as f:
        rows = [r for r in csv.DictReader(f)]
    rows = [r for r in rows if r["mode"] in ("train", "valid")]
    if any(r["group"] in TEST_GROUPS for r in rows):
        raise SystemExit(f"{args.labels}: a train/valid row belongs to a test actor; refusing")
    out_rows = []
    for i, row in enumerate(rows):
        x, sr = sf.read(args.src / row["video_id"] / f"{row['clip_id']}.flac", dtype="float32")
        if sr != SR:
            raise SystemExit(f"{row['clip_id']}: {sr} Hz, expected {SR}")
        for k in range(args.copies):
            y, what = random_channel(x, np.random.default_rng([args.seed, i, k]))
            clip = f"{row['clip_id']}-ch{k}"
            path = args.out / "Raw" / row["video_id"] / f"{clip}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, y, SR)
            out_rows.append({**row, "clip_id": clip, "channel": what})
    with open(args.out / "label.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out_rows[0]))
        w.writeheader()
        w.writerows(out_rows)
    print(f"{len(out_rows)} copies of {len(rows)} train/valid clips -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
