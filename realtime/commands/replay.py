"""`moodlens replay DIR`: a recorded session on the dashboard again, or rescored by a (new) model.

    moodlens replay sessions/today                       # the recorded windows at recorded speed
    moodlens replay sessions/today --speed 4             # four times faster
    moodlens replay sessions/today --headless --jsonl out.jsonl
    moodlens replay sessions/today --rescore --checkpoint runs/train/best.pt --backend onnxruntime

Without --rescore the recorded scores are shown as they were; with it the recorded audio and
video run through the live pipeline again (Whisper, features, the chosen model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moodlens.realtime.commands.common import add_engine_arguments, add_output_arguments


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"jsonl": ("file", "--jsonl"), "record": ("dir", "--record")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="DIR", help="a session folder written by --record")
    parser.add_argument("--speed", type=float, default=None,
                        help="playback speed: 1 = as recorded (dashboard default), 4 = four times faster, "
                             "0 = as fast as possible (default with --headless)")
    parser.add_argument("--rescore", action="store_true",
                        help="run the live pipeline and a model (--checkpoint, --backend) over the recorded media")
    add_output_arguments(parser, record=False)
    parser.add_argument("--record", type=Path, metavar="DIR", default=None,
                        help="with --rescore: record the rescored session into the new folder DIR")
    add_engine_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from moodlens.core.errors import ConfigError
    from moodlens.realtime.app.session import replay_recorded, rescore_session
    from moodlens.realtime.commands.common import finish, live_config, session_output
    from moodlens.realtime.sessions.reader import open_session

    session = open_session(args.session)
    for note in session.notes:
        Console(stderr=True).print(f"[yellow]note:[/] {note}", highlight=False)
    speed = args.speed if args.speed is not None else (0.0 if args.headless else 1.0)
    if speed < 0:
        raise ConfigError(f"--speed must be 0 (as fast as possible) or positive, got {speed}.")
    if args.rescore:
        return finish(rescore_session(session, config=live_config(args), output=session_output(args), speed=speed))
    if args.checkpoint or args.backend or args.record:
        raise ConfigError("--checkpoint, --backend and --record apply to --rescore only; add --rescore.")
    return replay_recorded(session, output=session_output(args), speed=speed)
