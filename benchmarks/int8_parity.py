"""int8 (text encoder only, SmoothQuant-smoothed or not) vs float ONNX Runtime on real transcripts.

    .venv/bin/python benchmarks/int8_parity.py [--alpha 0,0.5,0.8] [--float-matmuls 0.ffn_out,1.ffn_out]
                                              [--splits train,dev] [--json out.json]

The backend's own check (a random batch and the typical window, then shadowed live windows) runs
where the model is used; this script asks the question on realistic windows: the CMU-MOSI
transcripts of ../shared/data/mosi_text (real tokens, lower-cased like Whisper's output, through
the live TextFeaturizer). Each transcript is scored twice: with the typical window's audio and face
frames ("frames"; with the default weights their fused score sits at the +3 clip, so it hides
text errors) and text-only (audio and face absent: the fused score then follows the text). Only
the text encoder is quantized, so the audio and vision scores do not move. It also reports the text
score's MAE and Acc-2 against the MOSI labels, float and int8, i.e. what the difference does to the task.

For each alpha (`--alpha`, 0 = no smoothing; default: backends.yaml's) it reports per split the
max / p95 / median |int8 - float| of the fused and text scores over both variants, the windows
over `int8_parity`, and the CPU ms per call of float and int8 on the typical window. Choose alpha on
`train` (the larger split); `dev` is the held-out check. Needs ../shared (skips with one sentence).
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
    parser.add_argument("--splits", default="train,dev")
    parser.add_argument("--alpha", default=None, help="comma-separated SmoothQuant alphas (0 = off)")
    parser.add_argument("--float-matmuls", default=None, help="comma-separated <layer>.<kind> kept float")
    parser.add_argument("--limit", type=int, default=400, help="windows per split (dev has 229)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    folder = root.parent / "shared" / "data" / "mosi_text"
    splits = args.splits.split(",")
    if not all((folder / f"{s}.tsv").exists() for s in splits):
        files = ", ".join(s + ".tsv" for s in splits)
        print(f"Skipped: {folder} does not hold {files} (the MOSI transcripts live in ../shared).")
        return 0

    import torch

    from moodlens.core.assets import TEXT_ENCODER, resolve_path
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.realtime.perception.features.text import TextFeaturizer
    from moodlens.realtime.scoring import backends as B

    loaded = load_checkpoint("default", device="cpu")
    options = B.BackendOptions.load()
    o = options.onnxruntime
    alphas = [float(a) for a in args.alpha.split(",")] if args.alpha else [o.int8_smoothing_alpha]
    keep = ([k for k in args.float_matmuls.split(",") if k] if args.float_matmuls is not None
            else list(o.int8_float_matmuls))
    float_backend = B.create_backend("onnxruntime", loaded.model, "cpu",
                                     dataclasses.replace(options, onnxruntime=dataclasses.replace(o, quantize="none")))
    typical = B.typical_batch(loaded.model, 1, options.typical_window.seconds, options.typical_window)
    max_len = int((loaded.featurizer_config or {}).get("text_max_len", 50))
    text = TextFeaturizer(resolve_path(TEXT_ENCODER), max_len=max_len)
    text_only = torch.tensor([[True, False, False]])
    windows: dict[str, list] = {}
    labels: dict[str, np.ndarray] = {}
    for split in splits:
        with (folder / f"{split}.tsv").open() as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:][: args.limit]
        windows[split], labels[split] = [], np.array([float(label) for _t, label in rows])
        for transcript, _label in rows:
            ids = torch.from_numpy(text.encode([transcript.lower()]).ids)
            w = typical.replace(text_ids=ids, text_mask=torch.ones(ids.shape, dtype=torch.bool))
            windows[split].append((w, w.replace(present=text_only)))

    def scores(backend, batch):
        return np.array([float(np.asarray(t)[0]) for t in backend(batch)][:2])     # fused, text

    reference = {s: [(scores(float_backend, a), scores(float_backend, b)) for a, b in ws] for s, ws in windows.items()}

    def cpu_ms(backend, batch):
        for _ in range(20):
            backend(batch)
        times = []
        for _ in range(args.iterations):
            t = time.process_time()
            backend(batch)
            times.append((time.process_time() - t) * 1000)
        return round(float(np.median(times)), 2)

    float_ms = cpu_ms(float_backend, typical)
    report = {"bound": o.int8_parity, "float_matmuls": keep, "tokens_p50": {}, "alphas": []}
    for alpha in alphas:
        int8 = dataclasses.replace(o, quantize="int8", int8_parity=1e9, int8_shadow_windows=0, int8_recheck_every=0,
                                   int8_smoothing_alpha=alpha, int8_float_matmuls=keep)   # bound 1e9: the int8 file
        quant = B.create_backend("onnxruntime", loaded.model, "cpu", dataclasses.replace(options, onnxruntime=int8))
        assert quant.quantized, "quantization failed (see the log)"
        entry = {"alpha": alpha, "file": quant.path.name, "check_batches_diff": round(quant.parity, 4),
                 "smoothed_float_diff": quant.smoothing_float_diff,
                 "cpu_ms_p50_typical": {"float": float_ms, "int8": cpu_ms(quant, typical)}}
        for split, ws in windows.items():
            report["tokens_p50"][split] = float(np.median([a.text_ids.shape[1] for a, _ in ws]))
            # (windows, variant frames|text-only, output fused|text)
            q = [scores(quant, b) for _a, b in ws]
            d = np.array([[np.abs(scores(quant, a) - ra), np.abs(qb - rb)]
                          for (a, _b), qb, (ra, rb) in zip(ws, q, reference[split])])
            ft = np.array([rb[1] for _ra, rb in reference[split]])
            qt = np.array([qb[1] for qb in q])
            nz = labels[split] != 0
            entry[split] = {
                "windows": len(ws),
                "max": {f"{out}_{var}": round(float(d[:, v, i].max()), 3)
                        for v, var in enumerate(("frames", "textonly")) for i, out in enumerate(("fused", "text"))},
                "p95_text": round(float(np.percentile(d[:, 0, 1], 95)), 3),
                "median_text": round(float(np.median(d[:, 0, 1])), 3),
                "windows_over_bound": int((d.reshape(len(ws), -1).max(1) > o.int8_parity).sum()),
                # What the difference does to the task: text-score MAE and Acc-2 (non-zero labels) vs the labels.
                "text_mae_float_int8": [round(float(np.mean(np.abs(t - labels[split]))), 4) for t in (ft, qt)],
                "text_acc2_float_int8": [round(float(np.mean((t[nz] > 0) == (labels[split][nz] > 0))), 4)
                                         for t in (ft, qt)],
            }
        report["alphas"].append(entry)
        print(json.dumps(entry), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
