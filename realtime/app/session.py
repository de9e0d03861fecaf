"""The application layer: one session runner behind `moodlens demo`, `live`, `run` and `replay`.

`run_session` opens the source, loads the engine, runs the pipeline on the dashboard or headless and
records the session if asked; `play_file` and `rescore_session` are its callers for a media file and
for a recorded session's media, `replay_recorded` shows recorded windows again without a model.
Commands only turn their arguments into these calls (`SessionOutput` holds the output flags).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console

from moodlens.core.errors import ConfigError


@dataclass
class SessionOutput:
    """Where a session's events go: the dashboard, or (headless) JSON lines; a JSONL file; a recording."""

    headless: bool = False
    jsonl: str | None = None          # a file; "-" = stdout; None = nowhere (stdout when headless)
    record: Path | None = None        # a new session folder
    record_video: str | None = None   # mp4 | faces | none (None: the config's recording.video)

    def check(self) -> "SessionOutput":
        """Refuse contradictory flags in one sentence; a headless run without --jsonl writes to stdout."""
        if self.record_video and self.record is None:
            raise ConfigError(f"--record-video {self.record_video} chooses what a recording keeps; "
                              f"add --record DIR to record a session.")
        if self.record is not None:
            from moodlens.realtime.sessions.writer import SessionRecorder

            SessionRecorder.check_folder(self.record)   # before any work: a refused folder loses nothing
        jsonl = "-" if self.jsonl is None and self.headless else self.jsonl
        if jsonl == "-" and not self.headless and Console().is_terminal:
            raise ConfigError("--jsonl - writes events to the terminal the dashboard is drawn on; "
                              "add --headless, or give --jsonl a file name.")
        return dataclasses.replace(self, jsonl=jsonl)


def load_config(path=None, *, backend: str | None = None, checkpoint: str | None = None,
                device: str | None = None):
    """The live config (configs/live/default.yaml overlaid with `path`) with the engine overrides."""
    from moodlens.realtime.app.live_config import load_live_config

    config = load_live_config(path)
    if backend:
        config.engine.backend = backend
    if checkpoint:
        config.engine.checkpoint = str(checkpoint)
    if device:
        config.engine.device = device
    return config


def build_scorer(engine):
    """The Scorer for the configured checkpoint and backend (warmed up)."""
    from moodlens.realtime.scoring.scorer import Scorer

    scorer = Scorer(engine.checkpoint, backend=engine.backend, device=engine.device)
    scorer.warmup()
    return scorer


def configured_pipeline(source, scorer, config, *, realtime: bool, vision=None, transcriber=None):
    """The pipeline over `source` with the config's VAD, ASR, feature and pipeline options."""
    from moodlens.realtime.engine import build

    options = dataclasses.replace(config.pipeline, realtime=realtime)
    return build.build_pipeline(source, scorer, options, vad=config.vad, asr=config.asr, features=config.features,
                    vision=vision, transcriber=transcriber)


def run_session(open_source: Callable[[], object], *, label: str, config, output: SessionOutput, realtime: bool,
                source_info: dict, notices: list[str] | None = None, scorer=None,
                vision: Callable[[object, object], object] | None = None) -> int:
    """Open the source, load the engine, run the pipeline on the dashboard (or headless); the exit code.

    `vision(source, scorer)` may hand the pipeline a stand-in for its face tracker (a rescore of a
    face-features-only session feeds the recorded features)."""
    err = Console(stderr=True)
    output = output.check()
    # The source first: a missing or corrupt file fails in a moment, before minutes of loading.
    source = open_source()
    pipeline = None
    recorder = None
    code = None          # stays None when an error ends the run
    try:
        with err.status("Loading the scoring engine…", spinner="dots"):
            scorer = scorer or build_scorer(config.engine)
        stand_in = vision(source, scorer) if vision is not None else None
        with err.status("Loading Whisper, the voice detector and the face tracker…", spinner="dots"):
            pipeline = configured_pipeline(source, scorer, config, realtime=realtime, vision=stand_in)
        if output.jsonl not in (None, "-"):
            from moodlens.realtime.engine.events import JsonlSink

            pipeline.sinks.append(JsonlSink(output.jsonl))
        if output.record is not None:
            # The recorder reports a failure (disk full, folder not writable) through on_error on its
            # own thread: printed to stderr it would be painted over by the full-screen dashboard, so
            # the dashboard polls `recorder.error` instead and the sentence is printed after the run.
            recorder = make_recorder(output.record, config, scorer, pipeline, source_info, realtime,
                                     video=output.record_video, on_error=lambda sentence: None)
            pipeline.sinks.append(recorder)
        if output.headless or not Console().is_terminal:
            code = run_headless(pipeline, label, err, to_stdout=output.jsonl == "-", fancy=not output.headless)
        else:
            alert = (lambda: recorder.error) if recorder is not None else None
            code = run_dashboard(pipeline, label, config, notices or [], alert=alert)
    except KeyboardInterrupt:          # while loading
        err.print("[yellow]interrupted[/]", highlight=False)
        code = 130
    finally:
        if recorder is not None:      # before pipeline.stop(), which closes its sinks, the recorder too
            recorder.end_reason = end_reason_for(code)
        if pipeline is not None:
            pipeline.stop()
        else:
            source.close()
        if recorder is not None:
            close_recorder(recorder, output.record, code, err)
    return recording_exit_code(code, recorder)


