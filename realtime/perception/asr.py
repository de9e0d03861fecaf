"""Speech recognition with faster-whisper (CTranslate2): one warm model, word timestamps.

Windows arrive already cut by the VAD, so Whisper's own VAD filter is off, and each window is
decoded on its own (no conditioning on the previous text, which only helps long-form files and
lets one hallucination leak into the next window). Greedy decoding at temperature 0 by default
keeps the latency bounded; beam size and temperature fallback are options.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from moodlens.core.assets import WHISPER_TINY_EN, resolve
from moodlens.core.errors import AssetError, ConfigError, DataError
from moodlens.core.options import Options
from moodlens.core.types import AUDIO_SAMPLE_RATE

# Whisper on less audio than this returns noise words; such windows get an empty transcript.
MIN_AUDIO_S = 0.1


@dataclass
class AsrOptions(Options):
    model: str | None = None          # CTranslate2 model folder, or a size name ("base.en") where the hub is reachable
    language: str | None = "en"       # None = detect (multilingual models only)
    beam_size: int = 1
    temperature: tuple[float, ...] = (0.0,)   # add higher values to enable Whisper's fallback
    device: str = "auto"              # auto | cpu | cuda
    compute_type: str | None = None   # None -> int8 on CPU, float16 on CUDA
    cpu_threads: int | None = None    # None -> min(4, CPU count)
    word_timestamps: bool = True
    # Decode without Whisper's timestamp tokens (one segment per window: the VAD already cut it).
    without_timestamps: bool = False
    no_speech_threshold: float = 0.6
    # Cap on decoded tokens per second of audio: real speech needs ~3-5, a hallucination loop
    # runs to Whisper's 224-token limit and stalls the live view. None = no cap.
    max_tokens_per_s: float | None = 12.0
    # Encoder input policy (features/whisper_states.py `encoder_input_frames`): "30s" (Whisper's
    # padding), "15s", "10s" or "adaptive" (the window + a margin; a cut input is decoded
    # without timestamp tokens, see transcribe). None = the featurizer config's
    # `whisper_input` where a pipeline or featurizer builds the Transcriber, else "30s".
    whisper_input: str | None = None
    # Level the audio is brought to before Whisper (features/whisper_states.py `normalise_level`): "none"
    # or "rms_-23". None = the featurizer config's `audio_level` where a pipeline or featurizer builds the
    # Transcriber, else "none". Transcription and encoder states read the same normalised audio.
    audio_level: str | None = None
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"AsrOptions.device must be auto, cpu or cuda, not '{self.device}'.")
        if self.beam_size < 1:
            raise ConfigError(f"AsrOptions.beam_size must be at least 1, not {self.beam_size}.")
        if isinstance(self.temperature, (int, float)):
            self.temperature = (float(self.temperature),)
        self.temperature = tuple(float(t) for t in self.temperature)
        if self.max_tokens_per_s is not None and self.max_tokens_per_s <= 0:
            raise ConfigError(f"AsrOptions.max_tokens_per_s must be positive or null, not {self.max_tokens_per_s}.")
        if self.whisper_input is not None:
            from moodlens.realtime.perception.features.config import WHISPER_INPUTS

            if self.whisper_input not in WHISPER_INPUTS:
                raise ConfigError(f"AsrOptions.whisper_input must be one of {', '.join(WHISPER_INPUTS)} or null, "
                                  f"not '{self.whisper_input}'.")
        if self.audio_level is not None:
            from moodlens.realtime.perception.features.config import AUDIO_LEVELS

            if self.audio_level not in AUDIO_LEVELS:
                raise ConfigError(f"AsrOptions.audio_level must be one of {', '.join(AUDIO_LEVELS)} or null, "
                                  f"not '{self.audio_level}'.")
        if self.cpu_threads is not None and self.cpu_threads < 0:
            raise ConfigError(f"AsrOptions.cpu_threads must not be negative, not {self.cpu_threads}.")

    def for_features(self, config) -> "AsrOptions":
        """These options with `whisper_input` and `audio_level` taken from the featurizer config
        (FeaturizerConfig or its dict; absent = "30s" / "none") where unset, so transcription and audio
        features share one encoder input at one level."""
        def get(key, default):
            return config.get(key, default) if isinstance(config, dict) else getattr(config, key)

        changes = {}
        if self.whisper_input is None:
            changes["whisper_input"] = get("whisper_input", "30s")
        if self.audio_level is None:
            changes["audio_level"] = get("audio_level", "none")
        return dataclasses.replace(self, **changes) if changes else self


@dataclass
class Word:
    text: str
    start: float         # seconds (from the start of the audio, plus the `offset` given to transcribe)
    end: float
    probability: float


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    language: str | None = None
    duration_s: float = 0.0      # audio length
    elapsed_s: float = 0.0       # wall time spent in Whisper
    # Whisper encoder states of this audio ((ceil(N / 320), d_model), 20 ms each) when asked for with
    # keep_encoder_states=True; the audio features reuse them (realtime/features/whisper_states.py).
    encoder_states: np.ndarray | None = None


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # a CPU-only CTranslate2 build
        return False


_MODELS: dict[tuple, object] = {}
_MODEL_LOCKS: dict[int, threading.Lock] = {}   # one per shared model: CTranslate2 calls are serialized
_MODELS_LOCK = threading.Lock()


def _load_model(source: str, device: str, compute_type: str, threads: int):
    """One WhisperModel per (model, device, precision, threads) in the process: loaded once, shared."""
    from faster_whisper import WhisperModel

    key = (source, device, compute_type, threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            try:
                _MODELS[key] = WhisperModel(source, device=device, compute_type=compute_type, cpu_threads=threads)
                _MODEL_LOCKS[id(_MODELS[key])] = threading.Lock()
            except Exception as err:  # CTranslate2 / hub errors have many types; all mean "no usable model"
                if os.path.isdir(source):
                    raise AssetError(f"The Whisper model folder '{source}' could not be loaded on {device} ({compute_type}): {err}.") from err
                raise AssetError(
                    f"The Whisper model '{source}' is not on this machine and could not be downloaded; "
                    f"pass a local CTranslate2 model folder or set {WHISPER_TINY_EN.env_var} ({type(err).__name__})."
                ) from err
        return _MODELS[key]


class Transcriber:
    """Whisper loaded once (and warmed up); `transcribe(audio)` returns text and timed words."""

    def __init__(self, options: AsrOptions | None = None):
        self.options = o = options or AsrOptions()
        source = resolve(WHISPER_TINY_EN, o.model, allow_hub=True)
        self.model_source = str(source)
        name = os.path.basename(self.model_source.rstrip("/"))
        if name.endswith(".en") and o.language not in (None, "en"):
            raise ConfigError(f"The English-only Whisper model '{name}' cannot transcribe language '{o.language}'.")
        self.device = ("cuda" if _cuda_available() else "cpu") if o.device == "auto" else o.device
        if self.device == "cuda" and not _cuda_available():
            raise ConfigError("AsrOptions.device is 'cuda' but CTranslate2 sees no CUDA device here.")
        self.compute_type = o.compute_type or ("float16" if self.device == "cuda" else "int8")
        self.cpu_threads = o.cpu_threads if o.cpu_threads is not None else min(4, os.cpu_count() or 1)
        self.model = _load_model(self.model_source, self.device, self.compute_type, self.cpu_threads)
        self.english_only = not self.model.model.is_multilingual
        if self.english_only and o.language not in (None, "en"):
            raise ConfigError(f"The English-only Whisper model '{self.model_source}' cannot transcribe language '{o.language}'.")
        self.language = "en" if self.english_only else o.language
        self.whisper_input = o.whisper_input or "30s"
        self.audio_level = o.audio_level or "none"
        # Transcribers sharing a model share its lock (faster-whisper keeps per-call state on the model).
        self._lock = _MODEL_LOCKS[id(self.model)]
        if o.warmup:
            self.warmup()

    def warmup(self) -> float:
        """Run one short decode so the first real window does not pay for lazy initialisation."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        self.transcribe((0.01 * rng.standard_normal(AUDIO_SAMPLE_RATE)).astype(np.float32))
        return time.perf_counter() - t0

    def encoder_states(self, audio: np.ndarray) -> np.ndarray:
        """Whisper's encoder states of 16 kHz mono audio (at `audio_level`), trimmed to its length (20 ms each)."""
        from moodlens.realtime.perception.features.whisper_states import normalise_level

        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(audio)):
            raise DataError(f"The audio given to the Whisper encoder ({audio.size / 16000:.2f} s) holds NaN or "
                            "infinite samples.")
        return self._states(normalise_level(audio, self.audio_level))

    def _states(self, audio: np.ndarray) -> np.ndarray:
        from moodlens.realtime.perception.features.whisper_states import states_for_audio

        with self._lock:
            return states_for_audio(self.model, audio, self.whisper_input)

    def transcribe(self, audio: np.ndarray, offset: float = 0.0, keep_encoder_states: bool = False) -> Transcript:
        """Transcribe 16 kHz mono float32 audio; word times are seconds from its start plus `offset`.
        `keep_encoder_states`: also return the encoder states of the audio (computed once, by the
        transcription itself, for audio under 30 s)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = len(audio) / AUDIO_SAMPLE_RATE
        if not np.all(np.isfinite(audio)):
            raise DataError(f"The audio given to Whisper ({duration:.2f} s) holds NaN or infinite samples.")
        if duration < MIN_AUDIO_S:
            return Transcript(text="", words=[], language=self.language, duration_s=duration, elapsed_s=0.0)
        from moodlens.realtime.perception.features.whisper_states import normalise_level

        audio = normalise_level(audio, self.audio_level)   # the encoder states below read this audio too
        o = self.options
        # Whisper's decoder holds at most 448 positions, about half of them for the output.
        max_tokens = None if o.max_tokens_per_s is None else min(220, int(16 + o.max_tokens_per_s * duration))
        from moodlens.realtime.perception.features.whisper_states import (
            MAX_INPUT_FRAMES, content_frames, encoder_input_frames)

        input_frames = encoder_input_frames(content_frames(len(audio)), self.whisper_input)
        t0 = time.perf_counter()
        with self._lock, _encoder_hook(self.model, input_frames, keep_encoder_states and duration < 30.0) as captured:
            segments, info = self.model.transcribe(
                audio,
                language=self.language,
                beam_size=o.beam_size,
                best_of=o.beam_size,
                temperature=list(o.temperature),
                word_timestamps=o.word_timestamps,
                # timestamp tokens count from the start of a 30 s input: on a cut input the decoder
                # opens new segments after the speech (repeats), so it decodes without them
                without_timestamps=o.without_timestamps or input_frames < MAX_INPUT_FRAMES,
                vad_filter=False,
                condition_on_previous_text=False,
                no_speech_threshold=o.no_speech_threshold,
                max_new_tokens=max_tokens,
            )
            segments = list(segments)   # decoding happens while iterating
        elapsed = time.perf_counter() - t0
        words = [
            Word(text=w.word.strip(), start=offset + float(w.start), end=offset + float(w.end), probability=float(w.probability))
            for seg in segments for w in (seg.words or [])
        ]
        text = " ".join(seg.text.strip() for seg in segments if seg.text.strip())
        states = None
        if keep_encoder_states:
            import math

            states = captured[0][: math.ceil(len(audio) / 320)] if captured else self._states(audio)
        return Transcript(text=text, words=words, language=info.language, duration_s=duration, elapsed_s=elapsed,
                          encoder_states=states)


class _encoder_hook:
    """For one `transcribe` call: cuts the encoder input faster-whisper padded to 3000 frames down
    to `input_frames` (the content comes first, so only padding goes; whisper_states.py
    `encoder_input_frames`), and when `capture`, keeps a copy of the first encoder output (the whole
    window when it is shorter than 30 s), so the audio features need not run the encoder again."""

    def __init__(self, model, input_frames: int, capture: bool):
        self.model, self.input_frames, self.capture, self.captured = model, input_frames, capture, []
        self.enabled = capture or input_frames < 3000   # 3000 = whisper_states.MAX_INPUT_FRAMES

    def __enter__(self) -> list:
        if self.enabled:
            original = self.model.encode

            def encode(features):
                if features.shape[-1] > self.input_frames:
                    features = np.ascontiguousarray(features[..., : self.input_frames])
                output = original(features)
                if not self.capture:
                    return output
                if not self.captured:
                    try:
                        self.captured.append(np.array(output, dtype=np.float32)[0])
                    except Exception:  # e.g. states on a GPU: the features compute them again
                        pass
                return output

            self.model.encode = encode   # instance attribute: shadows the method for this call
        return self.captured

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.model.__dict__.pop("encode", None)
