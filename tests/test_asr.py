"""Whisper tiny.en (faster-whisper, int8 on CPU) on English speech synthesized with espeak-ng."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from moodlens.core.errors import AssetError, ConfigError, DataError
from moodlens.realtime.perception.asr import AsrOptions, Transcriber

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber(AsrOptions(cpu_threads=2))


def words_of(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_transcribes_spoken_words_with_timestamps(transcriber, tts):
    spoken = "I really love this wonderful movie and the actors were brilliant"
    audio, sr = sf.read(str(tts(spoken)), dtype="float32")
    assert sr == 16000
    result = transcriber.transcribe(audio, offset=20.0)
    heard = words_of(result.text)
    expected = {"love", "wonderful", "movie", "actors", "brilliant"}
    assert expected <= heard, f"Whisper heard {result.text!r}"
    assert result.language == "en"
    assert result.duration_s == pytest.approx(len(audio) / 16000)
    assert result.elapsed_s > 0
    # word timestamps: in order, inside the audio, shifted by the offset
    assert len(result.words) >= 8
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert all(20.0 <= w.start <= w.end <= 20.0 + result.duration_s + 0.1 for w in result.words)
    assert all(0.0 <= w.probability <= 1.0 for w in result.words)
    assert expected <= words_of(" ".join(w.text for w in result.words))
    love = next(w for w in result.words if words_of(w.text) == {"love"})
    movie = next(w for w in result.words if words_of(w.text) == {"movie"})
    assert love.end <= movie.start + 0.05


def test_model_is_loaded_once_and_shared(transcriber):
    other = Transcriber(AsrOptions(cpu_threads=2, warmup=False))
    assert other.model is transcriber.model
    assert transcriber.device == "cpu" and transcriber.compute_type == "int8"


def test_too_short_audio_gives_empty_transcript(transcriber):
    result = transcriber.transcribe(np.zeros(800, dtype=np.float32))
    assert result.text == "" and result.words == []


def test_nan_audio_refused(transcriber):
    with pytest.raises(DataError, match="NaN"):
        transcriber.transcribe(np.full(16000, np.nan, dtype=np.float32))


def test_missing_model_path_refused(tmp_path):
    with pytest.raises(AssetError, match="does not exist"):
        Transcriber(AsrOptions(model=str(tmp_path / "no-model")))


def test_env_var_pointing_nowhere_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("MOODLENS_WHISPER_MODEL", str(tmp_path / "gone"))
    with pytest.raises(AssetError, match="MOODLENS_WHISPER_MODEL"):
        Transcriber(AsrOptions(warmup=False))


def test_folder_that_is_not_a_model_refused(tmp_path):
    with pytest.raises(AssetError, match="could not be loaded"):
        Transcriber(AsrOptions(model=str(tmp_path), warmup=False))


def test_english_only_model_refuses_other_language():
    with pytest.raises(ConfigError, match="English-only"):
        Transcriber(AsrOptions(model="tiny.en", language="fr"))
    with pytest.raises(ConfigError, match="English-only"):
        Transcriber(AsrOptions(language="de", warmup=False))   # the bundled tiny.en, found by its metadata


def test_bad_options_refused():
    with pytest.raises(ConfigError, match="beam_size"):
        AsrOptions(beam_size=0)
    with pytest.raises(ConfigError, match="device"):
        AsrOptions(device="tpu")
    with pytest.raises(ConfigError, match="unknown key 'beam' for AsrOptions"):
        AsrOptions.from_dict({"beam": 2})


def test_file_to_windows_to_words(transcriber, tts, tmp_path):
    """The three perception-A stages together: a media file streamed, cut by the VAD, transcribed."""
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.core.types import AudioChunk
    from moodlens.realtime.perception.vad import UtteranceWindower, VadOptions

    first, _ = sf.read(str(tts("The coffee here is absolutely delicious")), dtype="float32")
    second, _ = sf.read(str(tts("but the waiter was very rude to my friends")), dtype="float32")
    gap = np.zeros(16000, dtype=np.float32)
    path = tmp_path / "talk.wav"
    sf.write(str(path), np.concatenate([gap, first, gap, second, gap]), 16000, subtype="PCM_16")

    windower = UtteranceWindower(VadOptions())
    windows = []
    with MediaFileSource(path, origin=0.0) as source:
        assert source.has_audio and not source.has_video
        for item in source:
            if isinstance(item, AudioChunk):
                windows += windower.push_audio(item)
    windows += windower.flush()
    assert len(windows) == 2
    texts = [transcriber.transcribe(w.audio, offset=w.start) for w in windows]
    assert {"coffee", "delicious"} <= words_of(texts[0].text)
    assert {"waiter", "rude", "friends"} <= words_of(texts[1].text)
    # word times land inside their window on the session clock
    for w, t in zip(windows, texts):
        assert all(w.start - 0.05 <= word.start <= word.end <= w.end + 0.05 for word in t.words)


def test_token_cap_bounds_decoding(transcriber, tts):
    """max_tokens_per_s caps runaway decoding (hallucination loops); shown here by a tiny cap."""
    audio, _ = sf.read(str(tts("I walked to the market this morning and bought fresh bread, some cheese and a basket of apples")), dtype="float32")
    # Without word timestamps one decoding pass covers the window, so the cap shows in the text.
    # (With them, faster-whisper resumes after the last aligned word: each pass is capped.)
    capped = Transcriber(AsrOptions(cpu_threads=2, warmup=False, word_timestamps=False, max_tokens_per_s=0.1))
    short = words_of(capped.transcribe(audio).text)
    full = words_of(transcriber.transcribe(audio).text)
    assert len(full) >= 12
    assert 0 < len(short) <= 10
    with pytest.raises(ConfigError, match="max_tokens_per_s"):
        AsrOptions(max_tokens_per_s=0)
