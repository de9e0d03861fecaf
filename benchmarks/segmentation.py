"""What shorter VAD silences do to utterance segmentation and transcripts.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/segmentation.py [--ravdess 40] [--json out.json]

Audio: the bundled demo clip (5 sentences), a stream of espeak-ng sentences with natural pauses
inside them (commas) and 0.7 s between them, RAVDESS clips from ../shared (one sentence each:
more than one window means the sentence was split), and the real clips in ../shared/data/clips
(Mandarin: counts only). For each (min_silence_s, pad_s) variant: windows per source and, for the
demo clip and the espeak stream, the transcripts of the windows joined (Whisper tiny.en, the live
options), compared with the live default's. Choose on these, not on a test split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STREAM = [
    "Well, I went to see it last night, and honestly, it was much better than I expected.",
    "The first half is slow.",
    "But then, when the music starts, everything changes and you cannot look away.",
    "I would watch it again.",
]


def espeak_stream(folder: Path) -> np.ndarray:
    import librosa
    import soundfile as sf

    parts = []
    for i, text in enumerate(STREAM):
        wav = folder / f"{i}.wav"
        subprocess.run([shutil.which("espeak-ng"), "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
        audio, sr = sf.read(str(wav), dtype="float32")
        parts += [librosa.resample(audio, orig_sr=sr, target_sr=16000).astype(np.float32), np.zeros(int(0.7 * 16000), np.float32)]
    return np.concatenate([np.zeros(8000, np.float32)] + parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=int, default=40, help="RAVDESS clips to segment (0 = none)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from moodlens.core.assets import DEMO_CLIP, resolve_path
    from moodlens.realtime.capture.media import read_media
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber
    from moodlens.realtime.perception.vad import VadOptions, split_utterances

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    sources: dict[str, np.ndarray] = {"demo": read_media(resolve_path(DEMO_CLIP)).audio}
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            sources["espeak_stream"] = espeak_stream(Path(tmp))
    for clip in sorted((shared / "clips").glob("*.mp4")):
        sources[f"clip:{clip.stem}"] = read_media(clip).audio
    ravdess = sorted((shared / "ravdess_speech").glob("Actor_*/*.flac"))[:: max(1, 1320 // max(args.ravdess, 1))][: args.ravdess]
    if ravdess:
        import soundfile as sf

        for f in ravdess:
            audio, _ = sf.read(str(f), dtype="float32")
            sources[f"ravdess:{f.stem}"] = audio
    transcriber = Transcriber(AsrOptions(word_timestamps=False))
    variants = [(0.5, 0.2), (0.4, 0.2), (0.35, 0.2), (0.3, 0.2), (0.25, 0.2), (0.5, 0.1), (0.3, 0.1)]
    rows, ref_text = [], {}
    for min_silence, pad in variants:
        vad = VadOptions(min_silence_s=min_silence, pad_s=pad)
        counts, texts = {}, {}
        for name, audio in sources.items():
            spans = split_utterances(audio, vad)
            counts[name] = len(spans)
            if not name.startswith(("clip:", "ravdess:")):
                texts[name] = " ".join(transcriber.transcribe(audio[int(s * 16000):int(e * 16000)]).text for s, e in spans)
        if not ref_text:
            ref_text = texts
        rav = [c for n, c in counts.items() if n.startswith("ravdess:")]
        row = {"min_silence_s": min_silence, "pad_s": pad,
               "windows": {n: c for n, c in counts.items() if not n.startswith("ravdess:")},
               "ravdess_clips": len(rav), "ravdess_split": sum(c > 1 for c in rav), "ravdess_missed": sum(c == 0 for c in rav),
               "same_text_as_default": {n: texts[n] == ref_text[n] for n in texts}, "texts": texts}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "texts"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"variants": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
