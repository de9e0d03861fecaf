"""Argument spellings every `moodlens` command shares (argparse only: no torch, no moodlens imports),
so that a flag means one thing everywhere:

    --json [FILE]   the command's result as JSON: bare --json = to stdout, --json FILE = to that file
    --device D      auto (the default: CUDA when available), cpu or cuda[:N]
    --config FILE   a YAML of the command's own kind (live config; `train`: the training YAML)
    --out PATH      what the command writes (a file for export/featurize, a folder for train)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEVICE_HELP = "auto (default: CUDA when available), cpu or cuda[:N]"
JSON_HELP = "the result as JSON: bare --json prints it on stdout, --json FILE writes it to FILE"

CONVENTIONS = """conventions (every command):
  --json [FILE]   the result as JSON: bare prints it on stdout, with a value writes that file
  --device D      auto (default: CUDA when available), cpu or cuda[:N]
  --config FILE   a YAML of the command's own kind (the live config; for train the training YAML)
  --out PATH      what the command writes (a file: export, featurize; a folder: train)
  errors are one sentence on stderr with exit status 2 (bad input), or 1 when the run finished
  but something asked for failed (e.g. the recording); Ctrl-C or SIGTERM exits with 130"""


class ConsoleLogHandler(logging.Handler):
    """Shows the libraries' log records on the CLI's rich console, as the commands printed them: the
    message alone; a record's `style` (``extra={"style": "dim"}``) colours it, a `label` prefixes it
    in yellow (``recording: ...``). Libraries log (`logging.getLogger(__name__)`); only the CLI prints."""

    def __init__(self, console=None, level: int = logging.INFO):
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from rich.markup import escape

            if self.console is None:
                from rich.console import Console

                self.console = Console(stderr=True)
            text = escape(record.getMessage())
            label, style = getattr(record, "label", None), getattr(record, "style", None)
            if label:
                text = f"[yellow]{escape(label)}:[/] {text}"
            elif style:
                text = f"[{style}]{text}[/]"
            self.console.print(text, highlight=False)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def configure_logging(console=None, *, level: int = logging.INFO) -> ConsoleLogHandler:
    """Route the `moodlens` loggers to `console` (stderr by default); called once per CLI run
    (a second call replaces the handler, so running commands in one process never doubles lines)."""
    logger = logging.getLogger("moodlens")
    for old in [h for h in logger.handlers if isinstance(h, ConsoleLogHandler)]:
        logger.removeHandler(old)
    handler = ConsoleLogHandler(console, level)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def add_device_argument(parser, *, default: str | None = None) -> None:
    parser.add_argument("--device", default=default, metavar="DEVICE", help=DEVICE_HELP)


def add_json_argument(parser, *aliases: str, help: str = JSON_HELP) -> None:
    """`--json [FILE]` (bare: stdout). `aliases` keep an older spelling working (bench's --json-out)."""
    parser.add_argument("--json", *aliases, dest="json", nargs="?", const="-", default=None, metavar="FILE", help=help)


def write_json(text: str, target: str | None) -> Path | None:
    """Put a JSON document where `--json` asked: '-' (or None) = stdout; else the file, whose path is returned."""
    text = text.rstrip("\n") + "\n"
    if target in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    path = Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)
