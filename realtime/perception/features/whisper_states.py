"""Audio features from the Whisper encoder: the states the pipeline already computes to transcribe.

Whisper tiny.en's encoder turns log-mel input into states of 384 dims (one per 20 ms): 1500 for the
30 s input faster-whisper pads every window to, 750 for the 15 s input of `whisper_input: 15s` (the
shipped weights' setting: same words, ~3x faster; `encoder_input_frames` below is the one place the
policy lives). For one utterance they are computed once, trimmed to the speech (the rest of the input
is padding), and averaged in pairs to one 384-d frame per 40 ms (25 frames/s, the rate of the
librosa features), so a 4 s utterance gives 100 frames. States of different inputs differ
(correlation 0.994 for 15 s vs 30 s), so a checkpoint's audio branch is tied to the input it was
trained on: the featurizer config records it and live follows it.

Why: on acted emotional speech from unseen speakers (RAVDESS, valence happy vs sad/angry/fearful/
disgust, train actors 01-18, test 19-22) a linear probe on these states' utterance mean/std reaches
a balanced accuracy of 0.83-0.84, the 40-d librosa features 0.59-0.67 (docs/model_card.md).

Identical live and in `moodlens featurize`: both call `encoder_states` on the utterance's 16 kHz
audio with the model the Transcriber loads (one shared WhisperModel per process). When the
Transcriber was asked to keep them (`Transcriber.transcribe(..., keep_encoder_states=True)`),
the states of the transcription itself are reused (same input, same encoder call), so Whisper's
encoder runs once per utterance.

Level (`audio_level`, "none" | "rms_-23"; `normalise_level`): Whisper's log-mel is clamped relative to
its maximum but scaled absolutely, so the recording level reaches these states: the shipped stage-4
voice head read RAVDESS test speech 12 dB quieter 0.34 more negative (scripts/probe_voice_channel.py).
With "rms_-23" the Transcriber brings every window's speech to -23 dBFS RMS before Whisper (ASR and
these states read the same audio, one encoder pass); the featurizer config records it and live follows it.
An option, not the shipped setting: on grouped CV over RAVDESS actors 01-18 it gained +1 point on the mean over
the probe's channels (the rule asked +3) and lost 4 on the phone band; channel copies in training did better
(scripts/probe_voice_channel.py `cv`).
"""

from __future__ import annotations

import math

import numpy as np

from moodlens.core.errors import DataError
from moodlens.realtime.perception.features.config import AUDIO_LEVELS, WHISPER_INPUTS

WHISPER_STATE_DIM = 384          # tiny / tiny.en d_model
SAMPLES_PER_STATE = 320          # 20 ms at 16 kHz (hop 160 x conv stride 2)
STATES_PER_CHUNK = 1500          # 30 s
POOL = 2                         # states averaged per output frame (40 ms, 25 frames/s)
AUDIO_FEATURES_WHISPER = "whisper_encoder"

MEL_FRAMES_PER_S = 100           # Whisper's log-mel hop: 160 samples at 16 kHz
MAX_INPUT_FRAMES = 3000          # 30 s: what the encoder was trained on, and its 1500 positions
DEFAULT_WHISPER_INPUT = "30s"    # a dataset or checkpoint without `whisper_input` was made with this
# "adaptive": speech + margin (Whisper sees some silence after the last word, as in training),
# rounded up to a bucket (a few input sizes, not one per window), never below the floor.
ADAPTIVE_MARGIN_S = 3.0
ADAPTIVE_BUCKET_S = 2.0
ADAPTIVE_FLOOR_S = 6.0


# Level normalisation (audio_level "rms_<dBFS>"): the speech part of a window is the 20 ms frames within
# LEVEL_SPEECH_RANGE_DB below its loud end (the 95th percentile of frame levels, so one click does not set it),
# at most LEVEL_CLICK_DB above it (a click's frame is no speech; RAVDESS speech peaks 3-6 dB above its 95th
# percentile) and above LEVEL_FLOOR_DBFS (digital silence); the gain that brings their RMS to the target is capped so a
# window of silence or hiss is not blown up (nor a clipped one crushed).
LEVEL_FRAME = 320                # 20 ms at 16 kHz
LEVEL_SPEECH_RANGE_DB = 35.0
LEVEL_LOUD_PERCENTILE = 95.0
LEVEL_CLICK_DB = 10.0
LEVEL_FLOOR_DBFS = -80.0
LEVEL_GAIN_RANGE_DB = (-20.0, 30.0)


