"""`moodlens evaluate --checkpoint PATH|default --data PATH [--split test] [--json [FILE]]`: MMSA's metrics.

`--missing-rates 0.0:0.9:0.1` runs DAR's robustness protocol (train/protocols.py): each test input has
that proportion of every modality erased (text -> [UNK], audio/vision frames -> zeros, seeded by
`--erasure-seed`), metrics are reported per rate and as the mean over rates (the JSON's
`by_missing_rate` and `mean`; its top-level metrics are the mean)."""

from __future__ import annotations

import argparse

import numpy as np

from moodlens.core.cli import add_device_argument, add_json_argument, write_json
from moodlens.core.argtypes import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="default", help="checkpoint file or 'default' (the shipped weights)")
    parser.add_argument("--data", required=True, nargs="+",
                        help="MMSA .pkl, .tsv/.csv file or folder, session folder(s), or 'synthetic'")
    parser.add_argument("--split", default="test", help="train, valid (dev) or test (default test); "
                                                          "a lone .tsv/.csv file is evaluated whatever its name")
    parser.add_argument("--labels", help="labels CSV for session folders")
    parser.add_argument("--metric", choices=["mosi", "mosei", "sims"], help="metric variant (default: from the data)")
    add_device_argument(parser, default="auto")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--missing-rates", metavar="START:STOP:STEP",
                        help="erase that proportion of each test input per rate (DAR's protocol: 0.0:0.9:0.1) "
                             "and report every rate and the mean; also a comma list")
    parser.add_argument("--erasure-seed", type=int, default=0, help="seed of the --missing-rates erasure (default 0)")
    add_json_argument(parser, help="the result as JSON: bare --json prints it on stdout (instead of the table), "
                                   "--json FILE writes that file and prints the table")


def evaluate(checkpoint: str, data_spec, split: str = "test", labels: str | None = None,
             metric: str | None = None, device: str = "cpu", batch_size: int = 128,
             missing_rates=None, erasure_seed: int = 0) -> dict:
    from moodlens.core.errors import DataError
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.metrics import metric_names
    from moodlens.train.trainer import evaluate_split

    if missing_rates is not None:  # a malformed rate list is refused before anything is loaded
        from moodlens.train.protocols import parse_rates

        missing_rates = parse_rates(missing_rates)
    loaded = load_checkpoint(checkpoint, device=device)
    mc = loaded.model.config
    data = load_dataset(data_spec, DataOptions(text_encoder=mc.text_encoder, text_max_len=mc.text_max_len,
                                               audio_dim=mc.audio_dim, vision_dim=mc.vision_dim,
                                               metric_dataset=metric, labels=labels))
    if len(data.splits) == 1 and data.kind == "text":
        chosen = next(iter(data.splits.values()))
    else:
        chosen = data.split(split)
    for key, has, dim, want in (("audio", data.has_audio, data.audio_dim, mc.audio_dim),
                                ("vision", data.has_vision, data.vision_dim, mc.vision_dim)):
        if has and dim != want and bool(chosen.batch.present[:, 1 if key == "audio" else 2].any()):
            raise DataError(f"{data.source} split '{chosen.name}' key '{key}' has {dim} features per frame but "
                            f"checkpoint {loaded.path} expects {want}.")
    if data.featurizer_config and "schema_version" in loaded.featurizer_config:
        # features made by moodlens must be made the way the checkpoint's were
        from moodlens.realtime.perception.features.config import FeaturizerConfig

        FeaturizerConfig.from_dict(data.featurizer_config, source=f"featurizer config of {data.source}") \
            .check_compatible(loaded.featurizer_config, where=f"checkpoint {loaded.path}")
    variant = metric or data.metric_dataset
    result = {"checkpoint": loaded.path, "model": loaded.model_name, "data": data.source, "split": chosen.name,
              "samples": len(chosen), "metric_variant": variant}
    if missing_rates is not None:
        from moodlens.train.protocols import evaluate_missing_rates

        sweep = evaluate_missing_rates(loaded.model, chosen, missing_rates, variant, batch_size, device,
                                       seed=erasure_seed)
        return {**result, **sweep["mean"], "by_missing_rate": sweep["by_missing_rate"], "mean": sweep["mean"],
                "erasure_seed": erasure_seed}
    from moodlens.train.head_metrics import by_head

    metrics, preds = evaluate_split(loaded.model, chosen, variant, batch_size, device)
    bad = ~np.isfinite(preds["fused"])
    if bad.any():   # metrics over NaN are no result: refuse, as `moodlens run` does
        from moodlens.core.errors import RunFailed

        raise RunFailed(f"Checkpoint {loaded.path} gave a non-finite fused score for {int(bad.sum())} of "
                        f"{len(bad)} samples of the {chosen.name} split (first: sample {int(np.argmax(bad))}); "
                        "its metrics would be meaningless.")
    return {**result, **{k: metrics[k] for k in metric_names(variant)}, "by_head": by_head(preds, chosen, variant)}


def main(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from moodlens.train.metrics import format_value, json_safe, metric_names

    data = args.data[0] if len(args.data) == 1 else args.data
    from moodlens.models.device import resolve_device

    device = str(resolve_device(args.device or "auto"))
    result = evaluate(args.checkpoint, data, args.split, args.labels, args.metric, device, args.batch_size,
                      args.missing_rates, args.erasure_seed)
    if args.json:
        path = write_json(json.dumps(json_safe(result), indent=2), args.json)
        if path is None:
            return 0
        Console(stderr=True).print(f"wrote {path}", highlight=False)
    names = metric_names(result["metric_variant"])
    title = (f"{result['model']} ({result['checkpoint']}) on {result['data']}: "
             f"{result['split']} split, {result['samples']} samples")
    table = Table()
    table.add_column("metric")
    if "by_missing_rate" in result:  # one column per missing rate, then the mean (DAR's Table 1 value)
        title += f", x100 per missing rate (erasure seed {result['erasure_seed']})"
        for row in result["by_missing_rate"]:
            table.add_column(f"{row['rate']:g}", justify="right")
        table.add_column("mean", justify="right")
        for name in names:
            table.add_row(name, *(format_value(row[name]) for row in result["by_missing_rate"]),
                          format_value(result["mean"][name]))
    else:
        table.add_column("x100", justify="right")
        for name in names:
            table.add_row(name, format_value(result[name]))
    console = Console()
    if "by_missing_rate" in result and not console.is_terminal:  # logs and pipes: room for the 12 columns
        console = Console(width=max(console.width, 140))
    console.print(title, highlight=False)
    console.print(table)
    if result.get("by_head"):
        heads = Table(title="by head (samples whose label for that head is known)")
        for column in ("head", "samples", "Non0_acc_2", "balanced_acc_2", "MAE", "Corr"):
            heads.add_column(column, justify="left" if column == "head" else "right")
        for head, values in result["by_head"].items():
            heads.add_row(head, str(values.get("samples", 0)),
                          *(format_value(values[k]) if k in values else "-"
                            for k in ("Non0_acc_2", "balanced_acc_2", "MAE", "Corr")))
        console.print(heads)
    return 0
