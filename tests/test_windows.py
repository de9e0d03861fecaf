"""Utterance windows on real speech (espeak-ng) with the real Silero VAD v6 through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from moodlens.core.errors import ConfigError, DataError
from moodlens.core.types import AudioChunk
from moodlens.realtime.perception.vad import SileroVad, UtteranceWindower, VadOptions, split_utterances

SR = 16000
SENTENCES = [
    "The weather is lovely today and I feel great.",
    "My train was late again this morning.",
    "We should meet for dinner next week.",
]


def speech(tts, text: str) -> np.ndarray:
    """espeak-ng speech with its own leading/trailing silence trimmed, so speech edges are known."""
    audio, sr = sf.read(str(tts(text)), dtype="float32")
    assert sr == SR
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return audio[loud[0]:loud[-1] + 1]


@pytest.fixture
def three_sentences(tts):
    """1 s silence, sentence, 1 s silence, sentence, 1 s silence, sentence, 1 s silence; truth spans."""
    parts, spans, cursor = [], [], 0
    for text in SENTENCES:
        parts.append(np.zeros(SR, dtype=np.float32))
        cursor += SR
        s = speech(tts, text)
        parts.append(s)
        spans.append((cursor / SR, (cursor + len(s)) / SR))
        cursor += len(s)
    parts.append(np.zeros(SR, dtype=np.float32))
    return np.concatenate(parts), spans


def stream(windower: UtteranceWindower, audio: np.ndarray, t0: float, chunk: int = 512):
    out = []
    for i in range(0, len(audio), chunk):
        out += windower.push_audio(AudioChunk(t=t0 + i / SR, samples=audio[i:i + chunk]))
    return out + windower.flush()


def test_streaming_probabilities_match_faster_whisper(three_sentences, monkeypatch):
    from faster_whisper.vad import get_vad_model

    audio, _ = three_sentences
    padded = np.pad(audio, (0, (-len(audio)) % 512))
    vad = SileroVad()
    one_by_one = np.concatenate([vad(padded[i:i + 512]) for i in range(0, len(padded), 512)])
    reference = get_vad_model()(padded).reshape(-1)
    assert one_by_one.shape == reference.shape
    np.testing.assert_allclose(one_by_one, reference, atol=1e-5)
    assert one_by_one.max() > 0.9 and one_by_one[:20].max() < 0.2   # speech found, leading silence not
    # a whole clip in several ONNX calls (long files) carries state and context across them too
    import moodlens.realtime.perception.vad as windows_module

    monkeypatch.setattr(windows_module, "VAD_BATCH_FRAMES", 7)
    np.testing.assert_allclose(vad.probabilities(audio), reference, atol=1e-5)


def test_three_sentences_give_three_windows_near_the_speech(three_sentences):
    audio, truth = three_sentences
    options = VadOptions(pad_s=0.2, min_silence_s=0.5)
    windows = stream(UtteranceWindower(options), audio, t0=50.0)
    assert len(windows) == 3
    assert not any(w.interim for w in windows)
    for w, (start, end) in zip(windows, truth):
        assert start - 0.2 - 0.1 <= w.start - 50.0 <= start + 0.15
        assert end - 0.25 <= w.end - 50.0 <= end + 0.2 + 0.1
        assert len(w.audio) == pytest.approx((w.end - w.start) * SR, abs=1)
        assert w.closed_at > 0
    assert [w.id for w in windows] == [0, 1, 2]
    # windows never overlap
    assert all(a.end <= b.start for a, b in zip(windows, windows[1:]))


def test_spans_agree_with_faster_whisper_segmentation(three_sentences):
    from faster_whisper.vad import VadOptions as FwVadOptions, get_speech_timestamps

    audio, _ = three_sentences
    ours = split_utterances(audio, VadOptions(pad_s=0.2, min_silence_s=0.5, min_speech_s=0.25))
    theirs = get_speech_timestamps(
        audio, FwVadOptions(threshold=0.5, min_speech_duration_ms=250, min_silence_duration_ms=500, speech_pad_ms=200)
    )
    assert len(ours) == len(theirs) == 3
    for (s, e), ref in zip(ours, theirs):
        assert s == pytest.approx(ref["start"] / SR, abs=0.033)
        assert e == pytest.approx(ref["end"] / SR, abs=0.033)


def test_silence_gives_no_window():
    rng = np.random.default_rng(0)
    quiet = (0.001 * rng.standard_normal(3 * SR)).astype(np.float32)
    assert split_utterances(quiet) == []


def test_long_monologue_gives_interim_windows(tts):
    gap = np.zeros(int(0.15 * SR), dtype=np.float32)   # shorter than min_silence: one utterance
    monologue = np.concatenate([np.zeros(SR // 2, np.float32)] + [x for s in SENTENCES for x in (speech(tts, s), gap)])
    windows = stream(UtteranceWindower(VadOptions(max_utterance_s=2.0, min_silence_s=0.5)), monologue, t0=0.0)
    interim = [w for w in windows if w.interim]
    assert len(interim) >= 3
    assert windows[-1].interim is False
    assert all(w.duration <= 2.0 + 0.04 for w in windows)
    # the pieces of one utterance are contiguous: nothing lost between them
    for a, b in zip(windows, windows[1:]):
        assert b.start == pytest.approx(a.end, abs=1e-9)
    total = sum(len(w.audio) for w in windows)
    assert total / SR > len(monologue) / SR - 0.5 - 0.5


def test_fixed_sliding_windows():
    audio = np.zeros(5 * SR, dtype=np.float32)
    windows = stream(UtteranceWindower(VadOptions(mode="fixed", fixed_window_s=2.0, fixed_hop_s=1.0)), audio, t0=3.0)
    assert [(round(w.start - 3, 3), round(w.end - 3, 3)) for w in windows] == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert all(len(w.audio) == 2 * SR for w in windows)


def test_gap_in_chunk_times_is_filled_with_silence(three_sentences):
    audio, _ = three_sentences
    windower = UtteranceWindower(VadOptions(mode="fixed", fixed_window_s=1.0, fixed_hop_s=1.0))
    out = windower.push_audio(AudioChunk(t=0.0, samples=audio[:8000]))
    out += windower.push_audio(AudioChunk(t=1.0, samples=audio[8000:16000]))   # 0.5 s were dropped
    assert [(w.start, w.end) for w in out] == [(0.0, 1.0)]
    assert np.all(out[0].audio[8000:] == 0)


def test_bad_inputs_refused():
    with pytest.raises(ConfigError, match="mode"):
        VadOptions(mode="smart")
    with pytest.raises(ConfigError, match="threshold"):
        VadOptions(threshold=1.5)
    with pytest.raises(ConfigError, match="unknown key 'treshold' for VadOptions"):
        VadOptions.from_dict({"treshold": 0.4})
    with pytest.raises(DataError, match="NaN"):
        UtteranceWindower(VadOptions(mode="fixed")).push_audio(np.array([0.0, np.nan], np.float32), t=0.0)


def test_buffers_stay_bounded_over_a_long_stream(tts):
    """An hour-long session must not pile up audio: only the open utterance (or the padding) is kept."""
    talk = speech(tts, SENTENCES[0])
    windower = UtteranceWindower(VadOptions(max_utterance_s=3.0))
    silence = np.zeros(SR * 20, dtype=np.float32)
    t = 0.0
    sizes = []
    for block in (silence, talk, silence, np.tile(talk, 4), silence):
        for i in range(0, len(block), 512):
            windower.push_audio(AudioChunk(t=t, samples=block[i:i + 512]))
            t += len(block[i:i + 512]) / SR
            sizes.append(len(windower._buffer))
    assert max(sizes) <= 3.0 * SR + 2 * 512
    assert sizes[-1] <= 0.2 * SR + 2 * 512
