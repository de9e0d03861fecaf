"""Latency where it is felt (issue 12): speech_end / ready_at on every window, speculative end of
utterance, interim transcripts, and the version-2 JSONL schema.

Real parts throughout: espeak-ng speech (`tts`), Silero VAD, Whisper tiny.en, PyAV, a real model.
Latency *targets* live in `moodlens bench` (docs/benchmarks.md); these tests check behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from moodlens.core.errors import DataError
from moodlens.core.types import AudioChunk
from moodlens.realtime.engine.events import SCHEMA_VERSION, WindowEvent, check_event_dict
from moodlens.realtime.perception.vad import UtteranceWindower, VadOptions

from helpers.live import scorer, transcriber  # noqa: F401 (module-scoped fixtures)

SR = 16_000


def speech(tts, text: str) -> np.ndarray:
    audio, sr = sf.read(str(tts(text)), dtype="float32")
    assert sr == SR
    loud = np.flatnonzero(np.abs(audio) > 1e-3)      # espeak-ng leaves silence at both ends
    return audio[loud[0]:loud[-1] + 1]


def zeros(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def stream(windower: UtteranceWindower, audio: np.ndarray, chunk: int = 512):
    out = []
    for i in range(0, len(audio), chunk):
        out += windower.push_audio(AudioChunk(t=i / SR, samples=audio[i:i + chunk]), early=True)
    return out + windower.flush()


# ---- the windower ------------------------------------------------------------------------------

def test_speculative_window_is_the_final_window_when_the_silence_lasts(tts):
    audio = np.concatenate([zeros(0.5), speech(tts, "The weather is lovely today."), zeros(1.5)])
    windows = stream(UtteranceWindower(VadOptions(speculative_silence_s=0.2, interim_every_s=0)), audio)
    kinds = [w.kind for w in windows]
    assert kinds == ["speculative", "final"], kinds
    spec, final = windows
    # Same span, same samples: its transcript can stand in for the final's.
    assert (spec.id, spec.start, spec.end) == (final.id, final.start, final.end)
    np.testing.assert_array_equal(spec.audio, final.audio)
    # The speculation comes min_silence_s - speculative_silence_s (0.2 s) of audio earlier.
    assert final.speech_end == spec.speech_end
    assert final.start < final.speech_end <= final.end - 0.19         # pad_s of audio after the speech
    # Plain callers (training, offline splits) still get finals only.
    plain = UtteranceWindower(VadOptions(speculative_silence_s=0.2))
    finals = [w for i in range(0, len(audio), 512) for w in plain.push_audio(AudioChunk(i / SR, audio[i:i + 512]))]
    assert [w.kind for w in finals + plain.flush()] == ["final"]


def test_speculation_is_cancelled_when_speech_resumes(tts):
    # A 0.35 s pause: longer than speculative_silence_s (0.2), shorter than min_silence_s (0.4).
    audio = np.concatenate([zeros(0.5), speech(tts, "I was thinking"), zeros(0.35),
                            speech(tts, "that we should go home."), zeros(1.5)])
    windows = stream(UtteranceWindower(VadOptions(speculative_silence_s=0.2, interim_every_s=0)), audio)
    kinds = [w.kind for w in windows]
    assert kinds.count("final") == 1, kinds
    assert kinds.index("speculative") < kinds.index("cancel") < kinds.index("final"), kinds
    final = windows[-1]
    spec = windows[kinds.index("speculative")]
    assert spec.id == final.id and spec.end < final.end          # the speculation was shorter: not reusable


def test_preview_windows_grow_until_the_final(tts):
    text = "This is a long sentence that keeps on going for quite a while before it finally ends."
    audio = np.concatenate([zeros(0.5), speech(tts, text), zeros(1.5)])
    windows = stream(UtteranceWindower(VadOptions(interim_every_s=1.0, interim_min_s=2.0,
                                                  speculative_silence_s=0)), audio)
    previews = [w for w in windows if w.kind == "preview"]
    final = windows[-1]
    assert final.kind == "final" and len(previews) >= 2
    assert all(p.id == final.id and p.start == final.start for p in previews)
    ends = [p.end for p in previews]
    assert ends == sorted(ends) and ends[0] - final.start >= 2.0 - 0.04
    assert all(np.isclose(b - a, 1.0, atol=0.04) for a, b in zip(ends, ends[1:]))
    assert all(p.speech_end <= p.end for p in previews)


# ---- the pipeline ------------------------------------------------------------------------------

SENTENCES = ["I love this wonderful day.",
             "This is terrible and I hate it, I really mean it when I say so.",
             "The meeting is on Tuesday."]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Three sentences with 1.3 s gaps, plus one sentence with a 0.35 s pause inside (audio only)."""
    from conftest import synthesize
    from helpers.media import write_clip

    folder = tmp_path_factory.mktemp("latency")
    parts = [zeros(0.5)]
    for i, s in enumerate(SENTENCES):
        parts += [sf.read(str(synthesize(s, folder / f"s{i}.wav")), dtype="float32")[0], zeros(1.3)]
    trimmed = lambda a: a[np.flatnonzero(np.abs(a) > 1e-3)[0]:np.flatnonzero(np.abs(a) > 1e-3)[-1] + 1]  # noqa: E731
    parts += [trimmed(sf.read(str(synthesize("I was thinking", folder / "p0.wav")), dtype="float32")[0]), zeros(0.35),
              trimmed(sf.read(str(synthesize("that we should go home.", folder / "p1.wav")), dtype="float32")[0]),
              zeros(1.3)]
    return write_clip(folder / "talk.mp4", np.concatenate(parts), None)


