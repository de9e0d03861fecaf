"""FeaturizerConfig: round trip, defaults from espeak speech, and refusal of mismatching configs."""

from __future__ import annotations

import pytest

from moodlens.core.schema import LIVE_AUDIO_DIM, LIVE_VISION_DIM
from moodlens.core.errors import ConfigError
from moodlens.realtime.perception.features.config import AUDIO_FEATURE_NAMES, VISION_FEATURE_NAMES, FeaturizerConfig, library_versions


def test_dims_names_and_rates():
    c = FeaturizerConfig()
    assert c.audio_dim == LIVE_AUDIO_DIM == len(AUDIO_FEATURE_NAMES) == 40
    assert c.vision_dim == LIVE_VISION_DIM == len(VISION_FEATURE_NAMES) == 64
    assert len(set(VISION_FEATURE_NAMES)) == 64 and len(set(AUDIO_FEATURE_NAMES)) == 40
    assert c.audio_frame_rate == pytest.approx(25.0)
    assert c.text_max_len == 50
    assert c.versions["librosa"] == library_versions()["librosa"]


def test_default_audio_stats_were_computed_from_speech():
    c = FeaturizerConfig()
    # Not the placeholder 0/1: MFCC 0 of speech is strongly negative, rms in dB too.
    assert c.audio_mean[0] < -50
    assert c.audio_mean[AUDIO_FEATURE_NAMES.index("rms_db")] < -10
    assert all(s > 0 for s in c.audio_std)
    assert sum(1 for s in c.audio_std if s != 1.0) > 35


def test_round_trip_and_compatible_with_itself():
    c = FeaturizerConfig(vision_fps=10.0)
    d = c.to_dict()
    back = FeaturizerConfig.from_dict(d)
    assert back == c
    back.check_compatible(c, "a dataset")
    c.check_compatible(d, "a dataset")  # dicts are accepted too


def test_mismatch_is_refused_with_a_sentence_naming_the_field():
    live = FeaturizerConfig()
    other = FeaturizerConfig(audio_hop_length=320)
    with pytest.raises(ConfigError) as err:
        live.check_compatible(other.to_dict(), "checkpoint model.pt")
    message = str(err.value)
    assert "checkpoint model.pt" in message and "audio_hop_length" in message and "320" in message
    assert message.count("\n") == 0 and message.endswith(".")


def test_changed_normalization_statistics_are_refused():
    live = FeaturizerConfig()
    stats = list(live.audio_mean)
    stats[3] += 1.0
    with pytest.raises(ConfigError, match="audio_mean"):
        live.check_compatible(FeaturizerConfig(audio_mean=stats), "dataset x.pkl")


def test_major_library_version_change_is_refused_but_minor_is_not():
    live = FeaturizerConfig()
    major, minor, *_ = live.versions["librosa"].split(".")
    upgraded = FeaturizerConfig(versions={**live.versions, "librosa": f"{major}.{int(minor) + 1}.0"})
    live.check_compatible(upgraded, "a checkpoint")
    bumped = FeaturizerConfig(versions={**live.versions, "mediapipe": "99.0.0"})
    with pytest.raises(ConfigError, match="versions.mediapipe"):
        live.check_compatible(bumped, "a checkpoint")


def test_bad_dicts_are_refused():
    with pytest.raises(ConfigError, match="unknown key 'audio_dims'"):
        FeaturizerConfig.from_dict({"audio_dims": 40})
    with pytest.raises(ConfigError, match="schema version 99"):
        FeaturizerConfig.from_dict({"schema_version": 99})
    with pytest.raises(ConfigError, match="missing"):
        FeaturizerConfig.from_dict(None, source="featurizer config of checkpoint a.pt")
    with pytest.raises(ConfigError, match="NaN"):
        FeaturizerConfig(audio_mean=[float("nan")] * 40)
    with pytest.raises(ConfigError, match="audio_dim"):
        FeaturizerConfig(audio_std=[1.0] * 3)
