"""Whisper's encoder input (`whisper_input`): one policy for transcription and audio features.

Real Whisper tiny.en on espeak-ng speech; benchmarks/whisper_context.py has the study behind it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from moodlens.core.errors import ConfigError
from moodlens.realtime.perception.asr import AsrOptions, Transcriber
from moodlens.realtime.perception.features.config import FeaturizerConfig
from moodlens.realtime.perception.features.whisper_states import (
    MAX_INPUT_FRAMES, WhisperStatesFeaturizer, content_frames, encoder_input_frames, states_for_audio)


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# ---- the policy (no model) ------------------------------------------------------------------------
@pytest.mark.parametrize("frames, policy, expected", [
    (378, "30s", 3000), (2999, "30s", 3000),
    (378, "15s", 1500), (1500, "15s", 1500), (1501, "15s", 3000),
    (378, "10s", 1000), (1000, "10s", 1000), (1001, "10s", 3000),
    (1, "adaptive", 600), (300, "adaptive", 600), (301, "adaptive", 800),     # floor 6 s; 3 s margin, 2 s buckets
    (378, "adaptive", 800), (1200, "adaptive", 1600), (1540, "adaptive", 2000), (2600, "adaptive", 3000),
    (4000, "adaptive", 3000), (4000, "15s", 3000),                           # longer audio: 30 s chunks
])
def test_encoder_input_frames(frames, policy, expected):
    assert encoder_input_frames(frames, policy) == expected


def test_unknown_policy_refused():
    with pytest.raises(ConfigError, match="whisper_input must be one of"):
        encoder_input_frames(100, "5s")
    with pytest.raises(ConfigError, match="whisper_input must be one of"):
        FeaturizerConfig(whisper_input="5s")
    with pytest.raises(ConfigError, match="AsrOptions.whisper_input must be one of"):
        AsrOptions(whisper_input="20s")


def test_back_compat_config_without_the_key_means_30s():
    old = FeaturizerConfig.for_audio_features("whisper_encoder").to_dict()
    old.pop("whisper_input")
    assert FeaturizerConfig.from_dict(old).whisper_input == "30s"
    assert AsrOptions().for_features(old).whisper_input == "30s"
    assert AsrOptions().for_features({**old, "whisper_input": "adaptive"}).whisper_input == "adaptive"
    # an explicit AsrOptions value is kept (a mismatch is refused where features are made)
    assert AsrOptions(whisper_input="15s").for_features(old).whisper_input == "15s"


def test_shipped_checkpoint_carries_15s_and_older_ones_read_as_30s():
    from moodlens.models.checkpoint import read_checkpoint

    payload, _ = read_checkpoint("default")   # stage 4 (docs/model_card.md): trained on the 15 s states
    config = FeaturizerConfig.from_dict(payload["featurizer_config"])
    assert config.audio_features == "whisper_encoder" and config.whisper_input == "15s"
    assert AsrOptions().for_features(payload["featurizer_config"]).whisper_input == "15s"
    older = {k: v for k, v in payload["featurizer_config"].items() if k != "whisper_input"}   # stages 1-3
    assert FeaturizerConfig.from_dict(older).whisper_input == "30s"
    assert AsrOptions().for_features(older).whisper_input == "30s"


def test_mismatch_between_data_and_live_features_is_one_sentence():
    trained = FeaturizerConfig.for_audio_features("whisper_encoder", whisper_input="adaptive")
    live = FeaturizerConfig.for_audio_features("whisper_encoder")
    with pytest.raises(ConfigError) as err:
        live.check_compatible(trained.to_dict(), where="checkpoint x.pt")
    message = flat(str(err.value))
    assert "checkpoint x.pt" in message and "whisper_input is 'adaptive' there but '30s' here" in message
    assert message.count(". ") == 0 and message.endswith(".")   # one sentence
    # librosa features do not depend on Whisper's input: not refused
    FeaturizerConfig().check_compatible(FeaturizerConfig(whisper_input="adaptive").to_dict(), where="x")


def test_featurize_cli_refuses_whisper_input_without_whisper_features(tmp_path):
    import argparse

    from moodlens.train.commands import featurize

    parser = argparse.ArgumentParser()
    featurize.add_arguments(parser)
    args = parser.parse_args(["--raw", str(tmp_path), "--out", str(tmp_path / "x.pkl"), "--whisper-input", "adaptive"])
    with pytest.raises(ConfigError, match="--audio-features whisper_encoder"):
        featurize.main(args)


# ---- real Whisper ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from helpers.media import spoken_sentence

    return spoken_sentence(tmp_path_factory.mktemp("speech"))


@pytest.mark.e2e
def test_content_frames_match_faster_whisper(speech):
    tr = Transcriber(AsrOptions(warmup=False))
    for n in (len(speech), len(speech) - 77, 16000, 1601):
        assert content_frames(n) == tr.model.feature_extractor(speech[:n]).shape[-1] - 1


@pytest.mark.e2e
@pytest.mark.parametrize("policy", ["adaptive", "15s"])
def test_transcription_encodes_the_policy_input_and_its_states_equal_states_for_audio(speech, policy):
    tr = Transcriber(AsrOptions(whisper_input=policy, word_timestamps=False, cpu_threads=2, warmup=False))
    seen = []
    original = tr.model.encode

    def spy(features):
        seen.append(features.shape[-1])
        return original(features)

    tr.model.encode = spy        # stand-in only to observe the input size; the real encoder runs
    try:
        result = tr.transcribe(speech, keep_encoder_states=True)
    finally:
        tr.model.__dict__.pop("encode", None)
    expected = encoder_input_frames(content_frames(len(speech)), policy)
    assert seen and seen[0] == expected < MAX_INPUT_FRAMES
    assert {"today", "park", "lunch"} <= set(re.findall(r"[a-z]+", result.text.lower())), result.text
    states = states_for_audio(tr.model, speech, policy)
    assert result.encoder_states.shape == states.shape == (int(np.ceil(len(speech) / 320)), 384)
    np.testing.assert_array_equal(result.encoder_states, states)
    # the policy changes the states (so a model is trained on one policy), not only the speed
    padded = states_for_audio(tr.model, speech, "30s")
    assert np.abs(padded - states).max() > 0.1


@pytest.mark.e2e
def test_30s_is_todays_input(speech):
    tr = Transcriber(AsrOptions(warmup=False, word_timestamps=False))
    assert tr.whisper_input == "30s"
    result = tr.transcribe(speech, keep_encoder_states=True)
    np.testing.assert_array_equal(result.encoder_states, states_for_audio(tr.model, speech))


@pytest.mark.e2e
def test_featurizer_refuses_a_transcriber_with_another_input():
    config = FeaturizerConfig.for_audio_features("whisper_encoder", whisper_input="adaptive")
    tr = Transcriber(AsrOptions(warmup=False))          # 30 s
    with pytest.raises(ConfigError) as err:
        WhisperStatesFeaturizer(config, tr)
    assert "whisper_input 'adaptive'" in flat(str(err.value)) and "whisper_input '30s'" in flat(str(err.value))
    own = WhisperStatesFeaturizer(config)               # builds its own: follows the config
    assert own.transcriber.whisper_input == "adaptive"
    same = Transcriber(AsrOptions(warmup=False).for_features(config))
    assert WhisperStatesFeaturizer(config, same).transcriber is same


@pytest.mark.e2e
def test_featurize_cli_records_and_uses_the_policy(tmp_path, speech):
    """`moodlens featurize --whisper-input 15s`: the pickle's config says 15s and its audio frames are
    the pooled 15 s states of the window's audio (the transcription's own, reused)."""
    import pickle

    from moodlens.realtime.capture.media import read_media
    from moodlens.realtime.cli import main as cli_main
    from moodlens.realtime.perception.features.featurizer import span_audio
    from moodlens.realtime.perception.features.whisper_states import pool_states

    wav = tmp_path / "s.wav"
    sf.write(str(wav), np.concatenate([np.zeros(4000, np.float32), speech, np.zeros(4000, np.float32)]), 16000)
    out = tmp_path / "s.pkl"
    assert cli_main(["featurize", str(wav), "--audio-features", "whisper_encoder", "--whisper-input", "15s",
                     "--out", str(out)]) == 0
    with out.open("rb") as f:
        data = pickle.load(f)
    assert data["meta"]["whisper_input"] == "15s" and len(data["id"]) == 1
    assert "today" in data["raw_text"][0].lower() and "lunch" in data["raw_text"][0].lower()
    window = span_audio(read_media(wav).audio, float(data["start"][0]), float(data["end"][0]))
    tr = Transcriber(AsrOptions(warmup=False))
    n = int(data["audio_lengths"][0])
    expected = pool_states(states_for_audio(tr.model, window, "15s"))
    np.testing.assert_allclose(data["audio"][0][:n], expected[:n], atol=1e-5)
    assert np.abs(data["audio"][0][:n] - pool_states(states_for_audio(tr.model, window, "30s"))[:n]).max() > 0.1


@pytest.mark.e2e
def test_live_pipeline_follows_the_checkpoint(tmp_path):
    """build_pipeline: the Transcriber takes the scoring checkpoint's whisper_input; an explicit other
    value is refused where the audio features are made, in one sentence naming both."""
    from moodlens.models import build_model
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.realtime.engine.build import build_pipeline
    from moodlens.realtime.scoring.scorer import Scorer

    config = FeaturizerConfig.for_audio_features("whisper_encoder", whisper_input="15s")
    model = build_model("hcrl_mfd", {"audio_dim": 384}).eval()
    scorer = Scorer.from_model(model, config.to_dict(), backend="eager", quiet=True)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(8000, np.float32), 16000)
    pipe = build_pipeline(MediaFileSource(wav), scorer, asr=AsrOptions(warmup=False))
    assert pipe.transcriber.whisper_input == "15s" and pipe.featurizer_config.whisper_input == "15s"
    pipe.stop()
    with pytest.raises(ConfigError) as err:
        build_pipeline(MediaFileSource(wav), scorer, asr=AsrOptions(warmup=False, whisper_input="30s"))
    assert "whisper_input '15s'" in flat(str(err.value)) and "whisper_input '30s'" in flat(str(err.value))
