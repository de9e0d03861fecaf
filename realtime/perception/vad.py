"""Utterance windows: streaming Silero VAD (ONNX Runtime) cuts the audio into speech windows.

Silero VAD v6 (shipped with faster-whisper) takes 512 new samples (32 ms at 16 kHz) plus the last
64 samples of the previous frame as context, and carries an LSTM state (h, c) across frames. Run
frame by frame with that state and context it gives the same probabilities as faster-whisper's
batched `get_speech_timestamps`, so the streaming windows match the offline ones.

The windower is a streaming version of the usual Silero segmentation: speech starts when the
probability reaches `threshold`, an utterance closes after `min_silence_s` below `neg_threshold`
(probabilities in between keep the current state), utterances shorter than `min_speech_s` are
dropped, and windows are padded by `pad_s` each side without overlapping. When an utterance grows
past `max_utterance_s` an interim window is emitted with the audio since the last cut and the
utterance goes on (the next window starts where the interim one ended), so long monologues
still update the screen and Whisper never sees more than `max_utterance_s` of audio at once.

For the live pipeline (`push_audio(..., early=True)`) the windower also says what it expects
before it is sure: a *speculative* window when a silence has lasted `speculative_silence_s`
(the exact window the silence will close if it reaches `min_silence_s`, so its transcript can be
reused), a *cancel* marker when speech resumes after one, and *preview* windows of the open
utterance every `interim_every_s` once it is longer than `interim_min_s` (interim transcripts).
Every window carries `speech_end`, the clock time of the last voiced sample the VAD saw.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodlens.core.assets import SILERO_VAD, resolve_path
from moodlens.core.errors import AssetError, ConfigError, DataError
from moodlens.core.options import Options
from moodlens.core.types import AUDIO_SAMPLE_RATE, AudioChunk, Window
from moodlens.realtime.capture.streams import gap_samples

logger = logging.getLogger(__name__)

VAD_FRAME = 512          # new samples per Silero frame (32 ms at 16 kHz)
VAD_CONTEXT = 64         # samples of the previous frame the v5/v6 model expects in front
VAD_STATE_SHAPE = (1, 1, 128)
VAD_BATCH_FRAMES = 4096  # frames per ONNX call when a long clip is processed at once (~2 min)


@dataclass
class VadOptions(Options):
    mode: str = "vad"                 # "vad" (speech windows) or "fixed" (sliding windows)
    threshold: float = 0.5            # probability at or above which a frame is speech
    neg_threshold: float | None = None  # below this a frame is silence; None -> threshold - 0.15
    min_speech_s: float = 0.25        # shorter utterances are dropped
    min_silence_s: float = 0.4        # silence that closes an utterance (docs/benchmarks.md "Third pass")
    pad_s: float = 0.2                # audio kept before and after the speech
    max_utterance_s: float = 15.0     # an interim window is emitted past this length
    # Speculative end of utterance: after this much silence (before min_silence_s confirms the end)
    # a "speculative" window of the utterance as it would close is emitted, so Whisper can start
    # early. It fires no earlier than pad_s (the final window's audio ends pad_s after the speech).
    # 0 = off.
    speculative_silence_s: float = 0.2
    # Interim transcripts: while an utterance longer than interim_min_s goes on, a "preview" window
    # of the utterance so far every interim_every_s. 0 = off.
    interim_every_s: float = 1.0
    interim_min_s: float = 2.0
    fixed_window_s: float = 3.0       # "fixed" mode: window length
    fixed_hop_s: float = 1.0          # "fixed" mode: a window every hop
    model_path: str | None = None     # Silero ONNX file; None -> faster-whisper's asset
    threads: int = 1                  # ONNX Runtime intra-op threads

    def __post_init__(self) -> None:
        if self.mode not in ("vad", "fixed"):
            raise ConfigError(f"VadOptions.mode must be 'vad' or 'fixed', not '{self.mode}'.")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"VadOptions.threshold must be between 0 and 1, not {self.threshold}.")
        if self.neg_threshold is None:
            self.neg_threshold = max(self.threshold - 0.15, 0.01)
        if not 0.0 < self.neg_threshold <= self.threshold:
            raise ConfigError(
                f"VadOptions.neg_threshold must be in (0, threshold={self.threshold}], not {self.neg_threshold}."
            )
        for name in ("min_speech_s", "min_silence_s", "pad_s", "speculative_silence_s", "interim_every_s",
                     "interim_min_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"VadOptions.{name} must not be negative, got {getattr(self, name)}.")
        if self.max_utterance_s <= 2 * self.pad_s + VAD_FRAME / AUDIO_SAMPLE_RATE:
            raise ConfigError(
                f"VadOptions.max_utterance_s={self.max_utterance_s} must be longer than twice pad_s plus one frame."
            )
        if self.fixed_window_s <= 0 or self.fixed_hop_s <= 0:
            raise ConfigError("VadOptions.fixed_window_s and fixed_hop_s must be positive.")


class SileroVad:
    """Silero VAD v6 run frame by frame with ONNX Runtime, carrying LSTM state and context."""

    def __init__(self, model_path: str | Path | None = None, threads: int = 1):
        import onnxruntime

        path = resolve_path(SILERO_VAD, model_path)
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise AssetError(f"The Silero VAD model '{path}' could not be loaded by ONNX Runtime ({err}).") from err
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"input", "h", "c"} or inputs["input"][-1] != VAD_FRAME + VAD_CONTEXT:
            raise AssetError(
                f"The VAD model '{path}' has inputs {inputs}; expected Silero v6 (input [N, 576], h, c [1, 1, 128])."
            )
        self.path = path
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(VAD_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(VAD_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(VAD_CONTEXT, dtype=np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Speech probability of each consecutive 512-sample frame in `frames` (length a multiple of 512).

        The model treats the rows of one call as consecutive time steps, so several frames can be
        passed at once and the state still flows through them in order.
        """
        frames = np.asarray(frames, dtype=np.float32).reshape(-1, VAD_FRAME)
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        out = []
        for start in range(0, len(frames), VAD_BATCH_FRAMES):   # bounded memory on long clips
            block = frames[start:start + VAD_BATCH_FRAMES]
            context = np.concatenate([self._context[None, :], block[:-1, -VAD_CONTEXT:]], axis=0)
            batch = np.concatenate([context, block], axis=1)
            probs, self._h, self._c = self.session.run(None, {"input": batch, "h": self._h, "c": self._c})
            self._context = block[-1, -VAD_CONTEXT:].copy()
            out.append(np.asarray(probs, dtype=np.float32).reshape(-1))
        return np.concatenate(out)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities for a whole clip from a fresh state (the clip is zero-padded to whole frames)."""
        self.reset()
        pad = (-len(audio)) % VAD_FRAME
        return self(np.pad(np.asarray(audio, dtype=np.float32), (0, pad)))


class UtteranceWindower:
    """Feeds audio chunks through Silero VAD and emits utterance `Window`s (audio only: the pipeline's
    window stage gives each window the faces of its span once the face stream has passed it)."""

    def __init__(self, options: VadOptions | None = None, vad: SileroVad | None = None):
        self.options = options or VadOptions()
        o = self.options
        self.vad = None if o.mode == "fixed" else (vad or SileroVad(o.model_path, o.threads))
        sr = AUDIO_SAMPLE_RATE
        self._pad = int(round(o.pad_s * sr))
        self._min_speech = int(round(o.min_speech_s * sr))
        self._min_silence = int(round(o.min_silence_s * sr))
        self._max_len = int(round(o.max_utterance_s * sr))
        self._fixed_len = int(round(o.fixed_window_s * sr))
        self._fixed_hop = int(round(o.fixed_hop_s * sr))
        # Speculation fires once the final window's audio (speech + pad) is all there.
        self._spec_silence = max(int(round(o.speculative_silence_s * sr)), self._pad) if o.speculative_silence_s else 0
        if o.mode == "vad" and 0 < o.speculative_silence_s < o.pad_s:
            # Why a shorter speculative silence measured no gain: the window it would reuse is not all there yet.
            logger.info("speculative_silence_s=%.3g is below pad_s=%.3g: speculation starts after pad_s of silence "
                        "(the final window holds pad_s of audio after the speech).", o.speculative_silence_s, o.pad_s)
        self._interim_every = int(round(o.interim_every_s * sr))
        self._interim_min = int(round(o.interim_min_s * sr))
        self._next_id = 0
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        if self.vad is not None:
            self.vad.reset()
        self._t0: float | None = None       # clock time of sample 0
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0              # absolute sample index of _buffer[0]
        self._received = 0                  # absolute samples received
        self._analyzed = 0                  # absolute samples run through the VAD
        self._triggered = False
        self._speech_start = 0              # where the current utterance began (absolute samples)
        self._piece_start = 0               # padded start of the current (possibly interim-cut) piece
        self._temp_end = 0                  # start of the silence that may end the utterance (0 = none)
        self._last_end = 0                  # end of the last emitted window: windows never overlap
        self._cut_by_max = False            # the open utterance already gave an interim window
        self._last_voiced = 0               # end of the last frame that was not silence (absolute samples)
        self._speculated = 0                # the silence start a speculative window was emitted for (0 = none)
        self._next_preview = 0              # analyzed-sample mark of the next preview window
        self._next_fixed_end = self._fixed_len
        self._last_fixed_end = 0

    @property
    def in_silence(self) -> bool:
        """An utterance is open and the VAD is in a silence that may end it."""
        return bool(self._triggered and self._temp_end)

    @property
    def speculation_after_s(self) -> float:
        """Silence after which a speculative window is emitted (0: off): max(speculative_silence_s, pad_s),
        rounded up to whole VAD frames by the streaming."""
        return self._spec_silence / AUDIO_SAMPLE_RATE

    @property
    def buffer_start_t(self) -> float:
        """Clock time of the oldest sample a future window can start at (earlier audio is gone)."""
        return self._time(self._buffer_start) if self._t0 is not None else -np.inf

    # -- inputs ------------------------------------------------------------------------------
    def push_audio(self, chunk: AudioChunk | np.ndarray, t: float | None = None, *, early: bool = False) -> list[Window]:
        """Add audio (an AudioChunk, or raw samples at time `t`); return the windows it closes.

        `early=True` (the live pipeline) also returns the speculative and preview windows and the
        "cancel" markers (speech resumed after a speculative window), in stream order."""
        if isinstance(chunk, AudioChunk):
            samples, t = chunk.samples, chunk.t
        else:
            samples = chunk
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            raise DataError(f"An audio chunk at t={t} holds NaN or infinite samples.")
        if self._t0 is None:
            self._t0 = float(t) if t is not None else 0.0
        elif t is not None:
            # A dropped microphone chunk leaves a hole in time: fill it so spans stay on the clock.
            gap = gap_samples(float(t), self._time(self._received))
            if gap:
                samples = np.concatenate([np.zeros(gap, dtype=np.float32), samples])
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += len(samples)
        out = self._fixed_windows() if self.options.mode == "fixed" else self._vad_windows()
        return out if early else [w for w in out if w.kind == "final"]

    def flush(self) -> list[Window]:
        """End of stream: close the open utterance (or emit the last partial fixed window)."""
        out: list[Window] = []
        if self.options.mode == "fixed":
            if self._received > self._last_fixed_end:
                out.append(self._emit(max(0, self._received - self._fixed_len), self._received, interim=False))
        elif self._triggered:
            end = self._temp_end or self._received
            if end - self._speech_start >= self._min_speech or self._cut_by_max:
                out.append(self._emit(self._piece_start, min(self._received, end + self._pad), interim=False,
                                      speech_end=self._temp_end or self._last_voiced))
            self._triggered = False
            self._speculated = 0
        return out

    # -- segmentation --------------------------------------------------------------------------
    def _vad_windows(self) -> list[Window]:
        out: list[Window] = []
        whole = (self._received - self._analyzed) // VAD_FRAME
        if whole == 0:
            return out
        frames = self._slice(self._analyzed, self._analyzed + whole * VAD_FRAME)
        probs = self.vad(frames)
        o = self.options
        for prob in probs:
            frame_start = self._analyzed
            self._analyzed += VAD_FRAME
            if not self._triggered:
                if prob >= o.threshold:
                    self._triggered = True
                    self._speech_start = frame_start
                    self._piece_start = max(self._last_end, frame_start - self._pad, 0)
                    self._temp_end = 0
                    self._cut_by_max = False
                    self._last_voiced = self._analyzed
                    self._speculated = 0
                    self._next_preview = self._piece_start + max(self._interim_min, self._interim_every)
                continue
            if prob >= o.neg_threshold:
                self._last_voiced = self._analyzed
            if prob >= o.threshold:
                if self._speculated:
                    # Speech resumed: the speculative window is stale (the pipeline drops its result).
                    out.append(self._emit_marker("cancel"))
                    self._speculated = 0
                self._temp_end = 0
            elif prob < o.neg_threshold:
                if not self._temp_end:
                    self._temp_end = frame_start
                end = self._temp_end
                long_enough = end - self._speech_start >= self._min_speech
                if self._analyzed - self._temp_end >= self._min_silence:
                    self._triggered = False
                    self._temp_end = 0
                    self._speculated = 0
                    # A piece after an interim cut is always emitted: it finishes the utterance.
                    if long_enough or self._cut_by_max:
                        out.append(self._emit(self._piece_start, min(self._analyzed, end + self._pad), interim=False,
                                              speech_end=end))
                    continue
                if (self._spec_silence and self._speculated != end and (long_enough or self._cut_by_max)
                        and self._analyzed - end >= self._spec_silence):
                    # The window this silence would close, if it lasts: same span, same audio.
                    self._speculated = end
                    out.append(self._emit(self._piece_start, end + self._pad, interim=False, speech_end=end,
                                          kind="speculative"))
            if self._triggered and self._analyzed - self._piece_start >= self._max_len:
                cut = self._analyzed
                if self._speculated:
                    out.append(self._emit_marker("cancel"))
                    self._speculated = 0
                out.append(self._emit(self._piece_start, cut, interim=True, speech_end=self._last_voiced))
                self._piece_start = cut
                self._cut_by_max = True
                self._next_preview = cut + max(self._interim_min, self._interim_every)
            elif (self._interim_every and self._triggered and not self._temp_end
                  and self._analyzed >= self._next_preview):
                # The utterance so far, for an interim transcript; the final supersedes it.
                out.append(self._emit(self._piece_start, self._analyzed, interim=False,
                                      speech_end=self._last_voiced, kind="preview"))
                self._next_preview = self._analyzed + self._interim_every
        self._trim()
        return out

    def _fixed_windows(self) -> list[Window]:
        out: list[Window] = []
        while self._received >= self._next_fixed_end:
            end = self._next_fixed_end
            out.append(self._emit(max(0, end - self._fixed_len), end, interim=False))
            self._last_fixed_end = end
            self._next_fixed_end += self._fixed_hop
        self._trim()
        return out

    # -- helpers -------------------------------------------------------------------------------
    def _time(self, sample: int) -> float:
        return (self._t0 or 0.0) + sample / AUDIO_SAMPLE_RATE

    def _slice(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._buffer_start:end - self._buffer_start]

    def _emit(self, start: int, end: int, interim: bool, speech_end: int | None = None,
              kind: str = "final") -> Window:
        start = max(start, self._buffer_start)
        final = kind == "final"
        if self.options.mode == "vad" and final:
            self._last_end = end
        t_start, t_end = self._time(start), self._time(end)
        window = Window(
            # Speculative and preview windows carry the id their final will have.
            id=self._next_id, start=t_start, end=t_end, audio=self._slice(start, end).copy(),
            interim=interim, closed_at=time.monotonic(), kind=kind,
            speech_end=self._time(speech_end if speech_end is not None else end),
        )
        if final:
            self._next_id += 1
        return window

    def _emit_marker(self, kind: str) -> Window:
        """A window without audio that tells the pipeline something (kind "cancel": speech resumed)."""
        t = self._time(self._analyzed)
        return Window(id=self._next_id, start=t, end=t, audio=np.zeros(0, np.float32), kind=kind,
                      closed_at=time.monotonic())

    def _trim(self) -> None:
        """Drop audio no future window can reach."""
        if self.options.mode == "fixed":
            keep_from = self._next_fixed_end - self._fixed_len
        elif self._triggered:
            keep_from = self._piece_start
        else:
            keep_from = max(self._last_end, self._analyzed - self._pad - VAD_FRAME)
        keep_from = max(keep_from, self._buffer_start)
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start:]
            self._buffer_start = keep_from


def split_utterances(audio: np.ndarray, options: VadOptions | None = None) -> list[tuple[float, float]]:
    """(start, end) seconds of each window of a whole clip (from t=0), interim pieces included."""
    windower = UtteranceWindower(options)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    spans: list[tuple[float, float]] = []
    block = 60 * AUDIO_SAMPLE_RATE    # fed a minute at a time so the windower's buffer stays small
    for start in range(0, len(audio), block):
        spans += [(w.start, w.end) for w in windower.push_audio(audio[start:start + block], t=start / AUDIO_SAMPLE_RATE)]
    spans += [(w.start, w.end) for w in windower.flush()]
    return spans
