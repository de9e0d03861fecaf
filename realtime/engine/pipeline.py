"""The live pipeline: capture -> windows -> Whisper -> features -> score -> events.

Each stage runs on its own daemon thread; stages are joined by bounded queues, so the pipeline
never falls behind without bound:

    capture ──frames──> vision (MediaPipe at the featurizer's fps) ──faces──┐
       └──────audio──────────────────────────────────────────────────────> windows (Silero VAD)
    windows ──> [ASR queue: merge/drop when full] ──> asr (Whisper) ──> score (features + model)
    score ──> events (the caller's thread: `events()` / `run()`), and every sink's `on_event`.

When it is `realtime` (live capture, or a file paced at real time) and a stage cannot keep up:
frames waiting for the face featurizer are dropped (oldest first), and a window that finds the
ASR queue full is merged with the newest waiting window (or, past `max_merged_s`, the oldest
waiting one is dropped). Every drop and merge is counted in `PipelineStats`. Without `realtime`
(a file read as fast as possible) stages wait for each other instead, so results do not depend
on machine speed.

Faces reach the windower before the audio that closes their window: audio waits (at most
`face_wait_s` when realtime) until the face stream has caught up with it, so a window carries
the faces of its whole span. `latency_ms.total` runs from the arrival of the audio chunk that
closed the window (end of utterance detected) to the score being ready.

`stop()` (or Ctrl-C in the thread iterating `events()`) ends every stage within a second.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
from moodlens.realtime.engine.stats import PipelineStats
from moodlens.realtime.engine.streams import FrameSchedule, WindowQueue
from moodlens.core.errors import ConfigError, MoodlensError
from moodlens.core.options import Options
from moodlens.core.schema import MODALITIES
from moodlens.realtime.engine.events import WindowEvent
from moodlens.core.types import AudioChunk, FaceFeatures, VideoFrame, Window

_END = object()          # end of stream marker passed down the queues
_POLL_S = 0.05           # how often blocked stages look at the stop event




class Sink(Protocol):
    def on_audio(self, chunk: AudioChunk) -> None: ...
    def on_frame(self, frame: VideoFrame) -> None: ...
    def on_event(self, event: WindowEvent) -> None: ...
    def close(self) -> None: ...
    # optional: def on_face(self, face: FaceFeatures) -> None  (each face result of the tracker)


@dataclass
class PipelineOptions(Options):
    realtime: bool = True            # live or paced: drop/merge when behind; False: stages wait (files, fast)
    frame_queue_size: int = 4        # frames waiting for the face featurizer
    asr_queue_size: int = 2          # windows waiting for Whisper; a full queue merges (realtime)
    max_merged_s: float = 20.0       # a merged window never grows past this; the oldest is dropped instead
    face_wait_s: float = 0.3         # realtime: longest an audio chunk waits for the face stream
    score_batch: int = 8             # windows scored together when several are waiting
    no_audio_window_s: float = 3.0   # video without audio: vision-only windows of this length
    latency_history: int = 500       # windows kept for the latency percentiles

    def check(self, where: str = "pipeline options") -> None:
        for name in ("frame_queue_size", "asr_queue_size", "score_batch", "latency_history"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}: {name} must be at least 1, got {getattr(self, name)}.")
        for name in ("max_merged_s", "no_audio_window_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}: {name} must be positive, got {getattr(self, name)}.")
        if self.face_wait_s < 0:
            raise ConfigError(f"{where}: face_wait_s must not be negative, got {self.face_wait_s}.")


# The pipeline
# ---------------------------------------------------------------------------------------------

@dataclass
class _Transcribed:
    window: Window
    text: str
    asr_ms: float


class Pipeline:
    """Runs `source` through windows, Whisper, features and `scorer`; yields `WindowEvent`s.

    `source`: a MediaFileSource, LiveSource or SyntheticSource (iterates VideoFrame | AudioChunk).
    `scorer`: engine-A's Scorer (`score(batch)`, `backend_name`, `featurizer_config`).
    `vad`, `asr`: VadOptions / AsrOptions; `features`: FeaturizerConfig overrides (a dict) applied
    to the scorer's featurizer config (a value-changing override is refused by its compatibility
    check). `transcriber`, `featurizer`, `vision` may be given ready-made (shared between runs).
    """

    def __init__(self, source, scorer, options: PipelineOptions | None = None, sinks: Iterable[Sink] = (),
                 vad=None, asr=None, features: dict[str, Any] | None = None,
                 transcriber=None, featurizer=None, vision=None, windower=None):
        self.source = source
        self.scorer = scorer
        self.options = options or PipelineOptions()
        self.options.check()
        self.sinks = list(sinks)
        self.stats = PipelineStats(self.options.latency_history)
        self.stats.source = source
        self.stats.duration_s = getattr(source, "duration", None) or None
        self.has_audio = bool(getattr(source, "has_audio", True))
        self.has_video = bool(getattr(source, "has_video", True))
        self.stats.has_audio, self.stats.has_video = self.has_audio, self.has_video
        self.backend_name = str(getattr(scorer, "backend_name", type(scorer).__name__))
        self.device = str(getattr(scorer, "device", "cpu"))
        self.featurizer_config = self._featurizer_config(features)

        from moodlens.realtime.perception.vad import UtteranceWindower, VadOptions

        if windower is None and self.has_audio:
            windower = UtteranceWindower(vad or VadOptions())
        self.windower = windower
        if transcriber is None and self.has_audio:
            from moodlens.realtime.perception.asr import AsrOptions, Transcriber

            transcriber = Transcriber(asr or AsrOptions())
        self.transcriber = transcriber
        if featurizer is None:
            from moodlens.realtime.perception.features.featurizer import Featurizer

            featurizer = Featurizer(self.featurizer_config)
        self.featurizer = featurizer
        self._owns_vision = vision is None and self.has_video
        if self._owns_vision:
            from moodlens.realtime.perception.features.vision import VisionFeaturizer

            vision = VisionFeaturizer(self.featurizer_config)
        self.vision = vision

        # Event times are seconds from this origin: the source's own (media time for files opened
        # with origin=0) or else the first item's capture time.
        self.origin: float | None = getattr(source, "origin", None)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        realtime = self.options.realtime
        self._frames: queue.Queue = queue.Queue(self.options.frame_queue_size)
        self._window_in: queue.Queue = queue.Queue(512)
        self._asr_in = WindowQueue(self.options.asr_queue_size, realtime, self.options.max_merged_s,
                                   self.stats, self._stop)
        self._score_in: queue.Queue = queue.Queue(16)
        self._out: queue.Queue = queue.Queue()

    # ---- set-up ----------------------------------------------------------------------------
    def _featurizer_config(self, overrides: dict[str, Any] | None):
        from moodlens.realtime.perception.features.config import FeaturizerConfig

        base = getattr(self.scorer, "featurizer_config", None)
        if base is None:
            base = FeaturizerConfig()
        elif isinstance(base, dict):
            base = FeaturizerConfig.from_dict(base, source="featurizer config of the scoring checkpoint")
        if not overrides:
            return base
        live = dataclasses.replace(base, **overrides)
        base.check_compatible(live, where="the live config's features section")
        return live

    # ---- public API --------------------------------------------------------------------------
    def start(self) -> "Pipeline":
        if self._started:
            return self
        self._started = True
        self.stats.started = time.monotonic()
        stages = [("capture", self._capture_stage), ("windows", self._window_stage),
                  ("asr", self._asr_stage), ("score", self._score_stage)]
        if self.has_video:
            stages.insert(1, ("vision", self._vision_stage))
        for name, target in stages:
            thread = threading.Thread(target=self._guard, args=(target,), name=f"moodlens-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def events(self) -> Iterator[WindowEvent]:
        """Start (if needed) and yield each scored window; raises a stage's error here."""
        self.start()
        try:
            while True:
                try:
                    item = self._out.get(timeout=_POLL_S)
                except queue.Empty:
                    if self._error is not None:
                        raise self._error
                    if self._stop.is_set():
                        return
                    continue
                if item is _END:
                    if self._error is not None:
                        raise self._error
                    self.stats.finished_at = time.monotonic()
                    self.stats.finished = True
                    return
                yield item
        finally:
            self.stop()

    def run(self) -> list[WindowEvent]:
        return list(self.events())

    def stop(self, timeout: float = 0.6) -> None:
        """Stop every stage (each checks the stop event at least every 50 ms) and close the sinks."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        capture = next((t for t in self._threads if t.name == "moodlens-capture"), None)
        if capture is None or capture.is_alive():
            # Never started, or blocked inside a device read: closing the source releases the read.
            try:
                self.source.close()
            except Exception:
                pass
        if not self._closed:
            self._closed = True
            vision_thread = next((t for t in self._threads if t.name == "moodlens-vision"), None)
            # A face tracker still busy on a frame is closed by its own thread when it finishes.
            if self._owns_vision and not (vision_thread and vision_thread.is_alive()):
                self.vision.close()
            for sink in self.sinks:
                sink.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def error(self) -> BaseException | None:
        return self._error

    # ---- plumbing ------------------------------------------------------------------------------
    def _guard(self, stage) -> None:
        try:
            stage()
        except BaseException as err:  # handed to the caller's thread by events()
            if self._error is None:
                self._error = err
            self._stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        """Blocking put that gives up when the pipeline stops."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self._stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END

    # ---- stages ----------------------------------------------------------------------------------
    def _capture_stage(self) -> None:
        realtime = self.options.realtime
        face_schedule = FrameSchedule(self.featurizer_config.vision_fps)
        try:
            for item in self.source:
                if self._stop.is_set():
                    return
                if self.origin is None:
                    self.origin = item.t
                if isinstance(item, VideoFrame):
                    self.stats.saw(item.t, frame=True)
                    for sink in self.sinks:
                        sink.on_frame(item)
                    # Only frames the face tracker will use are queued, so a dropped frame is a real loss.
                    if self.vision is None or not face_schedule.due(item.t):
                        continue
                    if realtime:
                        self._put_dropping_oldest(item)
                    elif not self._put(self._frames, item):
                        return
                elif isinstance(item, AudioChunk):
                    self.stats.saw(item.t + item.duration)
                    self.stats.audio_level(item.samples)
                    for sink in self.sinks:
                        sink.on_audio(item)
                    if not self._put(self._window_in, ("audio", item, time.monotonic())):
                        return
        finally:
            # Released here, on the thread that reads it: device threads (a camera's capture loop)
            # must not outlive the pipeline and run into the interpreter's shutdown.
            try:
                self.source.close()
            except Exception:
                pass
            if self.has_video and self.vision is not None:
                self._put(self._frames, _END)
            self._put(self._window_in, ("audio_end", None, None))

    def _put_dropping_oldest(self, frame: VideoFrame) -> None:
        while True:
            try:
                self._frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._frames.get_nowait()
                    self.stats.add(frames_dropped=1)
                except queue.Empty:
                    pass

    def _vision_stage(self) -> None:
        try:
            self._track_faces()
        finally:
            if self._owns_vision and self._stop.is_set():
                self.vision.close()        # stop() could not: this thread was still using it

    def _track_faces(self) -> None:
        vision = self.vision
        # Optional sink method: sinks that keep face features (the recorder's privacy mode) get ours.
        face_sinks = [sink.on_face for sink in self.sinks if callable(getattr(sink, "on_face", None))]
        while True:
            frame = self._get(self._frames)
            if frame is _END:
                self._put(self._window_in, ("vision_end", None, None))
                return
            wants = getattr(vision, "wants", None)
            if wants is None or wants(frame.t):
                t0 = time.perf_counter()
                face = vision.process(frame)
                self.stats.face(bool(face.face_present), (time.perf_counter() - t0) * 1000)
                for on_face in face_sinks:
                    on_face(face)
                if not self._put(self._window_in, ("face", face, None)):
                    return
            # Every frame moves the face clock on, processed or skipped by the fps limit.
            if not self._put(self._window_in, ("mark", frame.t, None)):
                return

    def _window_stage(self) -> None:
        if self.windower is None:
            return self._vision_window_stage()
        windower = self.windower
        pending: deque[tuple[AudioChunk, float]] = deque()     # audio waiting for the face stream
        face_clock = -np.inf
        audio_done = False
        vision_done = not (self.has_video and self.vision is not None)
        wait_s = self.options.face_wait_s if self.options.realtime else np.inf
        while not self._stop.is_set():
            try:
                kind, payload, arrived = self._window_in.get(timeout=_POLL_S)
            except queue.Empty:
                kind = None
            if kind == "audio":
                pending.append((payload, arrived))
            elif kind == "face":
                windower.push_face(payload)
                face_clock = max(face_clock, payload.t)
            elif kind == "mark":
                face_clock = max(face_clock, payload)
            elif kind == "audio_end":
                audio_done = True
            elif kind == "vision_end":
                vision_done = True
            now = time.monotonic()
            while pending:
                chunk, arrived = pending[0]
                if not (vision_done or chunk.t + chunk.duration <= face_clock or now - arrived >= wait_s):
                    break
                pending.popleft()
                for window in windower.push_audio(chunk):
                    window.closed_at = arrived
                    self._close_window(window)
            if audio_done and vision_done and not pending:
                for window in windower.flush():
                    self._close_window(window)
                self._asr_in.put(_END)
                return

    def _vision_window_stage(self) -> None:
        """No sound track: vision-only windows of `no_audio_window_s` on the video clock."""
        length = self.options.no_audio_window_s
        faces: list[FaceFeatures] = []
        start: float | None = None
        next_id = 0
        vision_done = self.vision is None
        while not self._stop.is_set():
            try:
                kind, payload, _ = self._window_in.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if kind == "face":
                faces.append(payload)
            elif kind == "vision_end":
                vision_done = True
            if kind in ("face", "mark"):
                t = payload.t if kind == "face" else payload
                start = t if start is None else start
                while t >= start + length:
                    inside = [f for f in faces if f.t < start + length]
                    faces = [f for f in faces if f.t >= start + length]
                    self._close_window(Window(id=next_id, start=start, end=start + length,
                                              audio=np.zeros(0, np.float32), faces=inside,
                                              closed_at=time.monotonic()))
                    next_id += 1
                    start += length
            if vision_done:
                # The last, shorter window when it holds enough video to say something.
                if start is not None and faces and faces[-1].t - start >= 0.25 * length:
                    end = faces[-1].t + 1e-3
                    self._close_window(Window(id=next_id, start=start, end=end, audio=np.zeros(0, np.float32),
                                              faces=faces, closed_at=time.monotonic()))
                self._asr_in.put(_END)
                return

    def _close_window(self, window: Window) -> None:
        self.stats.add(windows_closed=1)
        self._asr_in.put(window)

    def _asr_stage(self) -> None:
        while not self._stop.is_set():
            window = self._asr_in.get()
            if window is None:
                continue
            if window is _END:
                self._put(self._score_in, _END)
                return
            text, asr_ms = "", 0.0
            if self.transcriber is not None and self.has_audio and len(window.audio):
                t0 = time.perf_counter()
                transcript = self.transcriber.transcribe(window.audio)
                asr_ms = (time.perf_counter() - t0) * 1000
                # The text alone decides (word timestamps may be switched off in the live config).
                text = (transcript.text or "").strip()
            if not self._put(self._score_in, _Transcribed(window, text, asr_ms)):
                return

    def _score_stage(self) -> None:
        while not self._stop.is_set():
            first = self._get(self._score_in)
            if first is _END:
                self._put(self._out, _END)
                return
            batch = [first]
            ended = False
            # Score what is already waiting in one batch (catches up after a slow window).
            while len(batch) < self.options.score_batch:
                try:
                    more = self._score_in.get_nowait()
                except queue.Empty:
                    break
                if more is _END:
                    ended = True
                    break
                batch.append(more)
            for event in self._score(batch):
                self.stats.record_latency(event.latency_ms)
                self.stats.add(windows_scored=1)
                for sink in self.sinks:
                    sink.on_event(event)
                self._out.put(event)
            if ended:
                self._out.put(_END)
                return

    def _score(self, items: list[_Transcribed]) -> list[WindowEvent]:
        t0 = time.perf_counter()
        samples = []
        for item in items:
            audio = item.window.audio if self.has_audio else np.zeros(0, np.float32)
            w = item.window
            samples.append(self.featurizer.span_sample(item.text, audio, w.faces, w.start, w.end))
        batch = self.featurizer.collate(samples)
        t1 = time.perf_counter()
        output = self.scorer.score(batch)
        done = time.monotonic()
        t2 = time.perf_counter()
        features_ms = (t1 - t0) * 1000 / len(items)
        # The scorer's own model time when it reports one (leaves out its input checks).
        model_ms = float(getattr(output, "model_ms", (t2 - t1) * 1000))
        present = np.asarray(batch.present.cpu() if hasattr(batch.present, "cpu") else batch.present, dtype=bool)
        events = []
        origin = self.origin or 0.0
        for i, item in enumerate(items):
            scores = scores_at(output, i)
            flags = {m: bool(present[i, j]) for j, m in enumerate(MODALITIES)}
            w = item.window
            fused = scores["fused"]
            if fused is None or not np.isfinite(fused):
                raise MoodlensError(f"The model gave a non-finite fused score for the window at {w.start:.2f} s.")
            events.append(WindowEvent(
                id=w.id, start=w.start - origin, end=w.end - origin, text=item.text, fused=float(fused),
                text_score=scores["text"] if flags["text"] else None,
                audio_score=scores["audio"] if flags["audio"] else None,
                vision_score=scores["vision"] if flags["vision"] else None,
                present=flags,
                latency_ms={"asr": item.asr_ms, "features": features_ms, "model": model_ms,
                            "total": max(0.0, (done - w.closed_at) * 1000) if w.closed_at else 0.0},
                backend=self.backend_name, interim=bool(w.interim), merged=getattr(w, "merged", 1),
            ))
        return events


def scores_at(output, i: int) -> dict[str, float | None]:
    """Scores of row `i` from a Scorer result: a list of dicts or a SentimentOutput-like tuple."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        row = output[i]
        return {k: _as_float(row.get(k)) for k in ("fused", *MODALITIES)}
    return {k: _as_float(np.asarray(getattr(output, k)).reshape(-1)[i]) for k in ("fused", *MODALITIES)}


def _as_float(x) -> float | None:
    if x is None:
        return None
    value = float(np.asarray(x).reshape(-1)[0]) if not isinstance(x, (int, float)) else float(x)
    return value
