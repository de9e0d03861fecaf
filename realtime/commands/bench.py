"""`moodlens bench`: model-only latency per backend, side by side, and the whole pipeline over a file.

    moodlens bench                                   # default model on every available backend + the demo clip
    moodlens bench --backends eager,onnxruntime --skip-pipeline --json out.json --plot out.png
    moodlens bench --skip-pipeline --json | jq .model     # the report as JSON on stdout
    moodlens bench --media talk.mp4 --pace fast --skip-model
"""

from __future__ import annotations

import argparse

from rich.console import Console

from moodlens.core.argtypes import nonnegative_float, nonnegative_int, positive_float, positive_int
from moodlens.core.cli import add_device_argument, add_json_argument
from moodlens.core.errors import ConfigError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must list whole numbers of at least 1")
    return values


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"json": ("file", "--json"), "plot": ("file", "--plot")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to benchmark")
    what.add_argument("--checkpoint", default="default", help="checkpoint file, or 'default' for the shipped weights")
    what.add_argument("--model", default=None,
                      help="benchmark an untrained zoo model instead (hcrl_mfd, dashfusion, dlf, dar, tecafn)")
    what.add_argument("--backends", type=_name_list, default=None,
                      help="comma-separated: tensorrt,compile,onnxruntime,eager (default: all, unavailable ones "
                           "are listed with what to install)")
    add_device_argument(what)
    what.add_argument("--skip-model", action="store_true", help="skip the model-only part")
    what.add_argument("--skip-pipeline", action="store_true", help="skip the whole-pipeline part")
    model = parser.add_argument_group("model-only")
    model.add_argument("--iterations", type=positive_int, default=100, help="timed runs per backend at batch 1 (default 100)")
    model.add_argument("--warmup", type=nonnegative_int, default=10, help="untimed runs before timing (default 10)")
    model.add_argument("--batch-sizes", type=_int_list, default=[8, 32],
                       help="throughput batch sizes (default 8,32)")
    model.add_argument("--throughput-iterations", type=positive_int, default=20, help="timed runs per batch size")
    model.add_argument("--window-seconds", type=positive_float, default=3.0,
                       help="utterance length whose typical shapes are scored (default 3 s)")
    model.add_argument("--ort-quantize", choices=("none", "int8"), default=None,
                       help="ONNX Runtime: int8 dynamic quantization (kept only within its parity bound); "
                            "default: configs/live/backends.yaml")
    pipe = parser.add_argument_group("pipeline")
    pipe.add_argument("--media", default=None, help="media file (default: the bundled demo clip)")
    pipe.add_argument("--pace", choices=("fast", "realtime", "both"), default="both",
                      help="fast: as fast as possible; realtime: paced like a camera (default both)")
    pipe.add_argument("--speculative-silence", type=nonnegative_float, default=None, metavar="S",
                      help="silence (s) after which Whisper starts speculatively; 0 = off (default: live config)")
    pipe.add_argument("--interim-every", type=nonnegative_float, default=None, metavar="S",
                      help="interim transcript every S seconds of a long utterance; 0 = off (default: live config)")
    pipe.add_argument("--min-silence", type=nonnegative_float, default=None, metavar="S",
                      help="silence (s) that ends an utterance (default: the live config's vad.min_silence_s)")
    pipe.add_argument("--asr-threads", type=positive_int, default=None, metavar="N",
                      help="Whisper CPU threads (default: the live config's asr.cpu_threads)")
    pipe.add_argument("--pipeline-backend", default="auto", choices=("auto", "tensorrt", "compile", "onnxruntime", "eager"),
                      help="backend the pipeline scores with (default auto)")
    out = parser.add_argument_group("output")
    add_json_argument(out, "--json-out", help="the report as JSON: bare --json prints it on stdout (instead of "
                                              "the table), --json FILE (or --json-out FILE) writes FILE")
    out.add_argument("--plot", default=None, metavar="PNG", help="write a latency plot (matplotlib)")
    out.add_argument("--stage-plot", default=None, metavar="PNG",
                     help="write a bar chart of speech end -> score, stage by stage")
    out.add_argument("--timeline-plot", default=None, metavar="PNG",
                     help="write each paced utterance's timeline from speech end to score (Whisper jobs, face gate)")


def main(args: argparse.Namespace) -> int:
    from moodlens.core.cli import write_json as write_json_text
    from moodlens.realtime.app.bench import BenchOptions, render, run_bench, save_plot, write_json

    if args.skip_model and args.skip_pipeline:
        raise ConfigError("--skip-model and --skip-pipeline together leave nothing to benchmark.")
    options = BenchOptions(
        checkpoint=args.checkpoint, model=args.model, backends=args.backends, device=args.device,
        window_seconds=args.window_seconds, iterations=args.iterations, warmup=args.warmup,
        batch_sizes=args.batch_sizes, throughput_iterations=args.throughput_iterations, media=args.media,
        paces=["fast", "realtime"] if args.pace == "both" else [args.pace],
        pipeline_backend=args.pipeline_backend, run_model=not args.skip_model,
        ort_quantize=args.ort_quantize, speculative_silence_s=args.speculative_silence, interim_every_s=args.interim_every,
        min_silence_s=args.min_silence, asr_cpu_threads=args.asr_threads,
        run_pipeline=not args.skip_pipeline,
    )
    if args.media and not args.skip_pipeline:
        # bad input before minutes of model benchmarks: open the file once (one sentence, exit 2)
        from pathlib import Path

        from moodlens.realtime.capture.media import MediaFileSource

        MediaFileSource(Path(args.media).expanduser(), pace="fast").close()
    err = Console(stderr=True)
    report = run_bench(options, console=err)
    if args.json == "-":
        import json

        write_json_text(json.dumps(json.loads(json.dumps(report, default=str)), indent=2), "-")
    else:
        Console().print(render(report))
    if args.json not in (None, "-"):
        path = write_json(report, args.json)
        err.print(f"wrote {path}", highlight=False)
    if args.plot:
        path = save_plot(report, args.plot)
        err.print(f"wrote {path}", highlight=False)
    if args.stage_plot:
        from moodlens.realtime.app.bench import save_stage_plot

        path = save_stage_plot(report, args.stage_plot)
        err.print(f"wrote {path}", highlight=False)
    if args.timeline_plot:
        from moodlens.realtime.app.bench import save_timeline_plot

        path = save_timeline_plot(report, args.timeline_plot)
        err.print(f"wrote {path}", highlight=False)
    failed = [p for p in report.get("pipeline", []) if "error" in p]
    if failed:   # exit policy: the run finished but a measurement asked for failed -> 1
        from moodlens.core.errors import RunFailed

        raise RunFailed(f"{len(failed)} of {len(report['pipeline'])} pipeline runs failed "
                        f"({failed[0]['pace']}: {failed[0]['error']}).")
    return 0
