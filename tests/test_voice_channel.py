"""Level normalisation before Whisper (`audio_level`, issue 10) and the channel copies for training.

The level function on synthetic signals; real Whisper tiny.en on espeak-ng speech for the Transcriber path
(scripts/probe_voice_channel.py has the study behind it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from moodlens.core.errors import ConfigError
from moodlens.realtime.perception.asr import AsrOptions, Transcriber
from moodlens.realtime.perception.features.config import FeaturizerConfig
from moodlens.realtime.perception.features.whisper_states import (
    LEVEL_GAIN_RANGE_DB,
    WhisperStatesFeaturizer,
    level_gain_db,
    normalise_level,
    speech_level_db,
    states_for_audio,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def db(x) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2)))


def burst(seed=0, seconds=3.0, level_db=-35.0):
    """A speech stand-in: amplitude-modulated tones between stretches of digital silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 900 * t + rng.uniform(0, 6))
    x *= (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * (np.abs(t - seconds / 2) < seconds / 3)
    x *= 10 ** (level_db / 20) / np.sqrt(np.mean(x[x != 0] ** 2))
    return x.astype(np.float32)


# ---- the level (no model) -------------------------------------------------------------------------
def test_speech_reaches_the_target_at_any_recording_level():
    x = burst()
    for gain in (-12, 0, 6):
        y = normalise_level(x * np.float32(10 ** (gain / 20)), "rms_-23")
        assert speech_level_db(y) == pytest.approx(-23.0, abs=0.01)
    # the silence around the speech does not count: the level is the speech's, not the clip's
    assert speech_level_db(x) == pytest.approx(-35.0, abs=0.05) and db(x) < -36
    quiet, loud = normalise_level(x * np.float32(0.25), "rms_-23"), normalise_level(x, "rms_-23")
    np.testing.assert_allclose(quiet, loud, rtol=1e-5, atol=1e-7)


def test_none_is_the_old_behaviour_and_silence_and_hiss_are_not_blown_up():
    x = burst()
    assert normalise_level(x, "none") is x and level_gain_db(x, "none") == 0.0
    silence = np.zeros(16000, np.float32)
    assert level_gain_db(silence, "rms_-23") == 0.0 and not normalise_level(silence, "rms_-23").any()
    hiss = (1e-4 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)   # -80 dBFS
    assert level_gain_db(hiss, "rms_-23") == LEVEL_GAIN_RANGE_DB[1]                      # capped at +30 dB
    hot = np.clip(burst(level_db=0.0) * 4, -1, 1)
    assert level_gain_db(hot, "rms_-23") >= LEVEL_GAIN_RANGE_DB[0]
    with pytest.raises(ConfigError, match="audio_level must be one of"):
        level_gain_db(x, "rms_-10")


def test_one_click_does_not_set_the_level():
    x = burst()
    clicked = x.copy()
    clicked[100:140] = 0.99             # 2.5 ms at full scale in the leading silence
    assert level_gain_db(clicked, "rms_-23") == pytest.approx(level_gain_db(x, "rms_-23"), abs=0.5)


def test_config_records_the_level_and_old_configs_read_none():
    config = FeaturizerConfig.for_audio_features("whisper_encoder", whisper_input="15s", audio_level="rms_-23")
    assert FeaturizerConfig.from_dict(config.to_dict()).audio_level == "rms_-23"
    old = config.to_dict()
    old.pop("audio_level")                      # every dataset and checkpoint before issue 10
    assert FeaturizerConfig.from_dict(old).audio_level == "none"
    assert AsrOptions().for_features(old).audio_level == "none"
    assert AsrOptions().for_features(config).audio_level == "rms_-23"
    assert AsrOptions().for_features(config.to_dict()).whisper_input == "15s"
    assert AsrOptions(audio_level="none").for_features(config).audio_level == "none"   # explicit stays
    with pytest.raises(ConfigError, match="audio_level must be one of"):
        FeaturizerConfig(audio_level="loud")
    with pytest.raises(ConfigError, match="AsrOptions.audio_level must be one of"):
        AsrOptions(audio_level="rms_-30")
    with pytest.raises(ConfigError) as err:
        config.check_compatible(FeaturizerConfig.from_dict(old).to_dict(), where="checkpoint x.pt")
    assert "audio_level" in flat(str(err.value))
    FeaturizerConfig().check_compatible(FeaturizerConfig(audio_level="rms_-23").to_dict(), where="x")   # librosa


def test_featurize_cli_refuses_audio_level_without_whisper_features(tmp_path):
    import argparse

    from moodlens.train.commands import featurize

    parser = argparse.ArgumentParser()
    featurize.add_arguments(parser)
    args = parser.parse_args(["--raw", str(tmp_path), "--out", str(tmp_path / "x.pkl"), "--audio-level", "rms_-23"])
    with pytest.raises(ConfigError, match="--audio-features whisper_encoder"):
        featurize.main(args)


def test_channel_copies_are_seeded_and_never_clip():
    from make_channel_copies import random_channel

    x = burst(level_db=-20.0)
    a, what = random_channel(x, np.random.default_rng([0, 3, 0]))
    b, same = random_channel(x, np.random.default_rng([0, 3, 0]))
    np.testing.assert_array_equal(a, b)
    assert what == same and "gain" in what
    drawn = [random_channel(x, np.random.default_rng([0, i, 0])) for i in range(40)]
    assert len({w for _, w in drawn}) >= 35          # descriptions round the draws
    assert all(np.isfinite(y).all() and np.abs(y).max() <= 0.99 + 1e-6 and len(y) == len(x) for y, _ in drawn)
    families = " ".join(w for _, w in drawn)
    assert all(f in families for f in ("eq", "rt", "phone", "pink", "white"))


def test_channel_copies_keep_labels_groups_and_splits_and_skip_the_test_actors(tmp_path):
    import csv

    from make_channel_copies import main

    src = tmp_path / "src"
    rows = []
    for actor, mode in (("Actor_01", "train"), ("Actor_19", "test"), ("Actor_17", "valid")):
        (src / actor).mkdir(parents=True)
        clip = f"03-01-03-01-01-01-{actor[-2:]}"
        sf.write(src / actor / f"{clip}.flac", burst(), 16000)
        rows.append({"video_id": actor, "clip_id": clip, "text": "Dogs are sitting by the door", "label": "2",
                     "label_T": "", "label_A": "2", "label_V": "", "annotation": "happy/normal/emotion_valence_v1",
                     "mode": mode, "group": f"actor{actor[-2:]}"})
    with open(tmp_path / "label.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(["--labels", str(tmp_path / "label.csv"), "--src", str(src), "--out", str(tmp_path / "out"),
                 "--copies", "2"]) == 0
    with open(tmp_path / "out" / "label.csv") as f:
        out = list(csv.DictReader(f))
    assert [(r["video_id"], r["mode"], r["group"], r["label_A"]) for r in out] == [
        ("Actor_01", "train", "actor01", "2")] * 2 + [("Actor_17", "valid", "actor17", "2")] * 2
    assert all((tmp_path / "out" / "Raw" / r["video_id"] / f"{r['clip_id']}.flac").exists() for r in out)


