"""Run the `moodlens` CLI in-process and capture what it prints on stderr."""

from __future__ import annotations


def run_cli(*argv: str) -> tuple[int, str]:
    """Run `moodlens ...` in-process; return (exit code, stderr text)."""
    import io

    from rich.console import Console

    from moodlens.realtime import cli

    buf = io.StringIO()
    original = Console.__init__

    def to_buffer(self, *args, **kwargs):
        kwargs.pop("stderr", None)
        original(self, *args, file=buf, width=200, **kwargs)

    Console.__init__ = to_buffer
    try:
        code = cli.main(list(argv))
    finally:
        Console.__init__ = original
    return code, buf.getvalue()
