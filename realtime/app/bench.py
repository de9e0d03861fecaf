"""`moodlens bench`: (a) model-only latency and throughput per scoring backend, side by side;
(b) the whole live pipeline over a media file, paced and as fast as possible.

The JSON report (`--json OUT`) has these keys (docs/benchmarks.md describes each):

    {"schema": "moodlens-bench/1", "machine": {...}, "command": str, "model": {...},
     "window": {"seconds", "text_tokens", "audio_frames", "vision_frames"},
     "backends": [{"backend", "available", "reason", "device", "build_s", "builds", "max_abs_diff_vs_eager",
                   "latency_ms": {"p50", "p95", "p99", "mean", "min", "max"}, "cpu_ms": {"p50", "p95"},
                   "iterations",
                   "throughput": [{"batch", "ms_per_batch", "samples_per_s"}]}],
     "pipeline": [{"media", "pace", "backend", "duration_s", "wall_s", "real_time_factor",
                   "windows", "windows_dropped", "windows_merged", "frames_dropped",
                   "stage_ms": {"asr"|"features"|"model"|"face": {"p50", "p95"}},
                   "end_of_utterance_to_score_ms": {"p50", "p95", "p99", "max"},
                   "end_of_utterance_to_score_ms_by_third": [first, middle, last],
                   "speech_end_to_score_ms": {"p50", "p95", "p99", "max"},
                   "speech_end_to_score_ms_by_third": [first, middle, last],
                   "stages_ms": {"vad"|"queue"|"asr"|"asr_wait"|"score_wait"|"features"|"model": {"p50", "p95"}},
                   "speculation": {"speculative_silence_s", "fires_after_s", "emitted", "started", "used", "discarded", "skipped",
                                   "wasted_asr_ms", "wasted_cpu_ms"},
                   "interims": {"every_s", "emitted", "skipped"}, "vad": {"min_silence_s", "pad_s"}, "asr_cpu_threads",
                   "per_window": [{"id", "speculative_chunk", "speculative_routed", "speculative_faces",
                                   "speculative_scored", "final_chunk", "final_routed", "ready", "asr_start",
                                   "asr_kind", "asr_ms", "speculative_busy", "final_busy", "other_asr_ms",
                                   "jobs": [[kind, start, end]]}],   # ms after speech end
                   "cpu_percent", "rss_mb": {"start", "peak", "end"}, "rss_slope_mb_per_min"}]}
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moodlens.core.schema import BACKEND_NAMES
from moodlens.realtime.scoring.backends import BackendOptions, availability, resolve_device
from moodlens.core.errors import BackendError, ConfigError, MoodlensError
from moodlens.core.options import Options

SCHEMA = "moodlens-bench/2"   # 2: speech_end_to_score_ms, stage breakdown, speculation / interim counters
PAPER_MS_PER_SAMPLE = 265.3   # HCRL-MFD paper's reported inference time per sample


@dataclass
class BenchOptions(Options):
    checkpoint: str = "default"            # "default", a checkpoint path; see `model`
    model: str | None = None               # a zoo model name: benchmark it untrained (latency only)
    backends: list[str] | None = None      # None = every backend available on the device
    device: str | None = None
    window_seconds: float = 3.0            # the typical utterance window scored at batch 1
    iterations: int = 100                  # timed runs per backend at batch 1
    warmup: int = 10                       # untimed runs after the build
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32])   # throughput runs
    throughput_iterations: int = 20
    media: str | None = None               # None = the bundled demo clip
    paces: list[str] = field(default_factory=lambda: ["fast", "realtime"])
    pipeline_backend: str = "auto"
    ort_quantize: str | None = None               # None = backends.yaml's; "int8" or "none"
    speculative_silence_s: float | None = None   # None = the live config's; 0 = no speculation
    interim_every_s: float | None = None          # None = the live config's; 0 = no interim transcripts
    min_silence_s: float | None = None            # None = the live config's VAD min_silence_s
    asr_cpu_threads: int | None = None            # None = the live config's Whisper cpu_threads
    run_model: bool = True
    run_pipeline: bool = True

    def check(self, where: str = "bench options") -> None:
        for name in self.backends or []:
            if name not in BACKEND_NAMES:
                raise ConfigError(f"Unknown backend '{name}' in --backends; choose from {', '.join(BACKEND_NAMES)}.")
        for pace in self.paces:
            if pace not in ("fast", "realtime"):
                raise ConfigError(f"Unknown pace '{pace}'; use fast or realtime.")
        if self.iterations < 1 or self.warmup < 0 or self.throughput_iterations < 1:
            raise ConfigError("--iterations and --throughput-iterations must be at least 1, --warmup at least 0.")
        if any(b < 1 for b in self.batch_sizes):
            raise ConfigError("--batch-sizes must be positive whole numbers.")
        if self.window_seconds <= 0:
            raise ConfigError("--window-seconds must be positive.")


# ---- helpers ---------------------------------------------------------------------------------
def percentiles(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        return {}
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3),
            "min": round(float(a.min()), 3), "max": round(float(a.max()), 3)}


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "os": f"{platform.system()} {platform.release()}", "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemorySampler:
    """Samples this process's resident memory every `interval` seconds on a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.samples: list[float] = []
        self.times: list[float] = []       # seconds since start, one per sample of the loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="moodlens-bench-mem", daemon=True)

    def _loop(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.times.append(time.monotonic() - t0)
            self.samples.append(rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.samples.append(rss_mb())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_mb())

    def summary(self) -> dict[str, float]:
        return {"start": round(self.samples[0], 1), "peak": round(max(self.samples), 1),
                "end": round(self.samples[-1], 1)}


def load_bench_model(options: BenchOptions) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(model, featurizer config, description). Falls back to an untrained hcrl_mfd when the
    default weights are not installed: latency does not depend on the weight values."""
    from moodlens.models import build_model

    torch.manual_seed(0)  # untrained weights: the same every run, so exported files are reused
    if options.model:
        model = build_model(options.model).eval()
        return model, None, {"name": options.model, "weights": "untrained (latency only)",
                             "parameters": sum(p.numel() for p in model.parameters())}
    from moodlens.models.checkpoint import load_checkpoint

    try:
        loaded = load_checkpoint(options.checkpoint, device="cpu")
    except MoodlensError as err:
        if options.checkpoint != "default":
            raise
        model = build_model("hcrl_mfd").eval()
        return model, None, {"name": "hcrl_mfd", "weights": f"untrained: {err}",
                             "parameters": sum(p.numel() for p in model.parameters())}
    return loaded.model, loaded.featurizer_config, {
        "name": loaded.model_name, "weights": str(loaded.path),
        "parameters": sum(p.numel() for p in loaded.model.parameters())}


def make_progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


# ---- (a) model-only --------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], n: int, sync: Callable[[], None], tick: Callable[[], None],
               cpu_times: list[float] | None = None) -> list[float]:
    """Wall ms per call; with `cpu_times`, also this process's CPU ms per call (all its threads),
    which a busy shared machine inflates far less than wall time."""
    times = []
    for _ in range(n):
        cpu0 = time.process_time()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
        if cpu_times is not None:
            cpu_times.append((time.process_time() - cpu0) * 1000)
        tick()
    return times


def parity_with_eager(scorer, options: BenchOptions) -> float:
    """Largest |difference| from eager PyTorch over all four outputs, on a ragged batch of 3
    (one row without audio), so every bench run also checks that its backends agree."""
    from moodlens.realtime.scoring.backends import EagerBackend

    batch = scorer.typical_batch(3, options.window_seconds, seed=1)
    present = batch.present.clone()
    present[0, 1] = False
    mask = batch.audio_mask.clone()
    mask[1, mask.shape[1] // 2:] = False
    batch = batch.replace(present=present, audio_mask=mask)
    reference = EagerBackend(scorer.model, scorer.device, scorer.options)(batch)
    out = scorer.backend(batch)
    return float(f"{max(float((a - b).abs().max()) for a, b in zip(out, reference)):.3g}")


def bench_backend(name: str, model, featurizer_config, options: BenchOptions, backend_options: BackendOptions,
                  device: torch.device, progress: Progress) -> dict[str, Any]:
    from moodlens.realtime.scoring.scorer import Scorer

    ok, reason = availability(name, device)
    entry: dict[str, Any] = {"backend": name, "available": ok, "reason": reason, "device": str(device)}
    if not ok:
        entry["reason"] = f"unavailable: {reason}"
        return entry
    task = progress.add_task(f"{name}: building", total=None)
    start = time.perf_counter()
    try:
        scorer = Scorer.from_model(model, featurizer_config, backend=name, device=str(device),
                                   options=backend_options, quiet=True)
        batch = scorer.typical_batch(1, options.window_seconds)
        scorer.backend(batch)   # first run: compile / export / engine build happens here or above
    except BackendError as err:
        progress.remove_task(task)
        entry.update(available=False, reason=str(err))
        return entry
    entry["build_s"] = round(time.perf_counter() - start, 2)
    entry["max_abs_diff_vs_eager"] = parity_with_eager(scorer, options)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    total = options.warmup + options.iterations + len(options.batch_sizes) * options.throughput_iterations
    progress.update(task, description=f"{name}: timing", total=total, completed=0)
    tick = lambda: progress.advance(task)  # noqa: E731
    time_calls(lambda: scorer.backend(batch), options.warmup, sync, tick)
    cpu_ms: list[float] = []
    latencies = time_calls(lambda: scorer.backend(batch), options.iterations, sync, tick, cpu_ms)
    quantized_timed = getattr(scorer.backend, "quantized", False)   # before the throughput rows, which may switch it
    entry["latency_ms"] = percentiles(latencies)
    entry["cpu_ms"] = {q: percentiles(cpu_ms)[q] for q in ("p50", "p95")}
    entry["iterations"] = options.iterations
    throughput = []
    for b in options.batch_sizes:
        big = scorer.typical_batch(b, options.window_seconds)
        scorer.backend(big)  # build / warm this batch bucket outside the timing
        ms = time_calls(lambda: scorer.backend(big), options.throughput_iterations, sync, tick)
        median = float(np.median(ms))
        throughput.append({"batch": b, "ms_per_batch": round(median, 3),
                           "samples_per_s": round(b * 1000 / median, 1)})
    entry["throughput"] = throughput
    if name == "onnxruntime":
        # What the batch-1 rows above ran; a later switch to float (a shadowed throughput call) is int8_rejected.
        entry["quantize"] = backend_options.onnxruntime.quantize if quantized_timed else "none"
        if getattr(scorer.backend, "int8_rejected", None):
            entry["int8_rejected"] = scorer.backend.int8_rejected
        entry["optimization_level"] = backend_options.onnxruntime.optimization_level
        if getattr(scorer.backend, "parity", None) is not None:
            entry["int8_max_abs_diff_vs_float"] = float(f"{scorer.backend.parity:.3g}")
        if getattr(scorer.backend, "live_parity", None) is not None:   # the shadowed calls (warm-up, timed)
            entry["int8_shadow_max_abs_diff"] = float(f"{scorer.backend.live_parity:.3g}")
            entry["int8_shadow_checks"] = scorer.backend.shadow_checks
    entry["builds"] = scorer.backend.builds
    entry["build_s_total"] = round(scorer.backend.build_seconds, 2)
    progress.update(task, description=f"{name}: done")
    return entry


def bench_backend_options(options: BenchOptions) -> BackendOptions:
    import dataclasses

    backend_options = BackendOptions.load()
    if options.ort_quantize is not None:
        backend_options.onnxruntime = dataclasses.replace(backend_options.onnxruntime, quantize=options.ort_quantize)
    return backend_options


def bench_models(options: BenchOptions, console: Console, progress: Progress) -> dict[str, Any]:
    device = resolve_device(options.device)
    backend_options = bench_backend_options(options)
    model, featurizer_config, description = load_bench_model(options)
    if description["weights"].startswith("untrained"):
        console.print(f"[yellow]note:[/] benchmarking {description['name']} with {description['weights']}",
                      highlight=False)
    names = options.backends or list(BACKEND_NAMES)
    results = []
    for name in names:
        results.append(bench_backend(name, model, featurizer_config, options, backend_options, device, progress))
    from moodlens.realtime.scoring.scorer import Scorer

    shapes = Scorer.from_model(model, featurizer_config, backend="eager", device=str(device),
                               options=backend_options, quiet=True).typical_batch(1, options.window_seconds)
    window = {"seconds": options.window_seconds, "text_tokens": int(shapes.text_ids.shape[1]),
              "audio_frames": int(shapes.audio.shape[1]), "vision_frames": int(shapes.vision.shape[1])}
    return {"model": description, "window": window, "backends": results, "device": device}


# ---- (b) pipeline ----------------------------------------------------------------------------
def default_media() -> Path:
    from moodlens.core.assets import DEMO_CLIP, resolve_path

    return resolve_path(DEMO_CLIP)


def bench_pipeline(media: Path, pace: str, options: BenchOptions, progress: Progress, scorer=None) -> dict[str, Any]:
    """Run the live pipeline over `media` once; per-stage and end-of-utterance→score latency,
    real-time factor (wall / media duration), CPU use and resident memory."""
    import dataclasses

    from moodlens.realtime.app.live_config import load_live_config
    from moodlens.realtime.engine.build import build_pipeline
    from moodlens.realtime.capture.media import MediaFileSource

    config = load_live_config()
    task = progress.add_task(f"pipeline {pace}: loading", total=None)
    scorer = scorer or pipeline_scorer(options)
    source = MediaFileSource(media, pace=pace, video_fps=config.sources.video_fps, origin=0.0,
                             max_size=config.sources.max_size)
    duration = float(getattr(source, "duration", 0.0) or 0.0)
    pipeline_options = dataclasses.replace(config.pipeline, realtime=pace == "realtime")
    vad = config.vad
    if options.speculative_silence_s is not None:
        vad = dataclasses.replace(vad, speculative_silence_s=options.speculative_silence_s)
    if options.interim_every_s is not None:
        vad = dataclasses.replace(vad, interim_every_s=options.interim_every_s)
    if options.min_silence_s is not None:
        vad = dataclasses.replace(vad, min_silence_s=options.min_silence_s)
    asr = config.asr
    if options.asr_cpu_threads is not None:
        asr = dataclasses.replace(asr, cpu_threads=options.asr_cpu_threads)
    pipeline = build_pipeline(source, scorer, pipeline_options, vad=vad, asr=asr, features=config.features)
    progress.update(task, description=f"pipeline {pace}: {media.name}", total=round(duration, 1) or None,
                    completed=0)
    events = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    with MemorySampler() as memory:
        try:
            for event in pipeline.events():
                events.append(event)
                progress.update(task, completed=min(round(event.end, 1), duration))
        finally:
            pipeline.stop()
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    progress.update(task, completed=round(duration, 1), description=f"pipeline {pace}: done")
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    stage: dict[str, list[float]] = {"asr": [], "features": [], "model": []}
    totals, felt = [], []
    # Speech end -> score, stage by stage, on the media clock (see realtime/engine/pipeline.py).
    parts: dict[str, list[float]] = {k: [] for k in ("vad", "queue", "asr", "asr_wait", "score_wait", "features",
                                                     "model")}
    for e in events:
        for key in stage:
            if key in e.latency_ms:
                stage[key].append(float(e.latency_ms[key]))
        if e.latency_ms.get("total"):
            totals.append(float(e.latency_ms["total"]))
        lat = e.latency_ms
        if lat.get("speech_end") is not None:
            felt.append(float(lat["speech_end"]))
            for key in ("vad", "queue", "asr", "asr_wait", "features", "model"):
                if key in lat:
                    parts[key].append(float(lat[key]))
            if "asr_wait" in lat:
                parts["score_wait"].append(max(0.0, lat["total"] - lat["asr_wait"] - lat["features"] - lat["model"]))
    stage_ms = {k: {q: v[q] for q in ("p50", "p95")} for k, vals in stage.items() if (v := percentiles(vals))}
    face = list(pipeline.stats.latency.get("face", []))
    if face:
        stage_ms["face"] = {q: percentiles(face)[q] for q in ("p50", "p95")}
    snap = pipeline.stats.snapshot()
    total = percentiles(totals)
    felt_q = percentiles(felt)

    def thirds(values):
        return [round(float(np.median(part)), 1) if len(part) else None
                for part in np.array_split(np.asarray(values), 3)] if len(values) >= 3 else []

    per_window = window_timelines(pipeline)
    stamps, rss = memory.times, memory.samples[1:-1]
    slope = (float(np.polyfit(np.asarray(stamps) / 60.0, np.asarray(rss), 1)[0])
             if len(rss) >= 10 and len(stamps) == len(rss) else None)
    return {
        "media": str(media), "pace": pace, "backend": scorer.backend_name, "duration_s": round(duration, 2),
        "wall_s": round(wall, 2), "real_time_factor": round(wall / duration, 3) if duration else None,
        "windows": len(events), "windows_dropped": snap.windows_dropped, "windows_merged": snap.windows_merged,
        "frames_dropped": snap.frames_dropped, "stage_ms": stage_ms,
        "end_of_utterance_to_score_ms": {q: total[q] for q in ("p50", "p95", "p99", "max")} if total else {},
        # Median latency over the first, middle and last third of the windows: a growing lag shows here.
        "end_of_utterance_to_score_ms_by_third": [round(float(np.median(part)), 1) if len(part) else None
                                                  for part in np.array_split(np.asarray(totals), 3)]
        if len(totals) >= 3 else [],
        "speech_end_to_score_ms": {q: felt_q[q] for q in ("p50", "p95", "p99", "max")} if felt_q else {},
        "speech_end_to_score_ms_by_third": thirds(felt),
        "stages_ms": {k: {q: percentiles(v)[q] for q in ("p50", "p95")} for k, v in parts.items() if v},
        "speculation": {"speculative_silence_s": vad.speculative_silence_s,
                        # what it fires after: never before pad_s (the final's audio runs pad_s past the speech)
                        "fires_after_s": pipeline.windower.speculation_after_s if pipeline.windower else None,
                        "emitted": snap.spec_emitted,
                        "started": snap.spec_started, "used": snap.spec_used, "discarded": snap.spec_discarded,
                        "skipped": snap.spec_skipped, "wasted_asr_ms": round(snap.spec_wasted_ms, 1),
                        "wasted_cpu_ms": round(snap.spec_wasted_cpu_ms, 1)},
        "interims": {"every_s": vad.interim_every_s, "emitted": snap.interims_emitted,
                     "skipped": snap.interims_skipped},
        "vad": {"min_silence_s": vad.min_silence_s, "pad_s": vad.pad_s},
        "asr_cpu_threads": getattr(getattr(pipeline, "transcriber", None), "cpu_threads", None),
        "per_window": per_window,
        "cpu_percent": round(100 * cpu_s / wall, 1) if wall else None,
        "cpu_cores": os.cpu_count(), "rss_mb": memory.summary(),
        # Least-squares slope of resident memory over the run (flat: near 0).
        "rss_slope_mb_per_min": round(slope, 2) if slope is not None else None,
    }


def window_timelines(pipeline) -> list[dict[str, Any]]:
    """Each scored utterance's steps in ms after its speech end (the pipeline's `trace`): when the
    speculative window's chunk arrived and when it reached Whisper's slots (the difference is the
    face gate), when Whisper started and finished it, when it was pre-scored; the same for the
    final; when the score was ready; the Whisper time of other jobs (interims, other windows)
    that ran between the speech end and the start of this utterance's decode (`other_asr_ms`); and
    this utterance's Whisper jobs."""
    out = []
    jobs = list(pipeline.asr_jobs)
    for wid, entry in list(pipeline.trace.items()):
        t0 = entry.get("speech_end_mono")
        if t0 is None or "ready" not in entry:
            continue
        rel = {k: round((v - t0) * 1000, 1) for k, v in entry.items()
               if isinstance(v, float) and k not in ("speech_end_mono",)}
        mine = [(kind, s, e) for kind, i, s, e in jobs if i == wid and kind in ("speculative", "final") and s >= t0 - 0.05]
        own_start = mine[0][1] if mine else entry["ready"]
        rel.update({"speculative_busy": entry.get("speculative_busy"), "final_busy": entry.get("final_busy")})
        if mine:
            rel["asr_start"], rel["asr_kind"] = round((mine[0][1] - t0) * 1000, 1), mine[0][0]
            rel["asr_ms"] = round((mine[0][2] - mine[0][1]) * 1000, 1)
        # Whisper busy on something else after the speech end, before this utterance's decode began.
        blocking = [(kind, i, max(s, t0), min(e, own_start)) for kind, i, s, e in jobs
                    if not (i == wid and kind in ("speculative", "final")) and e > t0 and s < own_start]
        rel["other_asr_ms"] = round(sum((e - s) * 1000 for _, _, s, e in blocking), 1)
        # Whisper jobs of this utterance (interims, the speculation, the final): kind, start, end.
        rel["jobs"] = [(kind, round((s - t0) * 1000), round((e - t0) * 1000)) for kind, i, s, e in jobs
                       if i == wid]
        out.append({"id": wid, **rel})
    return out


