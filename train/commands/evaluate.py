"""`moodlens evaluate --checkpoint PATH|default --data PATH [--split test] [--json]`: MMSA's metrics."""

from __future__ import annotations

import argparse

from moodlens.core.argtypes import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="default", help="checkpoint file or 'default' (the shipped weights)")
    parser.add_argument("--data", required=True, nargs="+",
                        help="MMSA .pkl, .tsv/.csv file or folder, session folder(s), or 'synthetic'")
    parser.add_argument("--split", default="test", help="train, valid (dev) or test (default test); "
                                                          "a lone .tsv/.csv file is evaluated whatever its name")
    parser.add_argument("--labels", help="labels CSV for session folders")
    parser.add_argument("--metric", choices=["mosi", "mosei", "sims"], help="metric variant (default: from the data)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def evaluate(checkpoint: str, data_spec, split: str = "test", labels: str | None = None,
             metric: str | None = None, device: str = "cpu", batch_size: int = 128) -> dict:
    from moodlens.core.errors import DataError
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.data import DataOptions, load_dataset
    from moodlens.train.metrics import metric_names
    from moodlens.train.trainer import evaluate_split

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
    metrics, _ = evaluate_split(loaded.model, chosen, variant, batch_size, device)
    return {
        "checkpoint": loaded.path, "model": loaded.model_name, "data": data.source, "split": chosen.name,
        "samples": len(chosen), "metric_variant": variant,
        **{k: metrics[k] for k in metric_names(variant)},
    }


def main(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from moodlens.train.metrics import format_value, json_safe, metric_names

    data = args.data[0] if len(args.data) == 1 else args.data
    result = evaluate(args.checkpoint, data, args.split, args.labels, args.metric, args.device, args.batch_size)
    if args.json:
        print(json.dumps(json_safe(result), indent=2))
        return 0
    names = metric_names(result["metric_variant"])
    title = (f"{result['model']} ({result['checkpoint']}) on {result['data']}: "
             f"{result['split']} split, {result['samples']} samples")
    table = Table()
    table.add_column("metric")
    table.add_column("x100", justify="right")
    for name in names:
        table.add_row(name, format_value(result[name]))
    Console().print(title, highlight=False)
    Console().print(table)
    return 0
