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

The VAD hears each audio chunk as soon as it arrives; a window then waits (at most `face_wait_s`
when realtime) until the face stream has passed the window's *end*, and takes the faces of its
span, so it carries the faces of its whole span. A final closed by min_silence_s ends pad_s after
the speech, long before the chunk that confirms it, so it rarely waits at all; a speculative
window goes to Whisper at once (a transcript needs only the audio) and is pre-scored once its
faces are in. (Until session 2 the audio itself waited for the face clock, which held the
speculative decode back by 50-110 ms: docs/benchmarks.md.)

Latency is measured where it is felt, on the media clock: every window carries `speech_end` (the
last voiced sample the VAD saw) and its event `ready_at` (when the score was ready);
`latency_ms.speech_end` is the difference. A sample counts as spoken when the chunk carrying it
would have ended on a microphone: `speech_end_mono = arrival of its chunk - (chunk end -
speech_end)` (exact for a microphone, which delivers a block when it ends; one chunk pessimistic
for a paced file, which releases a chunk when it starts; for a file read `fast` it measures what
the pipeline adds from the moment the audio was read). `latency_ms.total` keeps its old meaning:
from the arrival of the audio chunk that closed the window (end of utterance detected) to the score.
Per stage (ms): `vad` speech end -> window closed (min_silence_s and the face wait), `queue` closed
-> Whisper started on it (0 when a speculative transcript was reused), `asr` Whisper's time,
`asr_wait` closed -> transcript ready, then `features` and `model`.

Speculative end of utterance: the windower emits a *speculative* window after a short silence;
Whisper transcribes it when it has nothing final to do. When the final window arrives with the
same span and the same samples its transcript is reused (`speculative: true` on the event);
when speech resumes first (a *cancel* marker) or the final differs, the result is dropped and
its Whisper time counted as wasted (`PipelineStats.spec_*`). It is never scored on its own.

Interim transcripts: *preview* windows of a still-open utterance are transcribed only when
Whisper has nothing final or speculative waiting (a newer preview replaces one that waits; a
skipped preview is counted, never queued), scored, and emitted as `interim: true` events with
the id of the final that will supersede them (sinks get them through an optional
`on_interim(event)`; `on_event` only ever sees finals).
Previews never start while the VAD hears a pause or a speculation of the utterance is pending
(a decode cannot be interrupted when the end comes). A second, lower-priority Whisper for interims
was measured and removed: on 2 cores it slowed the speculative decode as much as it saved
(docs/benchmarks.md).

`stop()` (or Ctrl-C in the thread iterating `events()`) ends every stage within a second.

