"""`moodlens run FILE`: the live pipeline over a media file, on the dashboard or headless.

    moodlens run talk.mp4                          # paced at real time on the dashboard
    moodlens run talk.mp4 --pace fast --headless --jsonl out.jsonl
    moodlens run talk.mp4 --record sessions/talk   # also record a session (replay/export later)
    moodlens run talk.mp4 --record sessions/talk --record-video none   # audio and windows only

`run_session` is shared with `moodlens demo` and `moodlens live`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


from moodlens.realtime.app.session import build_scorer, run_session  # noqa: F401  (used by demo, live)


from moodlens.core.schema import BACKEND_CHOICES


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"jsonl": ("file", "--jsonl"), "record": ("dir", "--record")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="audio or video file (anything FFmpeg reads)")
    parser.add_argument("--pace", choices=("realtime", "fast"), default=None,
                        help="realtime: release media at its own pace, like a camera (default on the "
                             "dashboard); fast: as fast as possible (default when --headless)")
    add_engine_arguments(parser)
    add_output_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                        help="scoring backend (default: the config's engine.backend, 'auto')")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file, or 'default' for the shipped weights")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    parser.add_argument("--config", type=Path, default=None,
                        help="live config YAML (only the keys it changes; see configs/live/default.yaml)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--headless", action="store_true",
                        help="no dashboard: write events as JSON lines (to --jsonl, else stdout)")
    parser.add_argument("--jsonl", metavar="OUT", default=None,
                        help="write one JSON line per scored window to OUT ('-' = stdout)")
    parser.add_argument("--record", type=Path, metavar="DIR", default=None,
                        help="record the session (audio, video, windows) into the new folder DIR")
    parser.add_argument("--record-video", choices=("mp4", "faces", "none"), default=None,
                        help="with --record: mp4 keeps the video; faces keeps only face features (privacy, "
                             "no picture); none keeps no video (default: the config's recording.video, mp4)")


def main(args: argparse.Namespace) -> int:
    from moodlens.realtime.app.live_config import load_live_config
    from moodlens.realtime.capture.media import MediaFileSource

    config = load_live_config(args.config)
    apply_engine_arguments(config, args)
    pace = args.pace or ("fast" if args.headless else "realtime")
    path = Path(args.file).expanduser()
    s = config.sources

    def open_source():
        return MediaFileSource(path, pace=pace, video_fps=s.video_fps, origin=0.0, max_size=s.max_size)

    return finish(run_session(open_source, label=path.name, config=config, args=args, realtime=pace == "realtime",
                              source_info={"kind": "file", "path": str(path.resolve()), "pace": pace}))


def finish(code: int) -> int:
    """After Ctrl-C, with every stage stopped and every sink closed and flushed, leave at once:
    the native libraries' own teardown (torch and ONNX Runtime thread pools, CTranslate2,
    MediaPipe) can take seconds on a loaded machine, and Ctrl-C must end within a second."""
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code


def apply_engine_arguments(config, args: argparse.Namespace) -> None:
    if getattr(args, "backend", None):
        config.engine.backend = args.backend
    if getattr(args, "checkpoint", None):
        config.engine.checkpoint = args.checkpoint
    if getattr(args, "device", None):
        config.engine.device = args.device


__all__ = ["add_arguments", "main", "run_session", "build_scorer"]
