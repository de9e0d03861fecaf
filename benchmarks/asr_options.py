"""What Whisper's decoding options cost per live window, and whether they change the transcript.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/asr_options.py [--repeats 3] [--json out.json]

Windows: espeak-ng sentences (two voices, 1-6 s) and the utterances of the bundled demo clip as
the VAD cuts them. Each variant decodes every window `--repeats` times, round-robin with the others (median wall
time per window; a first pass warms every variant up); its transcripts are compared with the
live configuration's (`same` = identical text on every window). Also timed: the log-mel and the
encoder on its 30 s input alone (the part no decoding option touches: the audio features reuse
those encoder states, so the 30 s padding stays).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = [
    "I really love this movie.",
    "That was the worst meal I have ever had, and the service was slow.",
    "Honestly, I don't know what to think about it yet.",
    "The weather is nice today, so we are going to the park after lunch.",
    "No.",
    "She told me the results were much better than we expected, which made the whole team very happy.",
]


def espeak(text: str, voice: str, folder: Path) -> np.ndarray:
    import librosa
    import soundfile as sf

    wav = folder / "s.wav"
    subprocess.run([shutil.which("espeak-ng"), "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
    audio, sr = sf.read(str(wav), dtype="float32")
    audio = np.pad(audio, (int(0.2 * sr), int(0.2 * sr)))   # the VAD's pad_s either side
    return librosa.resample(audio, orig_sr=sr, target_sr=16000).astype(np.float32)


def demo_windows() -> list[np.ndarray]:
    from moodlens.core.assets import DEMO_CLIP, resolve_path
    from moodlens.realtime.capture.media import read_media
    from moodlens.realtime.perception.vad import split_utterances

    audio = read_media(resolve_path(DEMO_CLIP)).audio
    return [audio[int(s * 16000):int(e * 16000)] for s, e in split_utterances(audio)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("Skipped: espeak-ng is not installed.")
        return 0
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber

    with tempfile.TemporaryDirectory() as tmp:
        windows = [espeak(t, v, Path(tmp)) for v in ("en-us", "en-gb") for t in SENTENCES]
    windows += demo_windows()
    durations = [len(w) / 16000 for w in windows]

    base = dict(beam_size=1, word_timestamps=False, without_timestamps=False, max_tokens_per_s=12.0)
    variants = {
        "live (beam 1, timestamps, 2 threads)": {},
        "without_timestamps": {"without_timestamps": True},
        "cpu_threads 1": {"cpu_threads": 1},
        "beam 5": {"beam_size": 5},
        "word_timestamps": {"word_timestamps": True},
        "no token cap": {"max_tokens_per_s": None},
        "without_timestamps + 1 thread": {"without_timestamps": True, "cpu_threads": 1},
    }
    # Every variant loaded first, then timed round-robin (window by window, variant by variant), so
    # a change in the machine's load hits all variants alike.
    transcribers = {}
    for name, change in variants.items():
        o = {**base, **change}
        transcribers[name] = Transcriber(AsrOptions(
            beam_size=o["beam_size"], word_timestamps=o["word_timestamps"], max_tokens_per_s=o["max_tokens_per_s"],
            cpu_threads=o.get("cpu_threads"), without_timestamps=o["without_timestamps"]))
    texts = {name: [""] * len(windows) for name in variants}
    times = {name: [[] for _ in windows] for name in variants}
    for r in range(args.repeats + 1):
        for i, w in enumerate(windows):
            for name, tr in transcribers.items():
                t = tr.transcribe(w)
                texts[name][i] = t.text
                if r:                                   # pass 0 warms every variant up
                    times[name][i].append(t.elapsed_s * 1000)
    reference = texts[next(iter(variants))]
    results = []
    for name in variants:
        ms = [float(np.median(t)) for t in times[name]]
        same = [a == b for a, b in zip(texts[name], reference)]
        row = {"variant": name, "ms_per_window_median": round(float(np.median(ms)), 1),
               "ms_sum": round(float(np.sum(ms)), 1), "same_text": f"{sum(same)}/{len(same)}",
               "differs": [{"ref": r, "got": g} for r, g, s in zip(reference, texts[name], same) if not s]}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "differs"}), flush=True)

    # The part no decoding option touches: log-mel + encoder over the padded 30 s input.
    from faster_whisper.audio import pad_or_trim

    tr = Transcriber(AsrOptions())
    mel_ms, enc_ms = [], []
    for w in windows:
        for r in range(args.repeats + 1):
            t0 = time.perf_counter()
            feats = tr.model.feature_extractor(w)
            t1 = time.perf_counter()
            tr.model.encode(pad_or_trim(feats[:, : feats.shape[-1] - 1]))
            t2 = time.perf_counter()
            if r:
                mel_ms.append((t1 - t0) * 1000)
                enc_ms.append((t2 - t1) * 1000)
    report = {"windows": len(windows), "window_s": {"min": round(min(durations), 2), "median": round(float(np.median(durations)), 2),
                                                    "max": round(max(durations), 2)},
              "repeats": args.repeats, "variants": results,
              "mel_ms_median": round(float(np.median(mel_ms)), 1), "encoder_30s_ms_median": round(float(np.median(enc_ms)), 1),
              "reference_texts": reference}
    print(json.dumps({k: report[k] for k in ("windows", "window_s", "mel_ms_median", "encoder_30s_ms_median")}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
