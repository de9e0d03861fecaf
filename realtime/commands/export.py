"""`moodlens export DIR --format csv|srt|json|html --out PATH`: share or annotate a recorded session."""

from __future__ import annotations

import argparse

from rich.console import Console

from moodlens.realtime.sessions.export import EXPORT_FORMATS


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"out": ("file", "--out")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="DIR", help="a session folder written by --record")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                        help="csv (one row per window, empty label column for annotation), srt subtitles, "
                             "json (everything), html (self-contained report); default: from --out's suffix")
    parser.add_argument("--out", required=True, metavar="PATH", help="file to write")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moodlens.core.errors import ConfigError
    from moodlens.realtime.sessions.export import export_session
    from moodlens.realtime.sessions.reader import open_session

    fmt = args.format or Path(args.out).suffix.lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"Cannot tell the export format from '{args.out}'; pass --format "
                          f"{'|'.join(EXPORT_FORMATS)}.")
    console = Console(stderr=True)
    session = open_session(args.session)
    for note in session.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    out = export_session(session, fmt, args.out)
    console.print(f"wrote {len(session.windows)} windows of session {session.name} as {fmt} to {out}",
                  highlight=False)
    return 0
