"""Featurization throughput of a dataset: clips/s of `featurize_raw_dataset` with 1 and 2 workers.

Run:  .venv/bin/python -m pytest benchmarks/bench_featurize.py --benchmark-enable
      (MOODLENS_BENCH_CLIPS=N sets the clips per corpus, default 24)

Two kinds of clip, both as `moodlens featurize --raw` sees them:
- voices: RAVDESS-like audio-only FLAC files (espeak-ng speech, ~3 s), label text given (no
  ASR decode), Whisper tiny.en encoder-state audio features (one encoder run per clip);
- stills: a face image (the first frame of the bundled demo clip) held for a 2 s window.

The cache is off, so every round computes every clip. Numbers depend on the machine: quote the
median with the machine (docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLIPS = int(os.environ.get("MOODLENS_BENCH_CLIPS", "24"))
SENTENCES = ("Kids are talking by the door", "Dogs are sitting by the door")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    import av
    import librosa
    import soundfile as sf
    from PIL import Image

    from moodlens.core.assets import DEMO_CLIP, resolve_path

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is needed to synthesize the voices")
    root = tmp_path_factory.mktemp("bench_featurize")
    voices, stills = root / "voices", root / "stills"
    (voices / "v").mkdir(parents=True)
    (stills / "s").mkdir(parents=True)
    with av.open(str(resolve_path(DEMO_CLIP, None))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    Image.fromarray(frame).save(stills / "s" / "face.png")
    header = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"]
    voice_rows, still_rows = [header], [header]
    for i in range(CLIPS):
        text = SENTENCES[i % 2]
        raw = root / "raw.wav"
        subprocess.run([exe, "-v", "en-us", "-s", str(130 + 5 * (i % 8)), "-w", str(raw), text], check=True)
        audio, sr = sf.read(str(raw), dtype="float32")
        sf.write(str(voices / "v" / f"c{i:03d}.flac"), librosa.resample(audio, orig_sr=sr, target_sr=16000), 16000)
        voice_rows.append(["v", f"c{i:03d}", text, "0.5", "", "1.5", "", "bench", "train"])
        if i:
            shutil.copy(stills / "s" / "face.png", stills / "s" / f"face{i:03d}.png")
        still_rows.append(["s", "face" if i == 0 else f"face{i:03d}", "", "2", "", "", "2", "bench", "train"])
    for folder, rows in ((voices, voice_rows), (stills, still_rows)):
        with (folder / "label.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return {"voices": (voices, voices / "label.csv"), "stills": (stills, stills / "label.csv")}


@pytest.mark.parametrize("kind", ["voices", "stills"])
@pytest.mark.parametrize("workers", [1, 2])
def test_featurize_throughput(benchmark, corpora, tmp_path, kind, workers):
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.train.datasets import FeaturizeOptions, featurize_raw_dataset

    raw, labels = corpora[kind]
    config = FeaturizerConfig.for_audio_features("whisper_encoder")
    options = FeaturizeOptions(workers=workers, cache=False, progress=False, asr={"cpu_threads": 1})

    def run():
        report = featurize_raw_dataset(raw, labels, tmp_path / f"{kind}.pkl", config, options)
        assert not report.failed
        return report

    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    benchmark.extra_info["clips"] = CLIPS
    benchmark.extra_info["clips_per_s"] = round(CLIPS / median, 2)
    benchmark.extra_info["workers"] = workers
