"""Speech end -> score, old code vs new, interleaved (ABAB...) under the same load.

Runs `moodlens bench --skip-model --pace realtime` (plus any bench arguments after `--`) alternately
on a baseline revision of this repository and on the working tree, `--runs` times each, and prints
p50 / p95 of speech end -> score per run with the 1-minute load average beside it, then the medians.
The baseline is `git archive REV` unpacked into a temporary folder and imported in place of this
tree (this venv's editable install is pointed at it for that process only), so both sides use the
same interpreter, packages, weights and assets; only the code differs.

    .venv/bin/python benchmarks/ab_latency.py --baseline 2527e58 --runs 4 --out /tmp/ab.json

Each run is one pass over the bundled demo clip (26.8 s, 5 utterances), paced like a microphone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process: point the editable install's finder at another tree, then run the CLI.
LAUNCHER = r"""
import os, sys
root, argv = sys.argv[1], sys.argv[2:]
finder = next((m for n, m in list(sys.modules.items()) if n.startswith("__editable___moodlens")), None)
if finder is None:
    sys.exit("ab_latency: moodlens is not an editable install in this venv; the baseline cannot be swapped in.")
for key, path in list(finder.MAPPING.items()):
    finder.MAPPING[key] = os.path.join(root, os.path.basename(path))
from moodlens.realtime.cli import main
sys.argv = ["moodlens", *argv]
sys.exit(main())
"""


def unpack(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    tar = into / "tree.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as archive:
        archive.extractall(into / "tree", filter="data")
    tar.unlink()
    return into / "tree"


def one_run(tree: Path, out: Path, extra: list[str]) -> dict:
    argv = ["bench", "--skip-model", "--pace", "realtime", "--json", str(out), *extra]
    load = os.getloadavg()[0]
    t0 = time.time()
    subprocess.run([sys.executable, "-c", LAUNCHER, str(tree), *argv], check=True, capture_output=True, cwd=tree)
    pipe = json.loads(out.read_text())["pipeline"][0]
    felt = pipe["speech_end_to_score_ms"]
    return {"load_1min": round(load, 2), "started": time.strftime("%H:%M:%S", time.gmtime(t0)),
            "p50": felt["p50"], "p95": felt["p95"], "max": felt["max"], "windows": pipe["windows"],
            "speculation": pipe["speculation"], "interims": pipe["interims"],
            "asr_p50": pipe["stage_ms"].get("asr", {}).get("p50"),
            "per_window": pipe.get("per_window")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision of the old code (A)")
    parser.add_argument("--runs", type=int, default=4, help="runs of each side (default 4)")
    parser.add_argument("--out", help="write every run as JSON here")
    args = parser.parse_args(argv)
    rows: dict[str, list[dict]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="ab_latency_") as tmp:
        tmp = Path(tmp)
        trees = {"A": unpack(args.baseline, tmp), "B": ROOT}
        for i in range(args.runs):
            for side in ("A", "B") if i % 2 == 0 else ("B", "A"):   # ABBA: neither side always goes first
                row = one_run(trees[side], tmp / f"{side}{i}.json", extra)
                rows[side].append(row)
                print(f"{side} run {i + 1}: {row['started']} UTC load {row['load_1min']:.2f}  "
                      f"p50 {row['p50']:.0f} ms  p95 {row['p95']:.0f} ms  (Whisper p50 {row['asr_p50']:.0f} ms)",
                      flush=True)
    summary = {side: {"p50_median": statistics.median(r["p50"] for r in runs),
                      "p95_median": statistics.median(r["p95"] for r in runs),
                      "load_range": [min(r["load_1min"] for r in runs), max(r["load_1min"] for r in runs)]}
               for side, runs in rows.items()}
    for side, name in (("A", f"baseline {args.baseline}"), ("B", "working tree")):
        s = summary[side]
        print(f"{side} ({name}): median p50 {s['p50_median']:.0f} ms, median p95 {s['p95_median']:.0f} ms, "
              f"load {s['load_range'][0]:.2f}-{s['load_range'][1]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"baseline": args.baseline, "bench_args": extra, "runs": rows,
                                              "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
