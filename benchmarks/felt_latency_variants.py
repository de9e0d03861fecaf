"""Speech end -> score for several bench settings of the same code, run in turn under the same load.

Where benchmarks/ab_latency.py compares two revisions of the code, this compares settings of one
tree: checkpoints (e.g. weights trained on a different Whisper input) or live options
(`--min-silence`, `--speculative-silence`, ...). Each variant is a name and the `moodlens bench`
arguments it adds to `--skip-model --pace realtime`; the variants run round-robin, the order
rotated every round so that none always goes first, and the medians over rounds are printed.

    .venv/bin/python benchmarks/felt_latency_variants.py --rounds 3 --out /tmp/felt.json \
        --variant "old weights (30 s input)=--checkpoint /tmp/old_default.pt" \
        --variant "new weights (15 s input)=--checkpoint default" \
        --variant "new weights, min_silence 0.4=--checkpoint default --min-silence 0.4"

Each run is one pass over the bundled demo clip (26.8 s, 5 utterances), paced like a microphone.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(bench_args: list[str], out: Path) -> dict:
    argv = [sys.executable, "-m", "moodlens.realtime.cli", "bench", "--skip-model", "--pace", "realtime",
            "--json", str(out), *bench_args]
    load = os.getloadavg()[0]
    started = time.strftime("%H:%M:%S", time.gmtime())
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"moodlens bench {' '.join(bench_args)} failed (exit {done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no message'}")
    pipe = json.loads(out.read_text())["pipeline"][0]
    felt = pipe["speech_end_to_score_ms"]
    return {"started": started, "load_1min": round(load, 2), "p50": felt["p50"], "p95": felt["p95"],
            "max": felt["max"], "windows": pipe["windows"],
            "asr_p50": pipe["stage_ms"].get("asr", {}).get("p50")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=BENCH_ARGS",
                        help="a name and the bench arguments of that variant (repeat for each)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--out", help="write every run as JSON here")
    args = parser.parse_args(argv)
    variants = []
    for spec in args.variant:
        name, sep, rest = spec.partition("=")
        if not sep or not name.strip():
            parser.error(f"--variant '{spec}' is not NAME=BENCH_ARGS.")
        variants.append((name.strip(), shlex.split(rest)))
    rows: dict[str, list[dict]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="felt_variants_") as tmp:
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for i, (name, bench_args) in enumerate(order):
                row = one_run(bench_args, Path(tmp) / f"{r}_{i}.json")
                rows[name].append(row)
                print(f"round {r + 1} {name}: {row['started']} UTC load {row['load_1min']:.2f}  p50 {row['p50']:.0f} ms"
                      f"  p95 {row['p95']:.0f} ms  max {row['max']:.0f} ms  (Whisper p50 {row['asr_p50']:.0f} ms,"
                      f" {row['windows']} windows)", flush=True)
    summary = {name: {"p50_median": statistics.median(x["p50"] for x in runs),
                      "p95_median": statistics.median(x["p95"] for x in runs),
                      "p95_runs": [x["p95"] for x in runs],
                      "asr_p50_median": statistics.median(x["asr_p50"] for x in runs),
                      "load_range": [min(x["load_1min"] for x in runs), max(x["load_1min"] for x in runs)]}
               for name, runs in rows.items()}
    for name, s in summary.items():
        print(f"{name}: median p50 {s['p50_median']:.0f} ms, median p95 {s['p95_median']:.0f} ms "
              f"(runs {', '.join(f'{v:.0f}' for v in s['p95_runs'])}), Whisper p50 {s['asr_p50_median']:.0f} ms, "
              f"load {s['load_range'][0]:.2f}-{s['load_range'][1]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"variants": dict(variants), "runs": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
