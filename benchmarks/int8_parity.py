"""int8 (text encoder only) vs float ONNX Runtime on real transcripts: parity and CPU time.

    .venv/bin/python benchmarks/int8_parity.py [--split dev] [--limit 229] [--json out.json]

The backend's own check (a random batch and the typical window, then shadowed live windows) runs
where the model is used; this script asks the question on realistic windows: the CMU-MOSI
transcripts of ../shared/data/mosi_text (real tokens, lower-cased like Whisper's output, through
the live TextFeaturizer), each with the typical window's audio and face frames. Only the text
encoder is quantized, so the audio and vision scores do not move; the fused and text scores do.
Reports the max / p95 / median |int8 - float| per output and the CPU time per call of both on
the typical window and on the real windows. Choose on `dev` (validation); `train` is a second,
larger check. Needs ../shared (skips with one sentence without it).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="dev", choices=("train", "dev"))
    parser.add_argument("--limit", type=int, default=229)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    tsv = root.parent / "shared" / "data" / "mosi_text" / f"{args.split}.tsv"
    if not tsv.exists():
        print(f"Skipped: {tsv} is not here (the MOSI transcripts live in ../shared).")
        return 0

    from moodlens.core.assets import TEXT_ENCODER, resolve_path
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.realtime.perception.features.text import TextFeaturizer
    from moodlens.realtime.scoring import backends as B

    loaded = load_checkpoint("default", device="cpu")
    options = B.BackendOptions.load()
    int8 = dataclasses.replace(options, onnxruntime=dataclasses.replace(
        options.onnxruntime, quantize="int8", int8_parity=1e9, int8_shadow_windows=0, int8_recheck_every=0))
    float_backend = B.create_backend("onnxruntime", loaded.model, "cpu", options)
    quant = B.create_backend("onnxruntime", loaded.model, "cpu", int8)   # bound 1e9: always the int8 file
    assert quant.quantized, "quantization failed (see the log)"
    typical = B.typical_batch(loaded.model, 1, options.typical_window.seconds, options.typical_window)

    with tsv.open() as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:][: args.limit]
    text = TextFeaturizer(resolve_path(TEXT_ENCODER), max_len=int((loaded.featurizer_config or {}).get("text_max_len", 50)))
    windows = []
    for transcript, _label in rows:
        enc = text.encode([transcript.lower()])
        ids = enc.ids[:, enc.mask[0]]
        import torch

        windows.append(typical.replace(text_ids=torch.from_numpy(ids), text_mask=torch.ones(ids.shape, dtype=torch.bool)))

    def outputs(backend, batch):
        return [np.asarray(t) for t in backend(batch)]

    diffs = np.array([[float(np.nanmax(np.abs(a - b))) for a, b in zip(outputs(float_backend, w), outputs(quant, w))]
                      for w in windows])

    def cpu_ms(backend, batches):
        for b in batches[:20]:
            backend(b)
        times = []
        for i in range(args.iterations):
            b = batches[i % len(batches)]
            t = time.process_time()
            backend(b)
            times.append((time.process_time() - t) * 1000)
        return round(float(np.median(times)), 2)

    names = ("fused", "text", "audio", "vision")
    report = {
        "split": args.split, "windows": len(windows),
        "tokens_p50": float(np.median([w.text_ids.shape[1] for w in windows])),
        "int8_parity_bound": options.onnxruntime.int8_parity,
        "max_abs_diff": {n: round(float(diffs[:, i].max()), 4) for i, n in enumerate(names)},
        "p95_abs_diff": {n: round(float(np.percentile(diffs[:, i], 95)), 4) for i, n in enumerate(names)},
        "median_abs_diff": {n: round(float(np.median(diffs[:, i])), 4) for i, n in enumerate(names)},
        "windows_over_bound": int((diffs.max(1) > options.onnxruntime.int8_parity).sum()),
        "cpu_ms_p50": {"float_typical": cpu_ms(float_backend, [typical]), "int8_typical": cpu_ms(quant, [typical]),
                       "float_real": cpu_ms(float_backend, windows), "int8_real": cpu_ms(quant, windows)},
        "check_batches_diff": quant.parity,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
