"""The GPU check behind scripts/gpu_check.sh: every measurement of issue 12 on one CUDA machine, one JSON.

Pieces, each skipped with one sentence (in "skipped") when what it needs is missing, and each
timed against a budget so the whole run stays under 8 minutes:
  1. model-only, batch 1, the typical 3 s window: eager, compile (inductor + CUDA graphs),
     onnxruntime (CUDA execution provider; needs onnxruntime-gpu), tensorrt (needs torch-tensorrt);
  2. the live pipeline over the bundled demo clip, paced like a camera, speculation and interim
     transcripts on (the live config): speech end -> score p50/p95 and Whisper's share of it (needs
     faster-whisper + CTranslate2; Whisper runs on CUDA when CTranslate2 has CUDA, else on the CPU,
     which the JSON says);
  3. the same pipeline read as fast as possible (throughput).
`--dry-run` runs the same plan on the CPU with a few iterations: it checks the script, not the GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import traceback
from pathlib import Path

BUDGET_S = 450.0          # the shell wrapper kills at 470 s; each piece checks what is left


def missing(*modules: str) -> str | None:
    for name in modules:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="run the plan on the CPU with a few iterations")
    parser.add_argument("--media", default=None, help="pipeline media (default: the bundled demo clip)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report: dict = {"schema": "moodlens-gpu-check/1", "dry_run": args.dry_run, "skipped": [], "errors": [],
                    "python": platform.python_version(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)

    def save() -> None:
        report["wall_s"] = round(time.monotonic() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    def left() -> float:
        return BUDGET_S - (time.monotonic() - started)

    absent = missing("torch", "numpy", "yaml", "rich")
    if absent:
        report["skipped"].append(f"Nothing was measured: the Python module '{absent}' is missing on this machine.")
        save()
        print(report["skipped"][-1])
        return 2
    import torch

    cuda = torch.cuda.is_available()
    report["torch"] = torch.__version__
    report["cuda"] = torch.version.cuda if cuda else None
    report["gpu"] = torch.cuda.get_device_name(0) if cuda else None
    if not cuda and not args.dry_run:
        report["skipped"].append("Nothing was measured: torch sees no CUDA device here (use --dry-run to check the "
                                 "script on a CPU).")
        save()
        print(report["skipped"][-1])
        return 2
    device = "cuda" if cuda and not args.dry_run else "cpu"
    report["device"] = device

    from rich.console import Console

    from moodlens.realtime.app.bench import BenchOptions, bench_models, bench_pipeline, default_media, make_progress

    console = Console(stderr=True)
    iterations, warmup = (5, 1) if args.dry_run else (300, 30)

    # 1. model-only ----------------------------------------------------------------------------
    names = ["eager", "compile", "onnxruntime", "tensorrt"]
    if missing("onnxruntime"):
        names.remove("onnxruntime")
        report["skipped"].append("onnxruntime: not installed, so ONNX Runtime was not measured.")
    else:
        import onnxruntime

        report["onnxruntime"] = onnxruntime.__version__
        report["onnxruntime_providers"] = onnxruntime.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            names.remove("onnxruntime")
            report["skipped"].append("onnxruntime: this build has no CUDA execution provider (install "
                                     "onnxruntime-gpu), so ONNX Runtime on the GPU was not measured.")
    if missing("torch_tensorrt"):
        names.remove("tensorrt")
        report["skipped"].append("tensorrt: torch-tensorrt is not installed (it cannot travel under the 64 MiB "
                                 "cap), so TensorRT was not measured.")
    if args.dry_run and "compile" in names:
        names.remove("compile")       # an inductor C++ build costs minutes on a small CPU; the GPU run does it
        report["skipped"].append("compile: left out of the dry run (an inductor CPU build takes minutes).")
    options = BenchOptions(backends=names, device=device, iterations=iterations, warmup=warmup,
                           batch_sizes=[8] if args.dry_run else [8, 32],
                           throughput_iterations=2 if args.dry_run else 50, run_pipeline=False)
    try:
        with make_progress(console) as progress:
            result = bench_models(options, console, progress)
        report["model"] = result["model"]
        report["backends"] = result["backends"]
        for b in result["backends"]:
            if not b.get("available", True) or "latency_ms" not in b:
                report["skipped"].append(f"{b['backend']}: {b.get('reason', 'not run')}")
    except Exception as err:      # one backend's failure must not cost the rest of the GPU time
        report["errors"].append(f"model-only: {type(err).__name__}: {err}")
        report["traceback_model"] = traceback.format_exc()[-2000:]
    save()

    # 2./3. the pipeline ----------------------------------------------------------------------------
    absent = missing("faster_whisper", "ctranslate2", "av")
    if absent:
        report["skipped"].append(f"pipeline: the Python module '{absent}' is missing, so Whisper and speech end -> "
                                 "score were not measured (carry a CTranslate2 wheel's files with the tree).")
    else:
        import ctranslate2

        try:
            whisper_cuda = ctranslate2.get_cuda_device_count() > 0
        except Exception:
            whisper_cuda = False
        report["whisper_device"] = "cuda" if whisper_cuda and device == "cuda" else "cpu"
        if device == "cuda" and not whisper_cuda:
            report["skipped"].append("whisper on cuda: this CTranslate2 build sees no CUDA device, so Whisper ran "
                                     "on the CPU in the pipeline run.")
        backend = "auto"
        done = {b["backend"] for b in report.get("backends", []) if "latency_ms" in b}
        if done:   # the fastest measured backend scores the pipeline
            best = min((b for b in report["backends"] if "latency_ms" in b), key=lambda b: b["latency_ms"]["p50"])
            backend = best["backend"]
        pipe_options = BenchOptions(device=device, pipeline_backend=backend, run_model=False)
        report["pipeline"] = []
        for pace in ("realtime", "fast"):
            media = Path(args.media) if args.media else default_media()
            if left() < 90:
                report["skipped"].append(f"pipeline {pace}: not run, {left():.0f} s of the 8-minute budget left.")
                continue
            try:
                with make_progress(console) as progress:
                    entry = bench_pipeline(media, pace, pipe_options, progress)
                felt = entry.get("speech_end_to_score_ms") or {}
                asr = (entry.get("stages_ms") or {}).get("asr_wait", {}).get("p50")
                if felt.get("p50") and asr is not None:
                    # Whisper's share: the part of the median speech end -> score spent waiting for Whisper.
                    entry["whisper_share"] = round(asr / felt["p50"], 3)
                report["pipeline"].append(entry)
            except Exception as err:
                report["errors"].append(f"pipeline {pace}: {type(err).__name__}: {err}")
            save()

    # the numbers the issue asks for, in one place
    summary: dict = {}
    for b in report.get("backends", []):
        if "latency_ms" in b:
            summary[f"model_p50_ms_{b['backend']}"] = b["latency_ms"]["p50"]
    for p in report.get("pipeline", []):
        felt = p.get("speech_end_to_score_ms") or {}
        if felt:
            summary[f"speech_end_to_score_p95_ms_{p['pace']}"] = felt["p95"]
            summary[f"whisper_share_{p['pace']}"] = p.get("whisper_share")
    report["summary"] = summary
    save()
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}" + (f"; skipped: {len(report['skipped'])}" if report["skipped"] else ""))
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
