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
import sys

from rich.console import Console


# Output paths the CLI checks before any work starts (moodlens.core.paths.check_outputs).
OUTPUTS = {"jsonl": ("file", "--jsonl"), "record": ("dir", "--record")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from moodlens.realtime.commands.run import add_engine_arguments

    parser.add_argument("session", metavar="DIR", help="a session folder written by --record")
    parser.add_argument("--speed", type=float, default=None,
                        help="playback speed: 1 = as recorded (dashboard default), 4 = four times faster, "
                             "0 = as fast as possible (default with --headless)")
    parser.add_argument("--headless", action="store_true",
                        help="no dashboard: write events as JSON lines (to --jsonl, else stdout)")
    parser.add_argument("--jsonl", metavar="OUT", default=None,
                        help="write one JSON line per window to OUT ('-' = stdout)")
    parser.add_argument("--rescore", action="store_true",
                        help="run the live pipeline and a model (--checkpoint, --backend) over the recorded media")
    parser.add_argument("--record", metavar="DIR", default=None,
                        help="with --rescore: record the rescored session into the new folder DIR")
    add_engine_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from moodlens.core.errors import ConfigError
    from moodlens.realtime.sessions.reader import open_session

    err = Console(stderr=True)
    session = open_session(args.session)
    for note in session.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    speed = args.speed if args.speed is not None else (0.0 if args.headless else 1.0)
    if speed < 0:
        raise ConfigError(f"--speed must be 0 (as fast as possible) or positive, got {speed}.")
    if args.headless and args.jsonl is None:
        args.jsonl = "-"
    if args.rescore:
        return _rescore(session, args, speed, err)
    if (args.checkpoint or args.backend or args.record) and not args.rescore:
        raise ConfigError("--checkpoint, --backend and --record apply to --rescore only; add --rescore.")
    if not session.windows:
        err.print(f"session {session.name} has no scored windows to replay", highlight=False)
        return 0
    return _replay_recorded(session, args, speed, err)


def _event_sinks(jsonl: str | None):
    from moodlens.realtime.engine.events import JsonlSink

    return [JsonlSink(jsonl)] if jsonl not in (None, "-") else []


def _replay_recorded(session, args, speed: float, err: Console) -> int:
    from moodlens.realtime.sessions.replay import ReplayClock, replay_events

    sinks = _event_sinks(args.jsonl)
    label = f"replay {session.name}" + (f" ×{speed:g}" if speed not in (0, 1) else "")
    clock = ReplayClock(session, speed)
    count = 0
    try:
        if args.headless or not Console().is_terminal:
            for event in replay_events(session, speed):
                count += 1
                clock.add(event)
                for sink in sinks:
                    sink.on_event(event)
                if args.jsonl == "-":
                    sys.stdout.write(event.to_json() + "\n")
                    sys.stdout.flush()
            err.print(f"{label}: {count} windows", highlight=False)
            return 0
        from moodlens.realtime.ui.dashboard import Dashboard

        backends = sorted({w.backend for w in session.windows if w.backend})
        devices = session.info.get("devices") or {}
        dashboard = Dashboard(label, backend=", ".join(backends) or "recorded",
                              device=str(devices.get("device", "recorded")), stats=clock.snapshot)
        code = 0
        with dashboard:
            try:
                for event in replay_events(session, speed):
                    count += 1
                    clock.add(event)
                    dashboard.add(event)
                    for sink in sinks:
                        sink.on_event(event)
                clock.finished = True
                dashboard.set_state("finished")
                dashboard.hold()
            except KeyboardInterrupt:
                dashboard.set_state("stopping")
                code = 130
        if dashboard.events:
            Console().print(dashboard.summary())
        return code
    finally:
        for sink in sinks:
            sink.close()


def _rescore(session, args, speed: float, err: Console) -> int:
    import dataclasses

    from moodlens.realtime.app.session import build_scorer, make_recorder, run_dashboard, run_headless
    from moodlens.realtime.commands.run import apply_engine_arguments
    from moodlens.realtime.app.live_config import load_live_config
    from moodlens.realtime.engine.pipeline import Pipeline
    from moodlens.realtime.sessions.replay import RecordedSource

    from moodlens.realtime.app.session import close_recorder, recording_exit_code
    from moodlens.realtime.sessions.writer import SessionRecorder

    if args.record is not None:
        SessionRecorder.check_folder(args.record)
    config = load_live_config(args.config)
    apply_engine_arguments(config, args)
    realtime = speed > 0 and not args.headless
    source = RecordedSource(session, pace="realtime" if realtime else "fast", speed=speed)
    pipeline = None
    recorder = None
    code = None
    try:
        with err.status("Loading the scoring engine…", spinner="dots"):
            scorer = build_scorer(config.engine)
        vision = source.vision_stand_in()
        if vision is not None and session.featurizer_config:
            # Recorded face features are only meaningful to a model whose featurizer computes the same.
            from moodlens.realtime.perception.features.config import FeaturizerConfig

            live = scorer.featurizer_config
            live = FeaturizerConfig.from_dict(live) if isinstance(live, dict) else live
            live.check_compatible(session.featurizer_config, where=f"the recorded face features of {session.folder}")
        with err.status("Loading Whisper and the voice detector…", spinner="dots"):
            options = dataclasses.replace(config.pipeline, realtime=realtime)
            pipeline = Pipeline(source, scorer, options, vad=config.vad, asr=config.asr,
                                features=config.features, vision=vision)
        pipeline.sinks.extend(_event_sinks(args.jsonl))
        if args.record is not None:
            from pathlib import Path

            info = {"kind": "rescore", "session": str(session.folder), "session_id": session.info.get("session_id")}
            recorder = make_recorder(Path(args.record), config, scorer, pipeline, info, realtime)
            pipeline.sinks.append(recorder)
        label = f"rescore {session.name}"
        if args.headless or not Console().is_terminal:
            code = run_headless(pipeline, label, err, to_stdout=args.jsonl == "-", fancy=not args.headless)
        else:
            code = run_dashboard(pipeline, label, config, [])
    finally:
        if pipeline is not None:
            pipeline.stop()
        else:
            source.close()
        if recorder is not None:
            close_recorder(recorder, args.record, code, err)
    return recording_exit_code(code, recorder)
