"""Arguments the realtime commands spell the same way, and what they turn into (the spellings shared
with every command, --json and --device, are in core/cli.py).

    --config FILE     the live config YAML (train: the training YAML; each command's --help says which)
    --backend NAME    scoring backend (auto, tensorrt, compile, onnxruntime, eager)
    --checkpoint P    a checkpoint file, or 'default' for the shipped weights
    --device D        auto (default: CUDA when available), cpu or cuda[:N]
    --headless / --jsonl OUT / --record DIR / --record-video MODE   where a session's events go
    --json [FILE]     the command's result as JSON: bare = to stdout, with a value = to FILE
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from moodlens.core.cli import add_device_argument, add_json_argument, write_json  # noqa: F401  (one place for commands)
from moodlens.core.schema import BACKEND_CHOICES

def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                        help="scoring backend (default: the config's engine.backend, 'auto')")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file, or 'default' for the shipped weights")
    add_device_argument(parser)
    parser.add_argument("--config", type=Path, default=None,
                        help="live config YAML (only the keys it changes; see configs/live/default.yaml)")


def add_output_arguments(parser: argparse.ArgumentParser, *, record: bool = True) -> None:
    parser.add_argument("--headless", action="store_true",
                        help="no dashboard: write events as JSON lines (to --jsonl, else stdout)")
    parser.add_argument("--jsonl", metavar="OUT", default=None,
                        help="write one JSON line per scored window to OUT ('-' = stdout)")
    if record:
        parser.add_argument("--record", type=Path, metavar="DIR", default=None,
                            help="record the session (audio, video, windows) into the new folder DIR")
        parser.add_argument("--record-video", choices=("mp4", "faces", "none"), default=None,
                            help="with --record: mp4 keeps the video; faces keeps only face features (privacy, "
                                 "no picture); none keeps no video (default: the config's recording.video, mp4)")


def session_output(args: argparse.Namespace):
    from moodlens.realtime.app.session import SessionOutput

    return SessionOutput(headless=bool(args.headless), jsonl=args.jsonl, record=getattr(args, "record", None),
                         record_video=getattr(args, "record_video", None))


def live_config(args: argparse.Namespace):
    from moodlens.realtime.app.session import load_config

    return load_config(args.config, backend=getattr(args, "backend", None),
                       checkpoint=getattr(args, "checkpoint", None), device=getattr(args, "device", None))


def finish(code: int) -> int:
    """After Ctrl-C, with every stage stopped and every sink closed and flushed, leave at once:
    the native libraries' own teardown (torch and ONNX Runtime thread pools, CTranslate2,
    MediaPipe) can take seconds on a loaded machine, and Ctrl-C must end within a second."""
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code
