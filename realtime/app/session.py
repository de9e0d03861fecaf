"""The session runner used by `moodlens demo`, `live`, `run` and `replay`: open the source, load the
engine, run the pipeline on the dashboard or headless, record the session if asked.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from rich.console import Console

from moodlens.core.errors import ConfigError


def build_scorer(engine):
    """Engine-A's Scorer for the configured checkpoint and backend (warmed up)."""
    from moodlens.realtime.scoring.scorer import Scorer

    scorer = Scorer(engine.checkpoint, backend=engine.backend, device=engine.device)
    warmup = getattr(scorer, "warmup", None)
    if callable(warmup):
        warmup()
    return scorer


def run_session(open_source: Callable[[], object], label: str, config, args: argparse.Namespace,
                realtime: bool, source_info: dict, notices: list[str] | None = None,
                scorer=None) -> int:
    """Open the source, load the engine, run the pipeline on the dashboard (or headless)."""
    err = Console(stderr=True)
    headless = bool(args.headless)
    if getattr(args, "record_video", None) and getattr(args, "record", None) is None:
        raise ConfigError(f"--record-video {args.record_video} chooses what a recording keeps; "
                          f"add --record DIR to record a session.")
    if getattr(args, "record", None) is not None:
        from moodlens.realtime.sessions.writer import SessionRecorder

        SessionRecorder.check_folder(args.record)   # before any work: a refused folder loses nothing
    if args.jsonl is None and headless:
        args.jsonl = "-"
    if args.jsonl == "-" and not headless and Console().is_terminal:
        raise ConfigError("--jsonl - writes events to the terminal the dashboard is drawn on; "
                          "add --headless, or give --jsonl a file name.")
    # The source first: a missing or corrupt file fails in a moment, before minutes of loading.
    source = open_source()
    try:
        return _run_session(source, label, config, args, realtime, source_info, notices, scorer, err, headless)
    except KeyboardInterrupt:          # while loading
        err.print("[yellow]interrupted[/]", highlight=False)
        return 130


def _run_session(source, label, config, args, realtime, source_info, notices, scorer, err, headless) -> int:
    import dataclasses

    from moodlens.realtime.engine.events import JsonlSink
    from moodlens.realtime.engine.pipeline import Pipeline

    pipeline = None
    recorder = None
    code = None          # stays None when an exception (Ctrl-C while loading, an error) ends the run
    try:
        with err.status("Loading the scoring engine…", spinner="dots"):
            scorer = scorer or build_scorer(config.engine)
        with err.status("Loading Whisper, the voice detector and the face tracker…", spinner="dots"):
            options = dataclasses.replace(config.pipeline, realtime=realtime)
            pipeline = Pipeline(source, scorer, options, vad=config.vad, asr=config.asr,
                                features=config.features)
        if args.jsonl not in (None, "-"):
            pipeline.sinks.append(JsonlSink(args.jsonl))
        if args.record is not None:
            # The recorder reports a failure (disk full, folder not writable) through on_error on its
            # own thread: printed to stderr it would be painted over by the full-screen dashboard, so
            # the dashboard polls `recorder.error` instead and the sentence is printed after the run.
            recorder = make_recorder(args.record, config, scorer, pipeline, source_info, realtime,
                                     video=getattr(args, "record_video", None), on_error=lambda sentence: None)
            pipeline.sinks.append(recorder)
        if headless or not Console().is_terminal:
            code = run_headless(pipeline, label, err, to_stdout=args.jsonl == "-", fancy=not headless)
        else:
            alert = (lambda: recorder.error) if recorder is not None else None
            code = run_dashboard(pipeline, label, config, notices or [], alert=alert)
    finally:
        if pipeline is not None:
            pipeline.stop()
        else:
            source.close()
        if recorder is not None:
            close_recorder(recorder, args.record, code, err)
    return recording_exit_code(code, recorder)


def close_recorder(recorder, folder, code: int, err: Console) -> None:
    """Close the recording noting why it ended, and say how it went (after the dashboard is gone)."""
    if code is None:        # an exception is on its way out
        reason = "interrupted" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "error"
    else:
        reason = "interrupted" if code == 130 else "completed"
    recorder.close(reason=reason)
    if recorder.error:
        err.print(f"[bold yellow]recording:[/] {recorder.error}", highlight=False)
    else:
        err.print(f"recorded the session in {folder}"
                  + (" (interrupted; every window up to then is kept)" if code == 130 else ""), highlight=False)


def recording_exit_code(code: int, recorder) -> int:
    """Exit-code policy (docs/reliability.md): live scoring survives a failed recording, but the
    recording the user asked for does not exist in full, so a finished run exits 1, not 0."""
    if code == 0 and recorder is not None and recorder.error:
        return 1
    return code