def run(clip, scorer, transcriber, pace: str, vad: VadOptions, sinks=()):
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.realtime.engine.pipeline import PipelineOptions
    from moodlens.realtime.engine.build import build_pipeline

    source = MediaFileSource(clip, pace=pace, origin=0.0)
    pipe = build_pipeline(source, scorer, PipelineOptions(realtime=pace == "realtime"), vad=vad,
                    transcriber=transcriber, sinks=list(sinks))
    return pipe, pipe.run(interim=True)


@pytest.fixture(scope="module")
def plain(clip, scorer, transcriber):
    """The non-speculative path: no speculation, no interims, read as fast as possible."""
    return run(clip, scorer, transcriber, "fast", VadOptions(speculative_silence_s=0, interim_every_s=0))


@pytest.fixture(scope="module")
def paced(clip, scorer, transcriber, tmp_path_factory):
    """Speculation and interims on, paced like a microphone (the clip's ~17 s in real time)."""
    from moodlens.realtime.engine.events import JsonlSink

    out = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    pipe, events = run(clip, scorer, transcriber, "realtime",
                       VadOptions(speculative_silence_s=0.2, interim_every_s=1.0, interim_min_s=2.0),
                       sinks=[JsonlSink(out)])
    return pipe, events, out


def test_speculative_path_gives_the_same_finals(plain, paced):
    _, reference = plain
    pipe, events, _ = paced
    finals = [e for e in events if not e.interim]
    assert len(reference) == len(SENTENCES) + 1
    # Same windows, same transcripts: a reused speculation never changes what is scored.
    assert [(e.id, e.start, e.end, e.text) for e in finals] == [(e.id, e.start, e.end, e.text) for e in reference]
    # ... and the same scores: a final scored ahead, on its speculation, is scored on the same inputs.
    assert pipe.prescored_used >= 1
    for got, ref in zip(finals, reference):
        assert got.fused == pytest.approx(ref.fused, abs=1e-4)
        assert got.present == ref.present
    snap = pipe.stats.snapshot()
    assert snap.windows_scored == len(finals) and snap.windows_merged == 0 and snap.windows_dropped == 0
    assert snap.spec_emitted >= len(finals)       # one per utterance end, one more for the pause
    # Every speculation is accounted for exactly once: reused, discarded after decoding, or skipped.
    assert snap.spec_used == sum(e.speculative for e in finals) >= 1
    assert snap.spec_emitted == snap.spec_used + snap.spec_discarded + snap.spec_skipped
    assert snap.spec_started == snap.spec_used + snap.spec_discarded
    assert (snap.spec_wasted_ms > 0) == (snap.spec_discarded > 0)


def test_speculation_on_resumed_speech_is_dropped_not_double_counted(paced):
    pipe, events, _ = paced
    finals = [e for e in events if not e.interim]
    last = finals[-1]
    # "I was thinking ... that we should go home.": one window, one score, both halves in it.
    assert "thinking" in last.text.lower() and "home" in last.text.lower(), last.text
    assert not last.speculative or last.start < last.speech_end - 2.0
    assert len({e.id for e in finals}) == len(finals)               # no final twice
    assert pipe.stats.snapshot().spec_emitted >= len(finals) + 1    # the pause's speculation was made


