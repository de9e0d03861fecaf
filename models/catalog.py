"""`moodlens models`: the model zoo with parameter counts and the input dims each model expects."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from moodlens.models import MODEL_NAMES, build_model
from moodlens.core.cli import add_json_argument, write_json
from moodlens.core.errors import ConfigError

PAPERS = {  # name -> (paper, one-line summary)
    "hcrl_mfd": ("HCRL-MFD", "hierarchical contrastive learning with multimodal feature decoupling"),
    "dashfusion": ("DashFusion", "dual-stream alignment with hierarchical bottleneck fusion"),
    "dlf": ("DLF", "disentangled features with a language-focused attractor"),
    "dar": ("DAR", "common/independent decoupling, reconstruction of erased inputs (boot head), CLUB dissimilarity"),
    "tecafn": ("TeCaFN", "text-centred contrastive cross-sample attention fusion"),
}


@dataclass
class ModelInfo:
    name: str
    paper: str
    summary: str
    total_parameters: int | None = None
    trainable_parameters: int | None = None
    text_encoder: str | None = None
    text_dim: int | None = None
    text_max_len: int | None = None
    audio_dim: int | None = None
    vision_dim: int | None = None
    error: str | None = None


def describe(name: str) -> ModelInfo:
    """Build `name` from its YAML (text-encoder weights not loaded: counts do not need them)."""
    paper, summary = PAPERS.get(name, (name, ""))
    info = ModelInfo(name=name, paper=paper, summary=summary)
    try:
        model = build_model(name, load_text_weights=False)
    except Exception as err:  # one model that fails to build (bad YAML, missing asset) must not hide the others
        info.error = f"{type(err).__name__}: {err}"
        return info
    c = model.config
    info.total_parameters = model.num_parameters()
    info.trainable_parameters = model.num_parameters(trainable_only=True)
    source = Path(model.text_encoder.source)
    info.text_encoder = "all-MiniLM-L6-v2" if c.text_encoder is None else source.name
    info.text_dim, info.text_max_len = c.text_dim, c.text_max_len
    info.audio_dim, info.vision_dim = c.audio_dim, c.vision_dim
    return info


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"json": ("file", "--json")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="MODEL",
                        help=f"models to list (default: all of {', '.join(MODEL_NAMES)})")
    add_json_argument(parser, help="a JSON list instead of the table: bare --json prints it on stdout, "
                                   "--json FILE writes FILE")


def main(args: argparse.Namespace) -> int:
    if args.json in MODEL_NAMES:        # `models --json dlf` (the flag took no value before): a name, not a file
        args.names, args.json = [*args.names, args.json], "-"
    names = list(args.names) or list(MODEL_NAMES)
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ConfigError(f"Unknown model '{unknown[0]}'; choose from: {', '.join(MODEL_NAMES)}.")
    if args.json:
        write_json(json.dumps([asdict(describe(n)) for n in names], indent=2), args.json)
        return 0

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    infos = []
    with Progress(transient=True, console=console) as progress:
        task = progress.add_task("building models", total=len(names))
        for name in names:
            progress.update(task, description=f"building {name}")
            infos.append(describe(name))
            progress.advance(task)

    table = Table(title="moodlens model zoo", header_style="bold")
    for column, justify in [("model", "left"), ("params", "right"), ("trainable", "right"),
                            ("text encoder (dim)", "left"), ("text len", "right"),
                            ("audio", "right"), ("vision", "right")]:
        table.add_column(column, justify=justify, no_wrap=column in ("model", "params", "trainable"))
    for info in infos:
        if info.error:
            table.add_row(info.name, f"[red]unavailable: {info.error}[/]", *[""] * 5)
            continue
        table.add_row(info.name, f"{info.total_parameters:,}", f"{info.trainable_parameters:,}",
                      f"{info.text_encoder} ({info.text_dim})", str(info.text_max_len),
                      str(info.audio_dim), str(info.vision_dim))
    console.print(table)
    console.print("text len: max tokens; audio / vision: feature dim per frame. `--json` adds each paper's "
                  "summary.", style="dim")
    return 1 if any(i.error for i in infos) else 0