def check_audio_level(policy: str, where: str = "audio_level") -> str:
    if policy not in AUDIO_LEVELS:
        from moodlens.core.errors import ConfigError

        raise ConfigError(f"{where} must be one of {', '.join(AUDIO_LEVELS)}, not '{policy}'.")
    return policy


def speech_level_db(audio: np.ndarray) -> float | None:
    """RMS level (dBFS) of the speech part of 16 kHz audio (see LEVEL_*), None when nothing is above the floor."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    n = len(audio) // LEVEL_FRAME
    if n == 0:
        frames = audio[None, :] if audio.size else np.zeros((0, 1))
    else:
        frames = audio[: n * LEVEL_FRAME].reshape(n, LEVEL_FRAME)
    if len(frames) == 0:
        return None
    power = np.mean(frames ** 2, axis=1)
    db = 10 * np.log10(power + 1e-20)
    loud = np.percentile(db, LEVEL_LOUD_PERCENTILE)
    speech = (db >= loud - LEVEL_SPEECH_RANGE_DB) & (db <= loud + LEVEL_CLICK_DB) & (db > LEVEL_FLOOR_DBFS)
    if not speech.any():
        return None
    return float(10 * np.log10(np.mean(power[speech])))


def level_gain_db(audio: np.ndarray, policy: str) -> float:
    """The gain (dB) `normalise_level` applies: 0 for "none" or audio with no speech part."""
    check_audio_level(policy)
    if policy == "none":
        return 0.0
    level = speech_level_db(audio)
    if level is None:
        return 0.0
    target = float(policy.split("_", 1)[1])
    low, high = LEVEL_GAIN_RANGE_DB
    return float(min(high, max(low, target - level)))


def normalise_level(audio: np.ndarray, policy: str) -> np.ndarray:
    """16 kHz float32 audio at the level `policy` asks for ("none": unchanged, the same array). Samples
    are not clipped: Whisper's log-mel takes any float, and clipping would add distortion."""
    gain = level_gain_db(audio, policy)
    if gain == 0.0:
        return audio
    return (np.asarray(audio, dtype=np.float32) * np.float32(10 ** (gain / 20))).astype(np.float32)


def check_whisper_input(policy: str, where: str = "whisper_input") -> str:
    if policy not in WHISPER_INPUTS:
        from moodlens.core.errors import ConfigError

        raise ConfigError(f"{where} must be one of {', '.join(WHISPER_INPUTS)}, not '{policy}'.")
    return policy


