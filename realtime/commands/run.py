"""`moodlens run FILE`: the live pipeline over a media file, on the dashboard or headless.

    moodlens run talk.mp4                          # paced at real time on the dashboard
    moodlens run talk.mp4 --pace fast --headless --jsonl out.jsonl
    moodlens run talk.mp4 --record sessions/talk   # also record a session (replay/export later)
    moodlens run talk.mp4 --record sessions/talk --record-video none   # audio and windows only
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moodlens.realtime.commands.common import add_engine_arguments, add_output_arguments


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"jsonl": ("file", "--jsonl"), "record": ("dir", "--record")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="audio or video file (anything FFmpeg reads)")
    parser.add_argument("--pace", choices=("realtime", "fast"), default=None,
                        help="realtime: release media at its own pace, like a camera (default on the "
                             "dashboard); fast: as fast as possible (default when --headless)")
    add_engine_arguments(parser)
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from moodlens.realtime.app.session import play_file
    from moodlens.realtime.commands.common import finish, live_config, session_output

    return finish(play_file(args.file, label=Path(args.file).name, config=live_config(args),
                            output=session_output(args), pace=args.pace))