def pipeline_scorer(options: BenchOptions):
    """The scorer the pipeline runs: the benchmarked checkpoint (or model) on `pipeline_backend`, warmed up."""
    from moodlens.realtime.scoring.scorer import Scorer

    model, featurizer_config, _ = load_bench_model(options)
    scorer = Scorer.from_model(model, featurizer_config, backend=options.pipeline_backend, device=options.device,
                               options=bench_backend_options(options), quiet=True)
    scorer.warmup()
    return scorer


# ---- the whole run ---------------------------------------------------------------------------
def run_bench(options: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    options.check()
    console = console or Console(stderr=True)
    device = resolve_device(options.device)
    report: dict[str, Any] = {"schema": SCHEMA, "command": " ".join(["moodlens", *sys.argv[1:]])
                              if Path(sys.argv[0]).name == "moodlens" else "moodlens bench",
                              "machine": machine_info(device), "paper_ms_per_sample": PAPER_MS_PER_SAMPLE,
                              "backends": [], "pipeline": []}
    with make_progress(console) as progress:
        if options.run_model:
            result = bench_models(options, console, progress)
            report.update(model=result["model"], window=result["window"], backends=result["backends"])
        if options.run_pipeline:
            media = Path(options.media).expanduser() if options.media else default_media()
            if not media.exists():
                from moodlens.core.errors import MediaError

                raise MediaError(f"The media file {media} does not exist.")
            scorer = pipeline_scorer(options)
            for pace in options.paces:
                try:
                    entry = bench_pipeline(media, pace, options, progress, scorer=scorer)
                except MoodlensError as err:  # keep what was measured; say what failed
                    console.print(f"[red]pipeline {pace} failed:[/] {err}", highlight=False)
                    entry = {"media": str(media), "pace": pace, "error": str(err)}
                report["pipeline"].append(entry)
    return report


def render(report: dict[str, Any]) -> Group:
    parts = []
    if report.get("backends"):
        window = report.get("window", {})
        title = (f"Model-only latency, batch 1, {window.get('seconds', '?')} s window "
                 f"({window.get('text_tokens')} tokens, {window.get('audio_frames')} audio frames, "
                 f"{window.get('vision_frames')} face frames) — {report.get('model', {}).get('name', '?')} on "
                 f"{report['machine'].get('gpu') or report['machine']['cpu']}")
        table = Table(title=title, title_justify="left")
        for col in ("backend", "p50 ms", "p95 ms", "p99 ms", "CPU ms", "build s", "samples/s @ batch",
                    "vs paper"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        skipped = []
        for b in report["backends"]:
            if not b.get("available") or "latency_ms" not in b:
                table.add_row(b["backend"], "—", "—", "—", "—", "—", "—", "not run")
                skipped.append(f"{b['backend']}: {b['reason']}")
                continue
            lat = b["latency_ms"]
            tput = ", ".join(f"{t['samples_per_s']:.0f} @ {t['batch']}" for t in b.get("throughput", []))
            ratio = report.get("paper_ms_per_sample", PAPER_MS_PER_SAMPLE) / lat["p50"] if lat.get("p50") else 0
            versus = f"{ratio:.1f}× faster" if ratio >= 1 else f"{1 / ratio:.1f}× slower" if ratio else "—"
            cpu = b.get("cpu_ms", {}).get("p50")
            table.add_row(b["backend"], f"{lat['p50']:.2f}", f"{lat['p95']:.2f}", f"{lat['p99']:.2f}",
                          f"{cpu:.2f}" if cpu is not None else "—", f"{b.get('build_s', 0):.1f}", tput, versus)
        notes = ["vs paper: p50 against the 265.3 ms/sample HCRL-MFD reports; CPU ms: process CPU time per call (p50)"]
        table.caption = "\n".join(notes + skipped)
        table.caption_justify = "left"
        parts.append(table)
    if report.get("pipeline"):
        runs = report["pipeline"]
        media = Path(runs[0].get("media", "?")).name
        table = Table(title=f"Whole pipeline over {media}", title_justify="left")
        table.add_column("measure")
        for p in runs:
            table.add_column(f"{p['pace']} ({p.get('backend', '?')})", justify="right")

        def stage(p, name):
            st = p.get("stage_ms", {}).get(name)
            return f"{st['p50']:.0f} / {st['p95']:.0f}" if st else "—"

        def eou(p, key="end_of_utterance_to_score_ms"):
            e = p.get(key) or {}
            return f"{e['p50']:.0f} / {e['p95']:.0f} / {e['p99']:.0f}" if e else "—"

        def spec(p):
            s = p.get("speculation") or {}
            return (f"{s['used']}/{s['emitted']} used, {s['discarded']} wasted ({s['wasted_asr_ms']:.0f} ms)"
                    if s.get("speculative_silence_s") else "off")

        rows = [
            ("media s / wall s", lambda p: f"{p['duration_s']:.1f} / {p['wall_s']:.1f}"),
            ("real-time factor", lambda p: f"{p['real_time_factor']:.2f}" if p.get("real_time_factor") else "—"),
            ("windows scored", lambda p: str(p["windows"])),
            ("speech end → score ms p50/p95/p99", lambda p: eou(p, "speech_end_to_score_ms")),
            ("end of utterance → score ms p50/p95/p99", eou),
            ("speculation", spec),
            ("interim events (skipped)", lambda p: f"{p['interims']['emitted']} ({p['interims']['skipped']})"
             if p.get("interims") else "—"),
            ("ASR ms p50/p95", lambda p: stage(p, "asr")),
            ("features ms p50/p95", lambda p: stage(p, "features")),
            ("model ms p50/p95", lambda p: stage(p, "model")),
            ("face ms p50/p95", lambda p: stage(p, "face")),
            ("CPU % (of one core)", lambda p: f"{p['cpu_percent']:.0f} of {100 * (p.get('cpu_cores') or 1)}"
             if p.get("cpu_percent") is not None else "—"),
            ("RSS MB start/peak/end", lambda p: "{start:.0f} / {peak:.0f} / {end:.0f}".format(**p["rss_mb"])),
            ("dropped windows / frames", lambda p: f"{p['windows_dropped']} / {p['frames_dropped']}"),
        ]
        for label, cell in rows:
            table.add_row(label, *(f"[red]{p['error']}[/]" if "error" in p else cell(p) for p in runs))
        parts.append(table)
    return Group(*parts)


def save_plot(report: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [b for b in report.get("backends", []) if "latency_ms" in b]
    pipes = report.get("pipeline", [])
    ncols = (1 if timed else 0) + (1 if pipes else 0)
    if ncols == 0:
        raise ConfigError("Nothing was measured, so there is nothing to plot.")
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    col = 0
    if timed:
        ax = axes[0][col]
        names = [b["backend"] for b in timed]
        x = np.arange(len(names))
        for offset, key in ((-0.25, "p50"), (0.0, "p95"), (0.25, "p99")):
            ax.bar(x + offset, [b["latency_ms"][key] for b in timed], width=0.25, label=key)
        ax.set_xticks(x, names)
        ax.set_ylabel("ms per window (batch 1)")
        ax.set_title(f"Model-only latency: {report.get('model', {}).get('name', '')}")
        ax.legend()
        col += 1
    if pipes:
        ax = axes[0][col]
        labels = [f"{p['pace']}\n{p['backend']}" for p in pipes]
        x = np.arange(len(labels))
        for offset, (name, key) in zip((-0.3, -0.1, 0.1, 0.3), (
                ("speech end", "p50"), ("speech end", "p95"), ("end of utterance", "p50"), ("end of utterance", "p95"))):
            field = "speech_end_to_score_ms" if name == "speech end" else "end_of_utterance_to_score_ms"
            ax.bar(x + offset, [(p.get(field) or {}).get(key, 0) for p in pipes], width=0.2,
                   label=f"{name} → score {key}")
        ax.set_xticks(x, labels)
        ax.set_ylabel("ms")
        ax.set_title("Pipeline latency")
        ax.legend()
    return _save_figure(fig, path)


STAGE_ORDER = (("vad", "VAD decision (silence)"), ("queue", "queue wait"), ("asr_after_close", "ASR (after close)"),
               ("score_wait", "score queue"), ("features", "features"), ("model", "model"))


def save_stage_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Stacked bar per pipeline run: the median speech end -> score, stage by stage (docs/img)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [p for p in report.get("pipeline", []) if p.get("stages_ms")]
    if not runs:
        raise ConfigError("No pipeline run has stage timings, so there is nothing to plot.")
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.6 * len(runs)))
    labels = [p.get("label") or f"{p['pace']} {p['backend']}" for p in runs]
    left = np.zeros(len(runs))
    for key, name in STAGE_ORDER:
        if key == "asr_after_close":    # what Whisper adds after the window closed (less with speculation)
            vals = [max(0.0, p["stages_ms"].get("asr_wait", {}).get("p50", 0) - p["stages_ms"].get("queue", {}).get("p50", 0))
                    for p in runs]
        else:
            vals = [p["stages_ms"].get(key, {}).get("p50", 0) for p in runs]
        ax.barh(labels, vals, left=left, label=name)
        left += np.asarray(vals)
    for i, p in enumerate(runs):
        felt = (p.get("speech_end_to_score_ms") or {}).get("p50")
        if felt:
            ax.plot([felt], [i], "k|", markersize=18)
    ax.set_xlabel("ms from the end of speech (medians per stage; | = median speech end → score)")
    ax.set_title("Where the time goes, speech end → score")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save_figure(fig, path)


def save_timeline_plot(report: dict[str, Any], path: str | Path) -> Path:
    """One row per scored utterance of the paced run(s): what happened after its speech end (ms) —
    the VAD hearing pad_s of silence, the speculative decode on Whisper (and any interim decoding
    beside it), the faces reaching the window, min_silence_s confirming the end, the score ready."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(p, w) for p in report.get("pipeline", []) if p.get("pace") == "realtime" for w in p.get("per_window") or []]
    if not rows:
        raise ConfigError("No paced pipeline run has per-window timings, so there is no timeline to plot.")
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.32 * len(rows)))
    colours = {"vad": "#bbbbbb", "wait": "#f4a259", "speculative": "#5b8e7d", "final": "#8cb369", "interim": "#bc4b51",
               "score": "#3d5a80"}
    used = set()

    def bar(y, start, end, key, label, height=0.6):
        if end is None or start is None or end <= start:
            return
        ax.barh(y, end - start, left=start, height=height, color=colours[key],
                label=None if key in used else label)
        used.add(key)

    for y, (p, w) in enumerate(rows):
        chunk = w.get("speculative_chunk", w.get("final_chunk"))
        bar(y, 0, chunk, "vad", "VAD: silence until the window's audio is in")
        start, asr_ms = w.get("asr_start"), w.get("asr_ms")
        bar(y, chunk, start, "wait", "waiting (face gate / Whisper busy)")
        if start is not None and asr_ms:
            bar(y, start, start + asr_ms, w.get("asr_kind", "final"), f"Whisper ({w.get('asr_kind', 'final')})")
            bar(y, start + asr_ms, w["ready"], "score", "features + model, score queue")
        for kind, s, e in w.get("jobs", []):
            if kind == "preview" and e > 0:
                bar(y + 0.36, max(s, 0), e, "interim", "interim decode of the utterance", height=0.12)
        for key, marker, label in (("final_chunk", "k|", "min_silence_s confirms the end"),
                                   ("speculative_faces", "bx", "faces of the window all in")):
            if w.get(key) is not None:
                ax.plot([w[key]], [y], marker, markersize=10, label=None if key in used else label)
                used.add(key)
        ax.plot([w["ready"]], [y], "k*", markersize=7, label=None if "ready" in used else "score ready")
        used.add("ready")
    ax.set_yticks(range(len(rows)), [f"#{w['id']}" for _, w in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms after the end of speech")
    ax.set_title("Each utterance, speech end → score (paced)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(report, default=str))
    path.write_text(json.dumps(clean, indent=2) + "\n")
    return path
