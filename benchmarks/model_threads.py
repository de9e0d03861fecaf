"""Model-only ONNX Runtime latency at batch 1 with 1 vs 2 intra-op threads, alternating rounds.

    .venv/bin/python benchmarks/model_threads.py [--seconds 4] [--calls 200] [--rounds 2] [--quantize none|int8]

Prints the median wall ms per call for each thread count and round (`--quantize`: the float model or
the smoothed int8 one; default: configs/live/backends.yaml's) (the default weights, a typical
window of `--seconds` with every modality present). Results: docs/benchmarks.md, "One CPU thread for the model".
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from moodlens.models.checkpoint import load_checkpoint
from moodlens.realtime.scoring.backends import BackendOptions
from moodlens.realtime.scoring.scorer import Scorer


def median_ms(scorer: Scorer, seconds: float, calls: int) -> float:
    batch = scorer.typical_batch(1, seconds)
    for _ in range(20):  # warm-up
        scorer.backend(batch)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        scorer.backend(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quantize", choices=("none", "int8"), default=None)
    args = parser.parse_args()
    checkpoint = load_checkpoint("default")
    for round_index in range(args.rounds):
        for threads in (1, 2):
            options = dataclasses.replace(BackendOptions.load(), cpu_threads=threads)
            if args.quantize:
                options.onnxruntime = dataclasses.replace(options.onnxruntime, quantize=args.quantize)
            scorer = Scorer.from_model(checkpoint.model, checkpoint.featurizer_config, backend="onnxruntime",
                                       device="cpu", options=options, quiet=True)
            ms = median_ms(scorer, args.seconds, args.calls)
            kind = "int8" if getattr(scorer.backend, "quantized", False) else "float"
            print(f"round {round_index + 1}, {threads} thread(s), {kind}: p50 {ms:.2f} ms")


if __name__ == "__main__":
    main()