def make_recorder(folder: Path, config, scorer, pipeline, source_info: dict, realtime: bool,
                  video: str | None = None, on_error: Callable[[str], None] | None = None):
    import dataclasses

    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder

    checkpoint = getattr(scorer, "checkpoint_path", None) or getattr(scorer, "path", None) or config.engine.checkpoint
    info = {
        "config": config.to_dict(),
        "checkpoint": str(checkpoint),
        "featurizer_config": pipeline.featurizer_config.to_dict(),
        "devices": {"backend": pipeline.backend_name, "device": pipeline.device},
        "source": source_info,
    }
    # A file read as fast as possible waits for the video encoder instead of dropping frames; the
    # pipeline hands over its face features, so privacy mode ("faces") does not run MediaPipe twice.
    options = dataclasses.replace(config.recording or RecordingOptions(), block_when_busy=not realtime,
                                  faces_from_pipeline=True)
    if video is not None:                    # --record-video overrides the config's recording.video
        options.video = video
    info["config"]["recording"] = dataclasses.asdict(options)
    return SessionRecorder(folder, info, options, on_error=on_error)


def run_headless(pipeline, label: str, err: Console, to_stdout: bool, fancy: bool) -> int:
    """Events as JSON lines (stdout) or readable lines; a progress bar on stderr for files."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out = Console(soft_wrap=True)
    duration = pipeline.stats.duration_s
    progress = None
    if err.is_terminal and duration:
        progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
                            TextColumn("{task.fields[windows]} windows"), TimeElapsedColumn(), console=err,
                            transient=True)
        task = progress.add_task("media", total=duration, windows=0)
        progress.start()
    count = 0
    started = time.monotonic()
    untrained = untrained_modalities(pipeline.scorer)
    if fancy and untrained:
        err.print(f"[dim]{untrained_note(untrained)}[/]", highlight=False)
    try:
        for event in pipeline.events():
            count += 1
            if to_stdout:
                sys.stdout.write(event.to_json() + "\n")
                sys.stdout.flush()
            elif fancy:
                out.print(_event_line(event), highlight=False)
            if progress is not None:
                progress.update(task, completed=min(duration, event.end), windows=count)
    except KeyboardInterrupt:
        if progress is not None:
            progress.stop()
        err.print(f"[yellow]stopped[/] after {count} windows (Ctrl-C)", highlight=False)
        return 130
    finally:
        if progress is not None:
            progress.stop()
    err.print(_totals_line(pipeline, label, time.monotonic() - started), highlight=False)
    return 0


def _totals_line(pipeline, label: str, wall: float | None = None) -> str:
    snap = pipeline.stats.snapshot()
    wall = snap.elapsed_s if wall is None else wall
    p50, p95 = snap.latency_p50.get("total"), snap.latency_p95.get("total")
    latency = f", end-of-utterance→score p50 {p50:.0f} ms p95 {p95:.0f} ms" if p50 is not None else ""
    return (f"{label}: {snap.windows_scored} windows in {wall:.1f} s ({snap.media_s / max(wall, 1e-6):.2f}× real "
            f"time){latency}, backend {pipeline.backend_name} on {pipeline.device}"
            + (f", {snap.windows_merged} merged / {snap.windows_dropped} dropped windows"
               if snap.windows_merged or snap.windows_dropped else "")
            + (f", {snap.frames_dropped} frames dropped" if snap.frames_dropped else ""))


def untrained_note(untrained) -> str:
    names = " and ".join(untrained)
    return (f"{names}: {'branch' if len(untrained) == 1 else 'branches'} untrained in this checkpoint, "
            f"so not scored (shown as –) even when perceived")


def _event_line(event) -> str:
    scores = "  ".join(f"{k[0].upper()} {v:+.2f}" if v is not None else f"{k[0].upper()}   – "
                       for k, v in event.scores.items() if k != "fused")
    return (f"{event.start:6.1f}–{event.end:5.1f}s  fused {event.fused:+.2f}  {scores}  "
            f"{event.latency_ms['total']:.0f} ms  {event.text or '(no speech)'}")


def untrained_modalities(scorer) -> tuple[str, ...]:
    """Modalities the checkpoint never trained (the scorer feeds them as absent and scores them null)."""
    from moodlens.core.schema import MODALITIES

    trained = getattr(scorer, "trained_modalities", None)
    if trained is None:
        return ()
    return tuple(m for m in MODALITIES if m not in trained)


def run_dashboard(pipeline, label: str, config, notices: list[str],
                   alert: Callable[[], str | None] | None = None) -> int:
    from moodlens.realtime.ui.dashboard import Dashboard

    console = Console()
    dashboard = Dashboard(label, backend=pipeline.backend_name, device=pipeline.device,
                          stats=pipeline.stats.snapshot, options=config.dashboard, console=console,
                          untrained=untrained_modalities(pipeline.scorer), alert=alert)
    if notices:
        dashboard.notice = " ".join(notices)
    code = 0
    try:
        with dashboard:
            try:
                for event in pipeline.events():
                    dashboard.add(event)
                dashboard.set_state("finished")
                dashboard.hold()
            except KeyboardInterrupt:
                if dashboard.state != "finished":      # Ctrl-C while the final screen is held is no interruption
                    dashboard.set_state("stopping")
                    code = 130
    finally:
        pipeline.stop()
    if dashboard.events:
        console.print(dashboard.summary())
        console.print(_totals_line(pipeline, label), highlight=False)
    if code:
        Console(stderr=True).print("[yellow]stopped[/] (Ctrl-C)", highlight=False)
    return code
