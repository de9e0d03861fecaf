"""`moodlens demo`: the bundled clip (positive, negative and neutral English sentences over a face)
scored with the default weights on the live dashboard.

    moodlens demo                               # the dashboard, paced at real time
    moodlens demo --headless --jsonl out.jsonl  # for scripts (as fast as possible)
"""

from __future__ import annotations

import argparse

from moodlens.realtime.commands.run import add_engine_arguments, add_output_arguments


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
    from moodlens.realtime.commands.run import apply_engine_arguments, finish
    from moodlens.realtime.app.session import run_session
    from moodlens.realtime.app.live_config import load_live_config
    from moodlens.realtime.capture.media import MediaFileSource

    config = load_live_config(args.config)
    apply_engine_arguments(config, args)
    pace = args.pace or ("fast" if args.headless else "realtime")
    path = demo_clip_path()
    s = config.sources

    def open_source():
        return MediaFileSource(path, pace=pace, video_fps=s.video_fps, origin=0.0, max_size=s.max_size)

    return finish(run_session(open_source, label="demo clip", config=config, args=args, realtime=pace == "realtime",
                       source_info={"kind": "demo", "path": str(path), "pace": pace}))