def content_frames(num_samples: int) -> int:
    """Log-mel frames faster-whisper gives the encoder for `num_samples` of audio (its feature
    extractor pads 160 samples and drops the last frame): floor(N / 160)."""
    return max(0, int(num_samples) // 160)


def encoder_input_frames(frames: int, policy: str) -> int:
    """How many log-mel frames the encoder sees for a window of `frames` content frames (the content,
    then zero padding): MAX_INPUT_FRAMES for "30s" and for anything that does not fit a shorter input."""
    check_whisper_input(policy)
    if policy == "30s" or frames > MAX_INPUT_FRAMES:
        return MAX_INPUT_FRAMES
    if policy in ("15s", "10s"):
        fixed = int(policy[:-1]) * MEL_FRAMES_PER_S
        return fixed if frames <= fixed else MAX_INPUT_FRAMES
    bucket = int(ADAPTIVE_BUCKET_S * MEL_FRAMES_PER_S)
    wanted = math.ceil((frames + ADAPTIVE_MARGIN_S * MEL_FRAMES_PER_S) / bucket) * bucket
    return int(min(MAX_INPUT_FRAMES, max(ADAPTIVE_FLOOR_S * MEL_FRAMES_PER_S, wanted)))


def states_for_audio(model, audio: np.ndarray, whisper_input: str = DEFAULT_WHISPER_INPUT) -> np.ndarray:
    """(N,) 16 kHz float32 -> (ceil(N / 320), d_model) float32 raw encoder states (20 ms each).

    The encoder input is built exactly as faster-whisper's `transcribe` builds it for a window
    shorter than 30 s (log-mel of the whole audio, last frame dropped, padded to 3000 frames) and
    then cut to `encoder_input_frames` as the Transcriber cuts it, so these are the states the
    transcription uses. Longer audio is encoded in 30 s chunks."""
    from faster_whisper.audio import pad_or_trim

    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        return np.zeros((0, WHISPER_STATE_DIM), np.float32)
    if not np.all(np.isfinite(audio)):
        raise DataError(f"The audio given to the Whisper encoder ({audio.size / 16000:.2f} s) holds NaN or "
                        "infinite samples.")
    features = model.feature_extractor(audio)
    content = features[:, : features.shape[-1] - 1]
    frames_per_chunk = model.feature_extractor.nb_max_frames
    size = encoder_input_frames(content.shape[-1], whisper_input)
    parts = []
    for start in range(0, max(content.shape[-1], 1), frames_per_chunk):
        encoded = model.encode(pad_or_trim(content[:, start:start + frames_per_chunk])[:, :size])
        parts.append(np.asarray(encoded, dtype=np.float32)[0])
    states = np.concatenate(parts, 0)
    return states[: min(len(states), math.ceil(audio.size / SAMPLES_PER_STATE))]


def check_same_whisper_input(features: str, transcriber: str) -> None:
    """Refuse a Transcriber whose encoder input differs from the one the audio features were made with."""
    if features != transcriber:
        from moodlens.core.errors import ConfigError

        raise ConfigError(f"The audio features were made with whisper_input '{features}' but the Transcriber encodes "
                          f"with whisper_input '{transcriber}', so its Whisper states would not mean the same; "
                          f"use one encoder input for both (AsrOptions.whisper_input, or leave it unset).")


def pool_states(states: np.ndarray, pool: int = POOL) -> np.ndarray:
    """Average consecutive states in groups of `pool` (a last partial group is averaged too)."""
    states = np.asarray(states, dtype=np.float32)
    if len(states) == 0:
        return np.zeros((0, states.shape[-1] if states.ndim == 2 else WHISPER_STATE_DIM), np.float32)
    n = math.ceil(len(states) / pool)
    padded = np.zeros((n * pool, states.shape[1]), np.float32)
    padded[: len(states)] = states
    counts = np.minimum(pool, len(states) - np.arange(n) * pool).astype(np.float32)
    return padded.reshape(n, pool, -1).sum(1) / counts[:, None]


def check_same_audio_level(features: str, transcriber: str) -> None:
    """Refuse a Transcriber whose input level differs from the one the audio features were made with."""
    if features != transcriber:
        from moodlens.core.errors import ConfigError

        raise ConfigError(f"The audio features were made with audio_level '{features}' but the Transcriber reads "
                          f"audio at audio_level '{transcriber}', so its Whisper states would not mean the same; "
                          f"use one level for both (AsrOptions.audio_level, or leave it unset).")


class WhisperStatesFeaturizer:
    """Drop-in for AudioFeaturizer: `extract(audio, states=None)` -> (T, 384) frames at 25 frames/s.

    `transcriber`: a loaded `Transcriber` whose model (and lock) to share; created on first use
    otherwise (default AsrOptions, so it is the same model the pipeline's Transcriber loads). Its
    encoder input policy must be the config's `whisper_input` (the states would differ otherwise)."""

    def __init__(self, config, transcriber=None):
        self.config = config
        self._transcriber = transcriber
        if transcriber is not None:
            check_same_whisper_input(config.whisper_input, getattr(transcriber, "whisper_input", DEFAULT_WHISPER_INPUT))
            check_same_audio_level(config.audio_level, getattr(transcriber, "audio_level", "none"))

    @property
    def transcriber(self):
        if self._transcriber is None:
            from moodlens.realtime.perception.asr import AsrOptions, Transcriber

            self._transcriber = Transcriber(AsrOptions(warmup=False, whisper_input=self.config.whisper_input,
                                                       audio_level=self.config.audio_level))
        return self._transcriber

    @property
    def frame_rate(self) -> float:
        return self.config.audio_frame_rate

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(math.ceil(num_samples / SAMPLES_PER_STATE) / POOL) if num_samples > 0 else 0

    def extract(self, audio: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            return np.zeros((0, self.config.audio_dim), np.float32)
        if states is None:
            states = self.transcriber.encoder_states(audio)
        frames = pool_states(states)
        if frames.shape[1] != self.config.audio_dim:
            raise DataError(f"The Whisper encoder gives {frames.shape[1]}-d states but the featurizer config "
                            f"expects {self.config.audio_dim}-d audio features (a different Whisper size?).")
        return np.nan_to_num(frames, nan=0.0, posinf=0.0, neginf=0.0)