def test_interim_events_come_before_their_final_and_are_sane(paced):
    pipe, events, out = paced
    long_id = next(e.id for e in events if not e.interim and "terrible" in e.text.lower())
    interims = [e for e in events if e.interim]
    assert interims, "a 4 s sentence gives interim events"
    assert pipe.stats.snapshot().interims_emitted == len(interims)
    for e in interims:
        final_at = next(i for i, f in enumerate(events) if not f.interim and f.id == e.id)
        assert events.index(e) < final_at                     # each interim before its final
        final = events[final_at]
        assert e.start == final.start and e.end <= final.end and e.ready_at <= final.ready_at
        assert e.speech_end is not None and e.start < e.speech_end <= e.end + 1e-6
        check_event_dict(e.to_dict())
    assert any(e.id == long_id for e in interims)
    # The JSONL file has them too, marked; read_jsonl gives the finals unless asked.
    from moodlens.realtime.engine.events import read_jsonl

    assert len(read_jsonl(out, interim=True)) == len(events)
    assert [e.text for e in read_jsonl(out)] == [e.text for e in events if not e.interim]


def test_every_final_carries_speech_end_and_ready_at_on_the_media_clock(paced, plain):
    for events in (paced[1], plain[1]):
        for e in events:
            d = e.to_dict()
            check_event_dict(d)
            assert d["v"] == SCHEMA_VERSION
            assert e.start < e.speech_end <= e.end <= e.speech_end + 0.2 + 0.04   # pad_s after the speech
            assert e.ready_at > e.speech_end
            felt = e.latency_ms["speech_end"]
            assert felt == pytest.approx((e.ready_at - e.speech_end) * 1000, abs=1.0)
            if not e.interim:
                # Paced, the VAD's share is about min_silence_s (0.4 s, in 32 ms frames); fast, the file is read ahead of it.
                assert (350 if events is paced[1] else 0) <= e.latency_ms["vad"] <= felt
                assert felt == pytest.approx(e.latency_ms["vad"] + e.latency_ms["total"], abs=60)
    # Paced: ready_at is when the score was ready on the clip's clock, so it is after speech_end by
    # the felt latency and before the clip had played much further (the pipeline keeps up).
    for e in paced[1]:
        assert e.ready_at - e.speech_end < 5.0


# ---- the schema ------------------------------------------------------------------------------

def _v2(**changes):
    d = WindowEvent(id=3, start=1.0, end=3.0, text="hi", fused=0.5, text_score=0.5, present={
        "text": True, "audio": False, "vision": False}, latency_ms={
        "asr": 300.0, "features": 5.0, "model": 4.0, "total": 320.0, "speech_end": 820.0, "vad": 500.0},
        speech_end=2.8, ready_at=3.62).to_dict()
    d.update(changes)
    return d


def test_schema_version_2_checks_the_new_fields():
    check_event_dict(_v2())
    for bad, says in ((_v2(ready_at=2.0), "before its speech ended"),
                      (_v2(speech_end=3.5), "outside its window"),
                      (_v2(ready_at=None), "both are set or both are null"),
                      (_v2(v=3), "schema version 3"),
                      (_v2(cut="no"), "cut='no'"),
                      (_v2(latency_ms={"asr": 1, "features": 1, "model": 1, "total": 1, "felt": 2}), "latency_ms keys")):
        with pytest.raises(DataError, match=says):
            check_event_dict(bad)
    no_speech = _v2(speech_end=None, ready_at=None)        # a vision-only window has no speech end
    check_event_dict(no_speech)
    d = _v2()
    del d["speculative"]
    with pytest.raises(DataError, match="lacks the key 'speculative'"):
        check_event_dict(d)


def test_version_1_lines_are_still_read():
    v1 = {"id": 0, "start": 0.0, "end": 15.0, "text": "a long monologue",
          "scores": {"text": 0.1, "audio": None, "vision": None, "fused": 0.1},
          "present": {"text": True, "audio": False, "vision": False},
          "latency_ms": {"asr": 1.0, "features": 1.0, "model": 1.0, "total": 3.0},
          "backend": "eager", "interim": True}
    check_event_dict(v1)
    event = WindowEvent.from_dict(v1)
    # Version 1's "interim" was a max-length cut, which is a final window: now `cut`.
    assert event.cut and not event.interim and event.speech_end is None
    with pytest.raises(DataError, match="latency_ms keys"):
        check_event_dict({**v1, "latency_ms": {**v1["latency_ms"], "speech_end": 5.0}})   # a v2 key in v1