def end_reason_for(code: int | None) -> str:
    """session.json `end_reason` from the run's exit code (None: an error is on its way out)."""
    return "error" if code is None else ("interrupted" if code == 130 else "completed")


def close_recorder(recorder, folder, code: int | None, err: Console) -> None:
    """Close the recording noting why it ended (session.json `end_reason`), and say how it went
    (after the dashboard is gone). `code` None: an error is on its way out."""
    recorder.close(reason=end_reason_for(code))
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


def play_file(path, *, label: str, config, output: SessionOutput, pace: str | None = None,
              kind: str = "file") -> int:
    """A media file through the session runner (`moodlens run`, `moodlens demo`); `pace` defaults to
    realtime on the dashboard and fast when headless."""
    from moodlens.realtime.capture.media import MediaFileSource

    pace = pace or ("fast" if output.headless else "realtime")
    path = Path(path).expanduser()
    s = config.sources

    def open_source():
        return MediaFileSource(path, pace=pace, video_fps=s.video_fps, origin=0.0, max_size=s.max_size)

    info = {"kind": kind, "path": str(path.resolve() if kind == "file" else path), "pace": pace}
    return run_session(open_source, label=label, config=config, output=output, realtime=pace == "realtime",
                       source_info=info)


def rescore_session(session, *, config, output: SessionOutput, speed: float) -> int:
    """A recorded session's audio and video through the live pipeline and the configured model."""
    from moodlens.realtime.sessions.replay import RecordedSource

    realtime = speed > 0 and not output.headless

    def open_source():
        return RecordedSource(session, pace="realtime" if realtime else "fast", speed=speed)

    def vision(source, scorer):
        stand_in = source.vision_stand_in()
        if stand_in is not None and session.featurizer_config:
            # Recorded face features are only meaningful to a model whose featurizer computes the same.
            from moodlens.realtime.perception.features.config import FeaturizerConfig

            live = scorer.featurizer_config
            live = FeaturizerConfig.from_dict(live) if isinstance(live, dict) else live
            live.check_compatible(session.featurizer_config, where=f"the recorded face features of {session.folder}")
        return stand_in

    info = {"kind": "rescore", "session": str(session.folder), "session_id": session.info.get("session_id")}
    return run_session(open_source, label=f"rescore {session.name}", config=config, output=output,
                       realtime=realtime, source_info=info, vision=vision)


def replay_recorded(session, *, output: SessionOutput, speed: float) -> int:
    """The recorded windows again, at `speed` (0 = at once), on the dashboard or as JSON lines."""
    from moodlens.realtime.engine.events import JsonlSink
    from moodlens.realtime.sessions.replay import ReplayClock, replay_events

    output = output.check()
    err = Console(stderr=True)
    if not session.windows:
        err.print(f"session {session.name} has no scored windows to replay", highlight=False)
        return 0
    sinks = [JsonlSink(output.jsonl)] if output.jsonl not in (None, "-") else []
    label = f"replay {session.name}" + (f" ×{speed:g}" if speed not in (0, 1) else "")
    clock = ReplayClock(session, speed)
    count = 0
    try:
        if output.headless or not Console().is_terminal:
            for event in replay_events(session, speed):
                count += 1
                clock.add(event)
                for sink in sinks:
                    sink.on_event(event)
                if output.jsonl == "-":
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
                for event in pipeline.events(interim=True):   # the dashboard shows sentences as they grow
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
