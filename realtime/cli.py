"""The one `moodlens` command. Subcommands live in their own modules and are imported lazily,
so `moodlens --help` is instant and a broken optional dependency only breaks its own command.

Each subcommand module exposes `add_arguments(parser)` and `main(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from moodlens.core.cli import CONVENTIONS, formatter
from moodlens.core.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, MoodlensError, exit_code_for

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("moodlens.realtime.commands.demo", "Score the bundled demo clip on the live dashboard (the main job)."),
    "live": ("moodlens.realtime.commands.live", "Score webcam + microphone live on the dashboard."),
    "run": ("moodlens.realtime.commands.run", "Run the live pipeline over a media file (paced or as fast as possible)."),
    "bench": ("moodlens.realtime.commands.bench", "Benchmark model backends and the whole pipeline (latency, real-time factor)."),
    "featurize": ("moodlens.train.commands.featurize", "Turn a media file or a raw-video dataset into MMSA-layout features."),
    "replay": ("moodlens.realtime.commands.replay", "Replay a recorded session on the dashboard, or rescore it with a model."),
    "export": ("moodlens.realtime.commands.export", "Export a recorded session as csv, srt, json or an html report."),
    "models": ("moodlens.models.catalog", "List the model zoo with parameter counts and expected input dims."),
    "train": ("moodlens.train.commands.train", "Train a model on MMSA pickles, a text TSV, featurized videos, sessions or synthetic data."),
    "evaluate": ("moodlens.train.commands.evaluate", "Evaluate a checkpoint with MMSA's metrics."),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moodlens",
        description="Real-time multimodal sentiment analysis (text, audio, vision).",
        epilog=CONVENTIONS, formatter_class=formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=CONVENTIONS, formatter_class=formatter)
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in COMMANDS:
        selected = None
    console = Console(stderr=True)
    try:
        parser = build_parser(selected)
    except ModuleNotFoundError as err:
        console.print(f"[red]error:[/] the '{selected}' command is unavailable: missing module {err.name}.")
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    from moodlens.core import signals
    from moodlens.core.cli import configure_logging

    configure_logging(console)   # the libraries log; what they say is shown here, on stderr

    signals.install()   # SIGTERM ends a run like Ctrl-C (exit 130, recording closed)
    try:
        from moodlens.core.paths import check_outputs

        check_outputs(args, getattr(module, "OUTPUTS", {}))   # every output path, before any work
        code = module.main(args)
    except MoodlensError as err:
        # exit policy (docs/reliability.md): 2 bad input, 1 finished but something asked for failed
        code = exit_code_for(err)
        console.print(f"[red]error:[/] {err}" if code == EXIT_BAD_INPUT else f"[bold yellow]failed:[/] {err}",
                      highlight=False)
        return code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
