"""`moodlens train`: train a model of the zoo on MMSA pickles, a text TSV, featurized videos,
recorded sessions or synthetic data; writes DIR/best.pt and DIR/metrics.json.

Multi-GPU: `torchrun --nproc_per_node N -m moodlens.realtime.cli train ...` (WORLD_SIZE is set).
"""

from __future__ import annotations

import argparse

from moodlens.core.argtypes import nonnegative_int, positive_float, positive_int
from moodlens.core.cli import add_device_argument, add_json_argument, write_json


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"out": ("dir", "--out"), "json": ("file", "--json")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name (hcrl_mfd, dashfusion, dlf, dar, tecafn); "
                                        "default: the --init-from checkpoint's, else the config's, else hcrl_mfd")
    parser.add_argument("--init-from", metavar="default|PATH",
                        help="fine-tune from the default weights or a checkpoint (model and its config "
                             "come from the checkpoint)")
    parser.add_argument("--data", required=True, nargs="+",
                        help="MMSA .pkl, featurize .pkl, .tsv/.csv or a folder of train/dev/test files, "
                             "session folder(s), or 'synthetic'")
    parser.add_argument("--labels", help="labels CSV for session folders")
    parser.add_argument("--config", help="training YAML (default: configs/train/<model>.yaml)")
    parser.add_argument("--model-config", help="model YAML (default: configs/models/<model>.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model config key, e.g. --set text_encoder_trainable_layers=2")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--lr", type=positive_float, help="learning rate (all but the text encoder)")
    parser.add_argument("--text-lr", type=positive_float, help="learning rate of the fine-tuned text encoder")
    parser.add_argument("--seed", type=int, nargs="+", help="one or more seeds (results as mean ± std)")
    parser.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    add_device_argument(parser)
    parser.add_argument("--resume", action="store_true", help="continue from DIR/seed_S/last.pt")
    parser.add_argument("--no-deterministic", action="store_true", help="allow non-deterministic kernels")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--threads", type=nonnegative_int, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_argument(parser, help="the metrics summary as JSON: bare --json prints it on stdout (instead of the "
                                   "table), --json FILE writes FILE")


def parse_overrides(pairs: list[str]) -> dict:
    import yaml

    from moodlens.core.errors import ConfigError

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got '{pair}'.")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(args) -> int:
    import json
    import os

    from rich.console import Console
    from rich.table import Table

    from moodlens.train.metrics import json_safe, metric_names
    from moodlens.train.trainer import check_model_overrides, load_train_config, read_init_checkpoint, train

    overrides = {
        "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
        "text_learning_rate": args.text_lr, "seeds": args.seed, "device": args.device,
        "num_threads": args.threads, "model_config": args.model_config, "init_from": args.init_from,
    }
    model = args.model
    if args.init_from:
        payload, _ = read_init_checkpoint(args.init_from, args.model, args.model_config)
        model = overrides["model"] = payload["model_name"]
    if args.no_deterministic:
        overrides["deterministic"] = False
    if args.no_amp:
        overrides["amp"] = False
    config = load_train_config(args.config, model=model or "hcrl_mfd", overrides=overrides)
    if args.set:
        config.model_overrides = {**config.model_overrides,
                                  **check_model_overrides(config.model, parse_overrides(args.set), "--set")}
    data = args.data[0] if len(args.data) == 1 else args.data
    console = Console(stderr=True)
    summary = train(config, data, args.out, resume=args.resume, show_progress=not args.quiet,
                    labels=args.labels, console=console)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    if args.json:
        path = write_json(json.dumps(json_safe(summary), indent=2, ensure_ascii=False), args.json)
        if path is None:
            return 0
        console.print(f"wrote {path}", highlight=False)
    title = (f"{config.model} on {summary['data']}: test split, "
             f"mean ± std over {len(summary['seeds'])} seed(s)")
    if "by_missing_rate" in summary:  # DAR's protocol (test_missing_rates): rows per rate in metrics.json
        title += f", each seed the mean over {len(summary['by_missing_rate'])} test missing rates"
    table = Table()
    table.add_column("metric")
    table.add_column("x100", justify="right")
    for name in metric_names(summary["metric_variant"]):
        table.add_row(name, summary["report"][name])
    Console().print(title, highlight=False)
    Console().print(table)
    console.print(f"wrote {args.out}/best.pt and {args.out}/metrics.json")
    return 0