The pipeline is handed built components (`engine/build.py` builds them from options); stages pass
typed messages (`AudioIn`, `FaceIn`, `FaceClock`, `StreamEnd`) through `BoundedQueue`s, each with
a named policy (`capture/streams.py`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Literal, Union

import numpy as np
from moodlens.core.errors import ConfigError
from moodlens.core.options import Options
from moodlens.core.types import AudioChunk, FaceFeatures, VideoFrame, Window
from moodlens.realtime.capture import Source
from moodlens.realtime.capture.streams import END, BoundedQueue, FrameRate
from moodlens.realtime.engine import Sink
from moodlens.realtime.engine.events import WindowEvent
from moodlens.realtime.engine.stats import PipelineStats
from moodlens.realtime.engine.streams import window_queue
from moodlens.realtime.perception import FaceTracker
from moodlens.realtime.scoring import BatchScorer

if TYPE_CHECKING:
    from moodlens.realtime.perception.asr import Transcriber
    from moodlens.realtime.perception.features.featurizer import Featurizer
    from moodlens.realtime.perception.vad import UtteranceWindower

_POLL_S = 0.05           # how often blocked stages look at the stop event


# Messages to the window stage (one queue, in arrival order)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioIn:
    chunk: AudioChunk
    arrived: float                 # monotonic time the capture stage got it


@dataclass(frozen=True)
class FaceIn:
    face: FaceFeatures


@dataclass(frozen=True)
class FaceClock:
    t: float                       # every frame moves the face clock on, processed or skipped


@dataclass(frozen=True)
class StreamEnd:
    stream: Literal["audio", "vision"]


WindowMessage = Union[AudioIn, FaceIn, FaceClock, StreamEnd]


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
    asr_started: float = 0.0       # monotonic
    asr_done: float = 0.0
    speculative: bool = False      # the transcript was a speculative decode, reused
    audio_states: np.ndarray | None = None   # Whisper encoder states of the window (when kept)
    prescored: "_Prescored | None" = None    # the speculation's score, for the identical window


@dataclass
class _Prescored:
    """A speculative window scored while min_silence_s was still running (features + model)."""
    faces: tuple                   # the face results it was featurized with (the final must hold the same)
    row: object                    # its WindowScores
    features_ms: float
    model_ms: float


@dataclass
class _Speculation:
    window: Window
    text: str | None = None        # None while Whisper is still on it
    asr_ms: float = 0.0
    cpu_ms: float = 0.0
    started: float = 0.0
    done: float = 0.0
    cancelled: bool = False
    states: np.ndarray | None = None
    prescored: _Prescored | None = None


class Pipeline:
    """Runs `source` through windows, Whisper, features and `scorer`; yields `WindowEvent`s.

    It is handed built components (`engine.build.build_pipeline` makes them from options):
    `featurizer` (whose config is the live featurizer config), `windower` and `transcriber` (None
    when the source has no audio), `vision` (the face tracker; None: no face tracking), `sinks`.
    `owns_vision`: the pipeline closes the tracker when it stops.
    """

    def __init__(self, source: Source, scorer: BatchScorer, options: PipelineOptions | None = None, *,
                 featurizer: "Featurizer", windower: "UtteranceWindower | None" = None,
                 transcriber: "Transcriber | None" = None, vision: FaceTracker | None = None,
                 sinks: Iterable[Sink] = (), owns_vision: bool = False):
        self.source = source
        self.scorer = scorer
        self.options = options or PipelineOptions()
        self.options.check()
        self.sinks = list(sinks)
        self.stats = PipelineStats(self.options.latency_history)
        self.stats.source = source
        self.stats.duration_s = source.duration or None
        self.has_audio, self.has_video = bool(source.has_audio), bool(source.has_video)
        self.stats.has_audio, self.stats.has_video = self.has_audio, self.has_video
        self.backend_name = str(scorer.backend_name)
        self.device = str(scorer.device)
        self.featurizer = featurizer
        self.featurizer_config = featurizer.config
        self.windower = windower          # None: vision-only windows
        self.transcriber = transcriber
        # Whisper-state audio features reuse the states of the window's transcription.
        self._keep_states = bool(featurizer.wants_encoder_states)
        self.vision = vision
        self._owns_vision = owns_vision and self.vision is not None

        # Event times are seconds from this origin: the source's own (media time for files opened
        # with origin=0; an optional member of a Source) or else the first item's capture time.
        self.origin: float | None = getattr(source, "origin", None)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        realtime, stop = self.options.realtime, self._stop
        # Frames waiting for the face tracker: realtime drops the oldest (counted), else waits.
        self._frames = BoundedQueue(self.options.frame_queue_size, stop=stop,
                                    policy="drop_oldest" if realtime else "block",
                                    on_drop=lambda _: self.stats.add(frames_dropped=1))
        self._window_in = BoundedQueue(512, stop=stop)
        self._asr_in = window_queue(self.options.asr_queue_size, realtime=realtime,
                                    max_merged_s=self.options.max_merged_s, stats=self.stats, stop=stop)
        self._score_in = BoundedQueue(16, stop=stop)
        self._out = BoundedQueue(None, stop=stop)       # the caller's thread takes them as they come
        # Early work for Whisper, below the finals in _asr_in: one speculative window and one
        # preview at most (newer replaces older), and the speculation being or already decoded.
        self._early_lock = threading.Lock()
        self._spec_waiting: Window | None = None
        self._spec: _Speculation | None = None
        self._preview_waiting: Window | None = None
        self._last_final_id = -1
        self._faced: deque[Window] = deque(maxlen=8)    # speculative windows whose faces are attached
        self.prescored_used = 0        # finals whose score was the speculation's (same window, same faces)
        # (start, end, arrival) of recent audio chunks: when each voiced sample was spoken.
        self._chunk_times: deque[tuple[float, float, float]] = deque(maxlen=8192)
        # Per utterance id, monotonic times of its steps (speculation routed / decoded / scored, final
        # routed, score ready) and the Whisper jobs that ran for it: the bench's per-window account.
        self.trace: dict[int, dict] = {}
        self._asr_job: tuple[str, int, float] | None = None     # (kind, id, started) Whisper is on now
        # (kind, id, started, done): every Whisper decode.
        self.asr_jobs: deque[tuple[str, int, float, float, str]] = deque(maxlen=4 * self.options.latency_history)

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

    def events(self, interim: bool = False) -> Iterator[WindowEvent]:
        """Start (if needed) and yield each scored window; raises a stage's error here.

        `interim=True` also yields the interim (preview) events, each before its final."""
        self.start()
        try:
            while True:
                item = self._out.get(_POLL_S)
                if item is None:
                    if self._error is not None:
                        raise self._error
                    if self._stop.is_set():
                        return
                    continue
                if item is END:
                    if self._error is not None:
                        raise self._error
                    self.stats.finished_at = time.monotonic()
                    self.stats.finished = True
                    return
                if item.interim and not interim:
                    continue
                yield item
        finally:
            self.stop()

    def run(self, interim: bool = False) -> list[WindowEvent]:
        return list(self.events(interim))

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

    def _get(self, q: BoundedQueue):
        """The next item, or END at the end of the stream or when the pipeline stops."""
        while not self._stop.is_set():
            item = q.get(_POLL_S)
            if item is not None:
                return item
        return END

    # ---- stages ----------------------------------------------------------------------------------
    def _capture_stage(self) -> None:
        face_rate = FrameRate(self.featurizer_config.vision_fps, early=0.25, what="vision_fps")
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
                    if self.vision is None or not face_rate.keep(item.t):
                        continue
                    if not self._frames.put(item):
                        return
                elif isinstance(item, AudioChunk):
                    self.stats.saw(item.t + item.duration)
                    self.stats.audio_level(item.samples)
                    for sink in self.sinks:
                        sink.on_audio(item)
                    if not self._window_in.put(AudioIn(item, time.monotonic())):
                        return
        finally:
            # Released here, on the thread that reads it: device threads (a camera's capture loop)
            # must not outlive the pipeline and run into the interpreter's shutdown.
            try:
                self.source.close()
            except Exception:
                pass
            self._frames.close()
            self._window_in.put(StreamEnd("audio"))

    def _vision_stage(self) -> None:
        try:
            self._track_faces()
        finally:
            if self._owns_vision and self._stop.is_set():
                self.vision.close()        # stop() could not: this thread was still using it

    def _track_faces(self) -> None:
        vision = self.vision
        while True:
            frame = self._get(self._frames)
            if frame is END:
                self._window_in.put(StreamEnd("vision"))
                return
            if vision.wants(frame.t):
                t0 = time.perf_counter()
                face = vision.process(frame)
                self.stats.face(bool(face.face_present), (time.perf_counter() - t0) * 1000)
                for sink in self.sinks:       # sinks that keep face features (the recorder's privacy mode)
                    sink.on_face(face)
                if not self._window_in.put(FaceIn(face)):
                    return
            if not self._window_in.put(FaceClock(frame.t)):
                return

    def _window_stage(self) -> None:
        if self.windower is None:
            return self._vision_window_stage()
        windower = self.windower
        # The VAD hears each audio chunk as soon as it arrives; a window waits here (in order) until the
        # face stream has passed its *end* (or `face_wait_s` when realtime), then takes the faces of its
        # span. A speculative window goes to Whisper at once (a transcript needs only the audio) and gets
        # its faces here later, for pre-scoring; the wait for faces overlaps Whisper's decode.
        gated: deque[Window] = deque()
        faces: deque[FaceFeatures] = deque()
        face_clock = -np.inf
        audio_done = False
        vision_done = not (self.has_video and self.vision is not None)
        wait_s = self.options.face_wait_s if self.options.realtime else np.inf
        while not self._stop.is_set():
            message = self._window_in.get(_POLL_S)
            if isinstance(message, AudioIn):
                chunk, arrived = message.chunk, message.arrived
                self._chunk_times.append((chunk.t, chunk.t + chunk.duration, arrived))
                for window in windower.push_audio(chunk, early=True):
                    window.closed_at = arrived
                    if window.kind in ("speculative", "cancel"):
                        self._route_window(window)      # a cancel needs no faces
                    if window.kind != "cancel":
                        gated.append(window)
            elif isinstance(message, FaceIn):
                faces.append(message.face)
                face_clock = max(face_clock, message.face.t)
            elif isinstance(message, FaceClock):
                face_clock = max(face_clock, message.t)
            elif isinstance(message, StreamEnd):
                if message.stream == "audio":
                    audio_done = True
                    gated.extend(windower.flush())
                else:
                    vision_done = True
            now = time.monotonic()
            while gated:
                window = gated[0]
                if not (vision_done or window.end <= face_clock or now - window.closed_at >= wait_s):
                    break
                gated.popleft()
                window.faces = [f for f in faces if window.start <= f.t < window.end]
                if window.kind == "speculative":
                    self._spec_faces_ready(window)
                else:
                    self._route_window(window)
            # Faces no window can take any more: older than every waiting window and the VAD's buffer.
            keep_from = min([w.start for w in gated] + [windower.buffer_start_t])
            while faces and faces[0].t < keep_from:
                faces.popleft()
            if audio_done and vision_done and not gated:
                self._asr_in.close()
                return

    def _vision_window_stage(self) -> None:
        """No sound track: vision-only windows of `no_audio_window_s` on the video clock."""
        length = self.options.no_audio_window_s
        faces: list[FaceFeatures] = []
        start: float | None = None
        next_id = 0
        vision_done = self.vision is None
        while not self._stop.is_set():
            message = self._window_in.get(_POLL_S)
            if message is None:
                continue
            if isinstance(message, FaceIn):
                faces.append(message.face)
            elif isinstance(message, StreamEnd) and message.stream == "vision":
                vision_done = True
            if isinstance(message, (FaceIn, FaceClock)):
                t = message.face.t if isinstance(message, FaceIn) else message.t
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
                self._asr_in.close()
                return

    def _close_window(self, window: Window) -> None:
        self.stats.add(windows_closed=1)
        self._asr_in.put(window)

    def _spoken_at(self, t: float | None) -> float | None:
        """Monotonic time the sample at clock time `t` was spoken (see the module docstring)."""
        if t is None:
            return None
        for start, end, arrived in reversed(self._chunk_times):
            if start <= t + 1e-9:
                return arrived - max(0.0, end - t)
        if self._chunk_times:                     # older than the history: extrapolate from the oldest
            start, end, arrived = self._chunk_times[0]
            return arrived - (end - t)
        return None

    def _mark(self, wid: int, key: str, value=None) -> None:
        """Note a step of utterance `wid` in `trace` (now, unless `value`); the oldest are forgotten."""
        entry = self.trace.get(wid)
        if entry is None:
            entry = self.trace[wid] = {}
            while len(self.trace) > self.options.latency_history:
                self.trace.pop(next(iter(self.trace)))
        entry[key] = time.monotonic() if value is None else value

    def _route_window(self, window: Window) -> None:
        """Finals to the ASR queue; speculative and preview windows to their one-place slots."""
        window.speech_end_mono = self._spoken_at(window.speech_end)
        kind = window.kind
        if kind in ("final", "speculative"):
            job = self._asr_job
            self._mark(window.id, f"{kind}_chunk", window.closed_at)
            self._mark(window.id, f"{kind}_routed")
            self._mark(window.id, f"{kind}_busy", "idle" if job is None else job[0])
            if window.speech_end_mono is not None:
                self._mark(window.id, "speech_end_mono", window.speech_end_mono)
        if kind == "final":
            return self._close_window(window)
        with self._early_lock:
            if kind == "speculative":
                if self._spec_waiting is not None:
                    self.stats.add(spec_skipped=1)
                self._spec_waiting = window
                self.stats.add(spec_emitted=1)
            elif kind == "cancel":
                # Speech resumed: the speculation for this utterance will not be the final.
                if self._spec_waiting is not None and self._spec_waiting.id == window.id:
                    self._spec_waiting = None
                    self.stats.add(spec_skipped=1)
                if self._spec is not None and self._spec.window.id == window.id:
                    self._spec.cancelled = True
                    if self._spec.text is not None:
                        self._discard_spec()
            elif kind == "preview":
                if self._preview_waiting is not None:
                    self.stats.add(interims_skipped=1)
                self._preview_waiting = window
        self._asr_in.wake()

    def _spec_faces_ready(self, window: Window) -> None:
        """The face stream has passed a speculative window's end: its faces are final, it can be pre-scored."""
        with self._early_lock:
            self._faced.append(window)
        self._mark(window.id, "speculative_faces")

    def _has_faces(self, window: Window) -> bool:
        with self._early_lock:
            return any(w is window for w in self._faced)

    def _discard_spec(self) -> None:
        """Drop the finished speculation (lock held): its Whisper time was spent for nothing."""
        spec, self._spec = self._spec, None
        if spec is not None and spec.text is not None:
            self.stats.add(spec_discarded=1, spec_wasted_ms=spec.asr_ms, spec_wasted_cpu_ms=spec.cpu_ms)

    def _asr_stage(self) -> None:
        while not self._stop.is_set():
            window = self._asr_in.get(_POLL_S, other_work=self._early_waiting)   # finals first
            if window is None:
                window = self._take_early()
                if window is None:
                    continue
            if window is END:
                self._score_in.close()
                return
            if window.kind == "speculative":
                self._speculate(window)
                continue
            item = self._transcribe_final(window) if window.kind == "final" else self._transcribe(window)
            if item is None:
                continue
            if not self._score_in.put(item):
                return

    def _early_waiting(self) -> bool:
        return self._spec_waiting is not None or self._preview_waiting is not None

    def _take_early(self) -> Window | None:
        """A speculative window first (it is for a final that is coming), then a preview."""
        with self._early_lock:
            window, self._spec_waiting = self._spec_waiting, None
            if window is not None and window.id <= self._last_final_id:
                self.stats.add(spec_skipped=1)
                window = None
            if window is None:
                window = self._take_preview()
            return window

    def _take_preview(self) -> Window | None:
        """The waiting preview (lock held), unless stale or the VAD hears a pause."""
        window, self._preview_waiting = self._preview_waiting, None
        # Not while the VAD hears a pause or a speculation of the utterance waits or runs: the end may be
        # coming, and a preview decode cannot be interrupted when the final (or its speculation) arrives.
        if window is None:
            return None
        running = self._spec.window if self._spec is not None and not self._spec.cancelled else None
        speculating = any(w is not None and w.id == window.id for w in (self._spec_waiting, running))
        if window.id <= self._last_final_id or self.windower.in_silence or speculating:
            self.stats.add(interims_skipped=1)
            window = None
        return window

    def _whisper(self, window: Window) -> tuple[str, float, float, float, float, np.ndarray | None]:
        """(text, Whisper ms, process CPU ms during it, started, done, encoder states or None) for a
        window's audio. The encoder states are kept when the featurizer's audio branch uses them, so
        Whisper's encoder runs once per utterance for both the transcript and the audio features."""
        started = time.monotonic()
        if self.transcriber is None or not self.has_audio or not len(window.audio):
            return "", 0.0, 0.0, started, started, None
        self._asr_job = (window.kind, window.id, started)
        cpu0, t0 = time.process_time(), time.perf_counter()
        transcript = (self.transcriber.transcribe(window.audio, keep_encoder_states=True) if self._keep_states
                      else self.transcriber.transcribe(window.audio))
        asr_ms = (time.perf_counter() - t0) * 1000
        self._asr_job = None
        self.asr_jobs.append((window.kind, window.id, started, time.monotonic()))
        # The text alone decides (word timestamps may be switched off in the live config).
        return ((transcript.text or "").strip(), asr_ms, (time.process_time() - cpu0) * 1000, started,
                time.monotonic(), getattr(transcript, "encoder_states", None))

    def _transcribe(self, window: Window) -> _Transcribed:
        text, asr_ms, _, started, done, states = self._whisper(window)
        return _Transcribed(window, text, asr_ms, started, done, audio_states=states)

    def _speculate(self, window: Window) -> None:
        with self._early_lock:
            self._discard_spec()              # an older finished one nobody claimed
            spec = self._spec = _Speculation(window)
        self.stats.add(spec_started=1)
        spec.text, spec.asr_ms, spec.cpu_ms, spec.started, spec.done, spec.states = self._whisper(window)
        if not spec.cancelled and self._has_faces(window):
            # Score it too while min_silence_s runs: when the end is confirmed with the same window
            # (same audio, same faces) the final's score is this one, ready at the confirmation.
            # Not before its faces are in (the face stream is late): the final is scored then.
            cpu0 = time.process_time()
            spec.prescored = self._prescore(window, spec.text, spec.states)
            spec.cpu_ms += (time.process_time() - cpu0) * 1000
            self._mark(window.id, "speculative_scored")
        with self._early_lock:
            if spec.cancelled and self._spec is spec:
                self._discard_spec()

    def _prescore(self, window: Window, text: str, states) -> _Prescored:
        t0 = time.perf_counter()
        audio = window.audio if self.has_audio else np.zeros(0, np.float32)
        sample = self.featurizer.span_sample(text, audio, window.faces, window.start, window.end, audio_states=states)
        batch = self.featurizer.collate([sample])
        features_ms = (time.perf_counter() - t0) * 1000
        output = self.scorer.score(batch)
        return _Prescored(tuple(window.faces), output.rows[0], features_ms, output.model_ms)

    def _transcribe_final(self, window: Window) -> _Transcribed:
        with self._early_lock:
            self._last_final_id = max(self._last_final_id, window.id)
            spec = self._spec
            reuse = (spec is not None and spec.text is not None and not spec.cancelled
                     and spec.window.id == window.id and window.merged == 1
                     and spec.window.start == window.start and spec.window.end == window.end
                     and np.array_equal(spec.window.audio, window.audio))
            if reuse:
                self._spec = None
                self.stats.add(spec_used=1)
            elif spec is not None and spec.window.id <= window.id and spec.text is not None:
                self._discard_spec()
            if self._spec_waiting is not None and self._spec_waiting.id <= window.id:
                self._spec_waiting = None
                self.stats.add(spec_skipped=1)
            if self._preview_waiting is not None and self._preview_waiting.id <= window.id:
                self._preview_waiting = None
                self.stats.add(interims_skipped=1)
        if reuse:
            pre = spec.prescored
            if pre is not None and (len(pre.faces) != len(window.faces)
                                    or any(a is not b for a, b in zip(pre.faces, window.faces))):
                pre = None            # a face result arrived for the span since: score it again
            if pre is not None:
                self.prescored_used += 1
            return _Transcribed(window, spec.text, spec.asr_ms, spec.started, spec.done, speculative=True,
                               audio_states=spec.states, prescored=pre)
        return self._transcribe(window)

    def _score_stage(self) -> None:
        while not self._stop.is_set():
            first = self._get(self._score_in)
            if first is END:
                self._out.close()
                return
            batch = [first]
            ended = False
            # Score what is already waiting in one batch (catches up after a slow window).
            while len(batch) < self.options.score_batch:
                more = self._score_in.get(0)
                if more is None:
                    break
                if more is END:
                    ended = True
                    break
                batch.append(more)
            events = self._score(batch)
            ready = {e.id: self._ready_mono for e in events}
            for event in events:
                if event.interim:
                    self.stats.add(interims_emitted=1)
                    for sink in self.sinks:
                        sink.on_interim(event)
                    self._out.put(event)
                    continue
                self.stats.record_latency(event.latency_ms)
                self.stats.add(windows_scored=1)
                self._mark(event.id, "ready", ready.get(event.id))
                for sink in self.sinks:
                    sink.on_event(event)
                self._out.put(event)
            if ended:
                self._out.close()
                return

    def _score(self, items: list[_Transcribed]) -> list[WindowEvent]:
        fresh = [item for item in items if item.prescored is None]
        rows, features_ms, model_ms = {}, 0.0, 0.0
        if fresh:
            t0 = time.perf_counter()
            samples = []
            for item in fresh:
                audio = item.window.audio if self.has_audio else np.zeros(0, np.float32)
                w = item.window
                samples.append(self.featurizer.span_sample(item.text, audio, w.faces, w.start, w.end,
                                                              audio_states=item.audio_states))
            batch = self.featurizer.collate(samples)
            t1 = time.perf_counter()
            output = self.scorer.score(batch)
            features_ms = (t1 - t0) * 1000 / len(fresh)
            model_ms = output.model_ms     # the scorer's own model time (leaves out its input checks)
            rows = {id(item): row for item, row in zip(fresh, output.rows)}
        done = self._ready_mono = time.monotonic()
        events = []
        origin = self.origin or 0.0
        for item in items:
            pre = item.prescored
            # Nulled by the scorer (absent or untrained modality). A pre-scored final's features and
            # model time were spent before its window closed.
            scores = pre.row if pre is not None else rows[id(item)]
            w = item.window
            closed = w.closed_at or done
            latency = {"asr": item.asr_ms, "features": pre.features_ms if pre else features_ms,
                       "model": pre.model_ms if pre else model_ms,
                       "total": max(0.0, (done - closed) * 1000) if w.closed_at else 0.0}
            speech_end = ready_at = None
            if w.speech_end is not None and w.speech_end_mono is not None:
                felt = max(0.0, done - w.speech_end_mono)
                speech_end, ready_at = w.speech_end - origin, w.speech_end - origin + felt
                latency["speech_end"] = felt * 1000
                latency["vad"] = max(0.0, closed - w.speech_end_mono) * 1000
            if item.asr_done:
                latency["queue"] = 0.0 if item.speculative else max(0.0, item.asr_started - closed) * 1000
                latency["asr_wait"] = max(0.0, item.asr_done - closed) * 1000
            events.append(WindowEvent(
                id=w.id, start=w.start - origin, end=w.end - origin, text=item.text, fused=scores.fused,
                text_score=scores.text, audio_score=scores.audio, vision_score=scores.vision,
                present=dict(scores.present), latency_ms=latency,
                backend=self.backend_name, interim=w.kind == "preview", cut=bool(w.interim),
                merged=w.merged, speech_end=speech_end, ready_at=ready_at,
                speculative=item.speculative,
            ))
        return events
