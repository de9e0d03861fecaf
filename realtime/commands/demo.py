"""`moodlens demo`: the bundled clip (positive, negative and neutral English sentences over a face)
scored with the default weights on the live dashboard.

    moodlens demo                               # the dashboard, paced at real time
    moodlens demo --headless --jsonl out.jsonl  # for scripts (as fast as possible)
"""

from __future__ import annotations

import argparse

from moodlens.realtime.commands.common import add_engine_arguments, add_output_arguments


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"jsonl": ("file", "--jsonl"), "record": ("dir", "--record")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pace", choices=("realtime", "fast"), default=None,
                        help="realtime (default on the dashboard) or fast (default when --headless)")
    add_engine_arguments(parser)
    add_output_arguments(parser)


def demo_clip_path():
    from moodlens.core.assets import DEMO_CLIP, resolve_path

    return resolve_path(DEMO_CLIP)


def main(args: argparse.Namespace) -> int:
    from moodlens.realtime.app.session import play_file
    from moodlens.realtime.commands.common import finish, live_config, session_output

    return finish(play_file(demo_clip_path(), label="demo clip", config=live_config(args),
                            output=session_output(args), pace=args.pace, kind="demo"))
