"""Paced soak run: the live pipeline over a media file looped for a long time, at real time, in one
process, as `moodlens run FILE --pace realtime` would score it (a script, not a test: it runs for
an hour). Reports what a long session needs to hold (docs/reliability.md, "Soak run"):

    windows scored, real time kept (media seconds delivered / wall seconds), memory (RSS) slope in
    MB/hour from a least-squares line, and end-of-utterance -> score latency plus lag (wall time
    minus the window's end on the session clock) by thirds of the run.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/soak.py --minutes 60 --threads 1 --out /tmp/soak.json

The camera stand-in is the media file (default: the bundled demo clip, 26.8 s, looped): frames and
audio are released at their own pace, like a camera and a microphone. Ctrl-C (or SIGTERM) stops
early and still writes the report, saying how long it really ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class LoopSource:
    """A media file replayed back to back on one continuous session clock, paced at real time."""

    def __init__(self, path: Path, loops: int, video_fps: float, max_size):
        from moodlens.core.types import SourceStats
        from moodlens.realtime.capture.media import MediaFileSource

        # Decoded as fast as asked for and paced here against one clock for the whole run: a source paced per
        # loop re-anchors at each loop's start, so the time to reopen the file (~34 ms a loop) piled up as lag.
        self._make = lambda origin: MediaFileSource(path, pace="fast", video_fps=video_fps, origin=origin,
                                                    max_size=max_size)
        first = self._make(0.0)
        self.has_audio, self.has_video = first.has_audio, first.has_video
        self.clip_s = first.duration
        first.close()
        self.loops = loops
        self.duration = loops * self.clip_s
        self.stats = SourceStats()
        self._stop = threading.Event()
        self._current = None
        self.base = None

    def __iter__(self):
        self.base = time.monotonic()
        for k in range(self.loops):
            if self._stop.is_set():
                return
            # each loop starts on the session clock where the previous one ended
            self._current = self._make(self.base + k * self.clip_s)
            self._current.stats = self.stats
            for item in self._current:
                # items are stamped on the monotonic clock (origin = the loop's start): release each at its time
                if self._stop.wait(max(0.0, item.t - time.monotonic())):
                    return
                yield item
            self._current.close()

    def close(self) -> None:
        self._stop.set()
        if self._current is not None:
            self._current.close()


def slope_per_hour(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 3:
        return None
    xs, ys = [s[0] / 3600 for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else None


def thirds(rows: list[dict], key: str) -> list[dict]:
    out = []
    n = len(rows)
    for i in range(3):
        part = [r[key] for r in rows[i * n // 3:(i + 1) * n // 3]]
        if not part:
            out.append({"windows": 0})
            continue
        part.sort()
        out.append({"windows": len(part), "median": round(statistics.median(part), 1),
                    "p95": round(part[min(len(part) - 1, int(0.95 * len(part)))], 1), "max": round(part[-1], 1)})
    return out


def markdown(result: dict) -> str:
    """The report as the table docs/reliability.md shows (`--report soak.json`)."""
    def third(rows, i):
        r = rows[i]
        return f"{r['median']:.0f} / {r['p95']:.0f} / {r['max']:.0f}" if r.get("windows") else "–"

    rss = result["rss_mb"]
    lines = [
        f"| ran | {result['ran_minutes']:.1f} of {result['planned_minutes']:.0f} planned minutes"
        f" ({'finished' if result['finished'] else 'stopped early' if result['interrupted'] else 'a snapshot of the run in progress'}) |",
        f"| windows scored | {result['windows']} ({result['media_s_scored']:.0f} s of media) |",
        f"| real time kept | {result['real_time_kept']:.3f} (media seconds scored / wall seconds) |",
        f"| frames / windows dropped | {result['frames_dropped']} / {result['windows_dropped']} |",
        f"| RSS | first {rss['first']} MB, last {rss['last']} MB, max {rss['max']} MB; slope after 2 min "
        f"{rss['slope_mb_per_hour_after_2_min']} MB/hour |",
    ]
    for key, name in (("speech_end_to_score_ms_by_third", "speech end → score ms"),
                      ("latency_ms_by_third", "end-of-utterance → score ms"), ("lag_ms_by_third", "lag ms")):
        rows = result.get(key)
        if rows is None:      # a report written before this figure existed
            continue
        lines.append(f"| {name}, median / p95 / max by thirds | " + " · ".join(third(rows, i) for i in range(3)) + " |")
    m = result["machine"]
    lines.append(f"| machine | {m['cpus']} vCPUs, {m['threads']} thread(s), backend {m['backend']}, "
                 f"1-min load average at the end {m['load_avg_1m']} |")
    return "| measure | value |\n|---|---|\n" + "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", default=None, help="media file (default: the bundled demo clip)")
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--threads", type=int, default=1, help="torch and Whisper CPU threads (default 1)")
    parser.add_argument("--backend", default="eager", help="scoring backend (default eager)")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--out", default="soak.json", help="report JSON (rewritten every minute)")
    parser.add_argument("--report", metavar="JSON", help="print an earlier run's report as a markdown table")
    args = parser.parse_args(argv)
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return 0

    import torch

    from moodlens.core.assets import DEMO_CLIP, resolve_path
    from moodlens.realtime.app.live_config import load_live_config
    from moodlens.realtime.app.session import build_scorer
    from moodlens.realtime.engine.build import build_pipeline

    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    media = Path(args.media) if args.media else resolve_path(DEMO_CLIP)
    config = load_live_config(None)
    config.engine.backend, config.engine.checkpoint = args.backend, args.checkpoint
    config.asr = dataclasses.replace(config.asr, cpu_threads=args.threads)
    first = LoopSource(media, 1, config.sources.video_fps, config.sources.max_size)
    loops = max(1, int(args.minutes * 60 / first.clip_s + 0.999))
    source = LoopSource(media, loops, config.sources.video_fps, config.sources.max_size)
    scorer = build_scorer(config.engine)
    pipeline = build_pipeline(source, scorer, dataclasses.replace(config.pipeline, realtime=True), vad=config.vad,
                        asr=config.asr, features=config.features)

    rows: list[dict] = []
    memory: list[tuple[float, float]] = []
    started = time.monotonic()
    stop_sampling = threading.Event()

    def sample_memory():
        while not stop_sampling.is_set():
            memory.append((time.monotonic() - started, rss_mb()))
            stop_sampling.wait(15.0)

    threading.Thread(target=sample_memory, daemon=True).start()
    interrupted = False
    last_write = started

    def report(final: bool) -> dict:
        wall = time.monotonic() - (source.base or started)
        media_s = (rows[-1]["end_s"] if rows else 0.0)
        warm = [m for m in memory if m[0] >= 120] or memory      # after models and caches have loaded
        result = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "media": str(media), "clip_s": round(source.clip_s, 2), "planned_minutes": args.minutes,
            "ran_minutes": round(wall / 60, 2), "finished": final and not interrupted, "interrupted": interrupted,
            "windows": len(rows), "media_s_scored": round(media_s, 1),
            "real_time_kept": round(media_s / wall, 4) if wall else None,
            "frames_dropped": pipeline.stats.snapshot().frames_dropped,
            "windows_dropped": pipeline.stats.snapshot().windows_dropped,
            "rss_mb": {"first": round(memory[0][1], 1) if memory else None,
                       "last": round(memory[-1][1], 1) if memory else None,
                       "max": round(max(m[1] for m in memory), 1) if memory else None,
                       "slope_mb_per_hour_after_2_min": (round(s, 2) if (s := slope_per_hour(warm)) is not None
                                                         else None)},
            "windows_merged": sum(1 for r in rows if r["merged"] > 1),
            "speculation": (lambda st: {"emitted": st.spec_emitted, "used": st.spec_used, "discarded": st.spec_discarded,
                                        "skipped": st.spec_skipped, "wasted_asr_ms": round(st.spec_wasted_ms, 1),
                                        "prescored_used": getattr(pipeline, "prescored_used", None),
                                        "interims_emitted": st.interims_emitted,
                                        "interims_skipped": st.interims_skipped})(pipeline.stats.snapshot()),
            "latency_ms_by_third": thirds(rows, "latency_ms"),
            "speech_end_to_score_ms_by_third": thirds([r for r in rows if r["speech_end_ms"] == r["speech_end_ms"]],
                                                      "speech_end_ms"),
            "lag_ms_by_third": thirds(rows, "lag_ms"),
            "machine": {"cpus": os.cpu_count(), "threads": args.threads, "backend": pipeline.backend_name,
                        "load_avg_1m": round(os.getloadavg()[0], 2)},
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return result

    try:
        for event in pipeline.events():
            now = time.monotonic()
            end_s = event.end          # session clock: seconds since the first item (the pipeline's origin)
            rows.append({"end_s": end_s, "latency_ms": float(event.latency_ms.get("total", 0.0)),
                         # what a person waits for: last voiced sample -> score (issue 12), when known
                         "speech_end_ms": float(event.latency_ms.get("speech_end", float("nan"))),
                         "merged": int(getattr(event, "merged", 1) or 1),
                         "lag_ms": (now - source.base - end_s) * 1000})
            if now - last_write > 60:
                report(final=False)
                last_write = now
            if now - started > args.minutes * 60:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop_sampling.set()
        pipeline.stop()
    result = report(final=True)
    print(json.dumps(result, indent=2))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