# ---- real Whisper ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from helpers.media import spoken_sentence

    return spoken_sentence(tmp_path_factory.mktemp("speech"))


@pytest.mark.e2e
def test_transcriber_reads_normalised_audio_for_words_and_states(speech):
    """rms_-23: the same speech 12 dB quieter gives the same encoder states up to the int8 encoder's own
    noise (a 1e-6 change of the input moves states by ~0.01-0.02 on average) and the same words, one
    normalised input for ASR and features; "none" (the old behaviour) lets the level reach the states."""
    quiet = speech * np.float32(10 ** (-12 / 20))
    tr = Transcriber(AsrOptions(warmup=False, whisper_input="15s", audio_level="rms_-23", cpu_threads=2))
    loud_states, quiet_states = tr.encoder_states(speech), tr.encoder_states(quiet)
    plain = Transcriber(AsrOptions(warmup=False, whisper_input="15s", cpu_threads=2))
    assert plain.audio_level == "none"
    plain_loud, plain_quiet = plain.encoder_states(speech), plain.encoder_states(quiet)
    assert np.abs(loud_states - quiet_states).mean() < 0.04
    assert np.abs(plain_loud - plain_quiet).mean() > 0.08
    # what the pooled head reads: the utterance mean moves ~10x less than without normalisation
    moved = np.abs(loud_states.mean(0) - quiet_states.mean(0)).max()
    assert moved < 0.25 * np.abs(plain_loud.mean(0) - plain_quiet.mean(0)).max()
    result = tr.transcribe(quiet, keep_encoder_states=True)
    assert {"today", "park", "lunch"} <= set(re.findall(r"[a-z]+", result.text.lower())), result.text
    np.testing.assert_allclose(result.encoder_states, quiet_states, atol=1e-5)
    np.testing.assert_allclose(quiet_states, states_for_audio(tr.model, normalise_level(quiet, "rms_-23"), "15s"),
                               atol=1e-6)


@pytest.mark.e2e
def test_featurizer_refuses_a_transcriber_at_another_level():
    config = FeaturizerConfig.for_audio_features("whisper_encoder", whisper_input="15s", audio_level="rms_-23")
    tr = Transcriber(AsrOptions(warmup=False, whisper_input="15s"))
    with pytest.raises(ConfigError) as err:
        WhisperStatesFeaturizer(config, tr)
    assert "audio_level 'rms_-23'" in flat(str(err.value)) and "audio_level 'none'" in flat(str(err.value))
    assert WhisperStatesFeaturizer(config).transcriber.audio_level == "rms_-23"     # its own follows the config
    same = Transcriber(AsrOptions(warmup=False).for_features(config))
    assert WhisperStatesFeaturizer(config, same).transcriber is same
