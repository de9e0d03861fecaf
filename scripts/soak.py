"""Paced soak run: the demo clip looped to `--minutes`, released at media pace like a camera and a
microphone, through the live pipeline with the live config (speculation and interims on).

Reports windows scored, merged and dropped, dropped frames, speech end -> score and end of
utterance -> score p50/p95 and their medians over the first / middle / last third of the windows
(a growing lag shows there), and the slope of resident memory (MB per minute, least squares over
samples every 0.2 s). Writes one JSON.

    .venv/bin/python scripts/soak.py --minutes 3 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def looped_clip(minutes: float, folder: Path) -> Path:
    from moodlens.realtime.app.bench import default_media

    demo = default_media()
    out = folder / f"soak_{minutes:g}min.mp4"
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is not None:
        loops = int(minutes * 60 / 26.0) + 1
        subprocess.run([ffmpeg, "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(demo), "-c", "copy",
                        "-t", str(minutes * 60), str(out)], check=True)
        return out
    return remux_looped(demo, out, minutes * 60)


def remux_looped(src: Path, out: Path, seconds: float) -> Path:
    """Without ffmpeg: PyAV copies the packets again and again, shifted by the clip's length."""
    import av

    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        pairs = {}
        for stream in inp.streams:
            if stream.type in ("video", "audio"):
                pairs[stream.index] = dst.add_stream_from_template(stream)
        length = float(inp.duration / 1_000_000) if inp.duration else 26.7
        shift = 0.0
        while shift < seconds:
            inp.seek(0)
            for packet in inp.demux():
                if packet.stream.index not in pairs or packet.pts is None:
                    continue
                tb = packet.stream.time_base
                if float(packet.pts * tb) + shift >= seconds:
                    continue
                offset = int(round(shift / tb))
                packet.pts += offset
                if packet.dts is not None:
                    packet.dts += offset
                packet.stream = pairs[packet.stream.index]
                dst.mux(packet)
            shift += length
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)

    from rich.console import Console

    from moodlens.realtime.app.bench import BenchOptions, bench_pipeline, make_progress

    with tempfile.TemporaryDirectory() as tmp:
        clip = looped_clip(args.minutes, Path(tmp))
        with make_progress(Console(stderr=True)) as progress:
            entry = bench_pipeline(clip, "realtime", BenchOptions(pipeline_backend=args.backend, run_model=False),
                                   progress)
    keys = ("duration_s", "wall_s", "real_time_factor", "windows", "windows_merged", "windows_dropped",
            "frames_dropped", "speech_end_to_score_ms", "speech_end_to_score_ms_by_third",
            "end_of_utterance_to_score_ms", "end_of_utterance_to_score_ms_by_third", "speculation", "interims",
            "rss_mb", "rss_slope_mb_per_min", "cpu_percent")
    report = {"minutes": args.minutes, **{k: entry.get(k) for k in keys}, "stages_ms": entry.get("stages_ms")}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
