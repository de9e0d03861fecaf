"""Audio featurizer on real espeak-ng speech and on silence."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from moodlens.core.errors import ConfigError, DataError
from moodlens.realtime.perception.features.audio import AudioFeaturizer, EGeMAPSExtractor, opensmile_available
from moodlens.realtime.perception.features.config import AUDIO_FEATURE_NAMES, FeaturizerConfig

F0 = AUDIO_FEATURE_NAMES.index("log_f0_hz")
VOICING = AUDIO_FEATURE_NAMES.index("voicing")
RMS = AUDIO_FEATURE_NAMES.index("rms_db")


@pytest.fixture(scope="module")
def featurizer():
    return AudioFeaturizer(FeaturizerConfig())


@pytest.fixture(scope="module")
def raw_featurizer():
    return AudioFeaturizer(FeaturizerConfig(audio_normalize=False))


def test_shape_and_rate(featurizer):
    for seconds in (0.05, 1.0, 3.3):
        n = int(seconds * 16000)
        feats = featurizer.extract(np.random.default_rng(0).normal(0, 0.1, n).astype(np.float32))
        assert feats.shape == (1 + n // 640, 40) and feats.dtype == np.float32
        assert abs(len(feats) / seconds - featurizer.frame_rate) <= 1 / seconds + 1e-6
    assert featurizer.extract(np.zeros(0, np.float32)).shape == (0, 40)


def test_silence_is_finite_and_unvoiced(featurizer, raw_featurizer):
    feats = featurizer.extract(np.zeros(16000, np.float32))
    assert np.isfinite(feats).all()
    raw = raw_featurizer.extract(np.zeros(16000, np.float32))
    assert (raw[:, F0] == 0).all() and (raw[:, VOICING] == 0).all()


def test_nan_and_inf_never_leave(featurizer):
    audio = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    audio[100:300] = np.nan
    audio[5000] = np.inf
    assert np.isfinite(featurizer.extract(audio)).all()
    loud = np.full(8000, 1e30, dtype=np.float64)  # overflows float32 to inf
    assert np.isfinite(featurizer.extract(loud)).all()


def test_espeak_speech_has_voiced_frames_in_the_human_range(tts, raw_featurizer, featurizer):
    audio, sr = sf.read(str(tts("Hello there, I am talking about a wonderful movie today.")), dtype="float32")
    assert sr == 16000
    raw = raw_featurizer.extract(audio)
    voiced = raw[:, F0] > 0
    assert 0.2 < voiced.mean() < 0.95
    f0_hz = np.exp(raw[voiced, F0])
    assert 70 < np.median(f0_hz) < 250          # espeak's male voice speaks around 100-130 Hz
    assert ((f0_hz > 60) & (f0_hz < 500)).all()
    # voiced frames are louder and more periodic than unvoiced ones
    assert raw[voiced, RMS].mean() > raw[~voiced, RMS].mean()
    assert raw[voiced, VOICING].mean() > raw[~voiced, VOICING].mean() + 0.2
    normalized = featurizer.extract(audio)
    assert np.isfinite(normalized).all()
    # normalized with statistics from espeak speech: speech frames land near zero mean, unit scale
    assert np.abs(normalized.mean(0)).max() < 2.0
    assert 0.3 < normalized.std(0).mean() < 2.0


def test_pitch_of_a_pure_tone_is_tracked(raw_featurizer):
    t = np.arange(16000) / 16000
    for hz in (110.0, 220.0):
        raw = raw_featurizer.extract((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        middle = raw[3:-3]
        assert np.allclose(np.exp(middle[:, F0]), hz, rtol=0.01)
        assert (middle[:, VOICING] > 0.9).all()


def test_bad_input_is_refused(featurizer):
    with pytest.raises(DataError, match="mono"):
        featurizer.extract(np.zeros((2, 100), np.float32))


def test_opensmile_extra_is_optional_and_refused_cleanly_when_absent():
    if opensmile_available():
        pytest.skip("opensmile is installed here; the refusal path cannot be exercised")
    with pytest.raises(ConfigError, match="non-commercial"):
        EGeMAPSExtractor()
    assert "NON-COMMERCIAL" in EGeMAPSExtractor.__doc__


@pytest.mark.shared
def test_real_clip_speech(shared_data, raw_featurizer):
    """Real (Mandarin) speech decoded from a shared clip: voiced frames with F0 in the human range."""
    from moodlens.realtime.capture.media import read_media

    clip = read_media(shared_data / "clips" / "zh_0008.mp4", video_fps=1)
    raw = raw_featurizer.extract(clip.audio)
    assert raw.shape == (1 + len(clip.audio) // 640, 40) and np.isfinite(raw).all()
    voiced = raw[:, F0] > 0
    assert voiced.mean() > 0.2
    f0_hz = np.exp(raw[voiced, F0])
    assert 70 < np.median(f0_hz) < 400
