"""The live pipeline on real parts: PyAV decoding, Silero VAD, Whisper tiny.en, MediaPipe, a real model.

Clips are made here: espeak-ng English speech, face frames from the bundled demo clip (a real
photo), and plain gradient frames for a face-free video.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from moodlens.realtime.engine.events import check_event_dict
from moodlens.realtime.engine.pipeline import PipelineOptions
from moodlens.realtime.engine.build import build_pipeline
from moodlens.realtime.engine.stats import PipelineStats
from moodlens.realtime.engine.streams import merge_windows, window_queue
from moodlens.core.types import Window

pytestmark = pytest.mark.e2e

from helpers.live import scorer, transcriber  # noqa: F401 (module-scoped fixtures)
from helpers.media import DEMO, SR, write_clip

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["I love this wonderful day.", "This is terrible and I hate it.", "The meeting is on Tuesday at three o'clock."]


# ---- clip helpers ------------------------------------------------------------------------------

def speech_track(tts, sentences, gap_s=1.2, lead_s=0.5) -> tuple[np.ndarray, list[tuple[float, float]]]:
    parts, spans, t = [np.zeros(int(lead_s * SR), np.float32)], [], lead_s
    for s in sentences:
        audio, _ = sf.read(str(tts(s)), dtype="float32")
        spans.append((t, t + len(audio) / SR))
        parts += [audio, np.zeros(int(gap_s * SR), np.float32)]
        t += len(audio) / SR + gap_s
    return np.concatenate(parts), spans


def demo_frames(seconds: float, fps: int = 10, size=(320, 240)) -> list[np.ndarray]:
    """Frames of the bundled clip's face (a real photo) at `fps` for `seconds`."""
    import av

    frames = []
    with av.open(str(DEMO)) as c:
        for f in c.decode(video=0):
            if f.time >= seconds:
                break
            if f.time >= len(frames) / fps - 1e-6:
                frames.append(f.to_ndarray(format="rgb24", width=size[0], height=size[1]))
    return frames


def gradient_frames(n: int, size=(160, 120)) -> list[np.ndarray]:
    w, h = size
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
    return [np.clip(base + 3 * i, 0, 255).astype(np.uint8) for i in range(n)]


# ---- shared heavy parts ------------------------------------------------------------------------------

def run_file(path: Path, scorer, transcriber, realtime=False, pace="fast", sinks=(), **options):
    from moodlens.realtime.capture.media import MediaFileSource

    source = MediaFileSource(path, pace=pace, origin=0.0, max_size=320)
    pipe = build_pipeline(source, scorer, PipelineOptions(realtime=realtime, **options), sinks=list(sinks),
                    transcriber=transcriber)
    return pipe, pipe.run()


# ---- tests ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def talk(tmp_path_factory, scorer, transcriber):
    """Three sentences (positive, negative, neutral) over a real face, run once through the pipeline."""
    from helpers.media import synthesize

    folder = tmp_path_factory.mktemp("talk")
    counter = iter(range(100))
    audio, spans = speech_track(lambda text: synthesize(text, folder / f"s{next(counter)}.wav"), SENTENCES)
    clip = write_clip(folder / "talk.mp4", audio, demo_frames(len(audio) / SR + 0.2), fps=10)
    pipe, events = run_file(clip, scorer, transcriber)
    return pipe, events, spans


def test_one_window_per_sentence_with_faces(talk, scorer):
    pipe, events, spans = talk
    assert len(events) == len(SENTENCES), [e.text for e in events]
    for event, (start, end), sentence in zip(events, spans, SENTENCES):
        # Each window covers its sentence (VAD pads by 0.2 s; AAC adds a little priming delay).
        assert event.start <= start + 0.3 and event.end >= end - 0.3, (event.start, event.end, start, end)
        words = set(sentence.lower().strip(".").split())
        heard = set(event.text.lower().replace(",", "").strip(".").split())
        assert len(words & heard) >= len(words) - 1, (sentence, event.text)
        assert event.present == {"text": True, "audio": True, "vision": True}
        # Present modalities score a number unless the checkpoint never trained that branch (null).
        assert event.scores["fused"] is not None
        assert all((event.scores[m] is not None) == (m in scorer.trained_modalities) for m in ("text", "audio", "vision"))
        assert event.latency_ms["asr"] > 0 and event.latency_ms["total"] >= event.latency_ms["model"]
        check_event_dict(event.to_dict())
    snap = pipe.stats.snapshot()
    assert snap.windows_scored == len(SENTENCES) and snap.faces_found > 0
    assert snap.frames_dropped == 0 and snap.windows_merged == 0      # fast: stages wait, never drop
    assert snap.finished and 9 < snap.video_fps < 11                  # the clip's 10 fps, averaged at the end


def test_fused_sign_matches_each_sentence_with_the_default_weights(talk):
    from moodlens.models.checkpoint import default_checkpoint_path

    if not default_checkpoint_path().exists():
        pytest.skip("models/weights/default.pt (the train engineer's default weights) is not there yet")
    _, events, _ = talk
    positive, negative, neutral = (e.fused for e in events)
    assert positive > 0.3 and negative < -0.3, (positive, negative)
    assert negative < neutral < positive


def test_face_free_video_reports_vision_absent(tts, tmp_path, scorer, transcriber):
    audio, _ = speech_track(tts, ["Hello there, how are you today?"], lead_s=0.3)
    clip = write_clip(tmp_path / "noface.mp4", audio, gradient_frames(int(len(audio) / SR * 10) + 1), fps=10)
    pipe, events = run_file(clip, scorer, transcriber)
    assert len(events) == 1
    e = events[0]
    assert e.present == {"text": True, "audio": True, "vision": False}
    assert e.vision_score is None and e.to_dict()["scores"]["vision"] is None
    assert isinstance(e.to_dict()["scores"]["fused"], float)
    assert pipe.stats.snapshot().faces_processed > 0 and pipe.stats.snapshot().faces_found == 0


def test_file_without_audio_gives_vision_only_windows(tmp_path, scorer, transcriber):
    frames = demo_frames(6.0)
    clip = write_clip(tmp_path / "silent.mp4", None, frames, fps=10)
    pipe, events = run_file(clip, scorer, transcriber, no_audio_window_s=3.0)
    assert len(events) == 2, [(e.start, e.end) for e in events]
    for e in events:
        assert e.present == {"text": False, "audio": False, "vision": True}
        assert e.text == "" and e.text_score is None and e.audio_score is None
        assert (e.vision_score is not None) == ("vision" in scorer.trained_modalities) and np.isfinite(e.fused)
        assert e.latency_ms["asr"] == 0
    assert events[0].start == pytest.approx(0.0, abs=0.15) and events[0].end == pytest.approx(3.0, abs=0.15)


def test_audio_only_file_and_jsonl_sink(tts, tmp_path, scorer, transcriber):
    from moodlens.realtime.engine.events import JsonlSink, read_jsonl

    audio, _ = speech_track(tts, SENTENCES[:2])
    wav = tmp_path / "speech.wav"
    sf.write(str(wav), audio, SR)
    out = tmp_path / "events.jsonl"
    _, events = run_file(wav, scorer, transcriber, sinks=[JsonlSink(out)])
    assert len(events) == 2
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    for line, event in zip(lines, events):
        d = json.loads(line)
        check_event_dict(d)
        assert d["present"]["vision"] is False and d["scores"]["vision"] is None
        assert d == event.to_dict()
    assert [e.id for e in read_jsonl(out)] == [e.id for e in events]


def test_corrupt_and_missing_files_raise_media_error(tmp_path):
    from moodlens.core.errors import MediaError
    from moodlens.realtime.capture.media import MediaFileSource

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(MediaError, match="bad.mp4"):
        MediaFileSource(bad)
    with pytest.raises(MediaError, match="does not exist"):
        MediaFileSource(tmp_path / "missing.mp4")


def test_stop_ends_every_stage_within_a_second(tts, tmp_path, scorer, transcriber):
    from moodlens.realtime.capture.media import MediaFileSource

    audio, _ = speech_track(tts, SENTENCES[:1] * 3)
    clip = write_clip(tmp_path / "long.mp4", audio, demo_frames(len(audio) / SR), fps=10)
    pipe = build_pipeline(MediaFileSource(clip, pace="realtime", origin=0.0, max_size=320), scorer,
                    PipelineOptions(realtime=True), transcriber=transcriber)
    got = []

    def consume():
        got.extend(pipe.events())

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    time.sleep(1.5)
    t0 = time.monotonic()
    pipe.stop()
    consumer.join(2.0)
    elapsed = time.monotonic() - t0
    assert not consumer.is_alive()
    assert elapsed < 1.0, elapsed
    assert all(not t.is_alive() for t in pipe._threads if t.name not in ("moodlens-asr", "moodlens-interim")), \
        [t.name for t in pipe._threads if t.is_alive()]
    # Whisper cannot be interrupted mid-window; let it finish so no native call outlives the test.
    for t in pipe._threads:
        t.join(30)


def window(i, start, end, closed_at=0.0):
    return Window(id=i, start=start, end=end, audio=np.zeros(int((end - start) * SR), np.float32), closed_at=closed_at)


def test_window_queue_merges_then_drops_when_whisper_falls_behind():
    stats = PipelineStats()
    q = window_queue(2, realtime=True, max_merged_s=5.0, stats=stats, stop=threading.Event())
    q.put(window(0, 0, 2, closed_at=10.0))
    q.put(window(1, 3, 5, closed_at=11.0))
    q.put(window(2, 6, 8, closed_at=12.0))          # full: merged into window 1
    assert len(q) == 2 and stats.windows_merged == 1
    merged = q._items[-1]
    assert (merged.start, merged.end, merged.closed_at) == (3, 8, 11.0)
    assert len(merged.audio) == 4 * SR and merged.merged == 2
    q.put(window(3, 9, 11))                          # merging would pass 5 s: the oldest is dropped
    assert stats.windows_dropped == 1 and [w.id for w in q._items] == [1, 3]
    assert stats.asr_backlog == 2
    assert q.get().id == 1 and stats.asr_backlog == 1


def test_window_queue_waits_instead_of_merging_when_not_realtime():
    stats, stop = PipelineStats(), threading.Event()
    q = window_queue(1, realtime=False, max_merged_s=5.0, stats=stats, stop=stop)
    q.put(window(0, 0, 1))
    t = threading.Thread(target=q.put, args=(window(1, 2, 3),), daemon=True)
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and len(q) == 1              # blocked, nothing merged or dropped
    assert q.get().id == 0
    t.join(1.0)
    assert not t.is_alive() and q.get().id == 1 and stats.windows_merged == stats.windows_dropped == 0


def test_merge_windows_keeps_faces_and_older_close_time():
    from moodlens.core.types import FaceFeatures

    a, b = window(0, 0, 1, closed_at=5.0), window(1, 2, 3, closed_at=6.0)
    a.faces.append(FaceFeatures(t=0.5, values=None, face_present=False))
    b.faces.append(FaceFeatures(t=2.5, values=None, face_present=False))
    m = merge_windows(a, b)
    assert [f.t for f in m.faces] == [0.5, 2.5] and m.closed_at == 5.0 and m.duration == 3


def test_pipeline_options_are_checked():
    from moodlens.core.errors import ConfigError

    with pytest.raises(ConfigError, match="asr_queue_size"):
        PipelineOptions(asr_queue_size=0).check()


class StandInCamera:
    """Stand-in for the webcam this machine lacks: OpenCV's VideoCapture methods, real face frames
    (the bundled clip's photo) delivered at the camera's pace."""

    def __init__(self, fps: float = 25.0):
        import cv2

        self.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in demo_frames(2.0, fps=int(fps))]
        self.period = 1.0 / fps
        self.next_t = time.monotonic()
        self.count = 0

    def isOpened(self):
        return True

    def set(self, *args):
        return True

    def read(self):
        delay = self.next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_t += self.period
        frame = self.frames[self.count % len(self.frames)]
        self.count += 1
        return True, frame.copy()

    def release(self):
        pass


def test_live_camera_without_microphone_scores_vision_windows_in_real_time(scorer, transcriber):
    from moodlens.realtime.capture.devices import LiveSource, WebcamSource

    from moodlens.realtime.engine import SinkBase

    class Collector(SinkBase):   # a sink that keeps what it is given
        def __init__(self):
            self.frames, self.faces, self.events, self.closed = 0, [], [], False

        def on_audio(self, chunk):
            raise AssertionError("no microphone, no audio")

        def on_frame(self, frame):
            self.frames += 1

        def on_face(self, face):
            self.faces.append(face)

        def on_event(self, event):
            self.events.append(event)

        def close(self):
            self.closed = True

    sink = Collector()
    source = LiveSource(WebcamSource(0, capture=StandInCamera()), None)
    pipe = build_pipeline(source, scorer, PipelineOptions(realtime=True, no_audio_window_s=1.0), sinks=[sink],
                    transcriber=transcriber)
    events = []
    started = time.monotonic()
    for event in pipe.events():
        events.append(event)
        if len(events) == 2:
            break
    took = time.monotonic() - started
    assert [e.present for e in events] == [{"text": False, "audio": False, "vision": True}] * 2
    assert events[0].end == pytest.approx(events[0].start + 1.0) and events[1].start == pytest.approx(events[0].end)
    assert all(e.latency_ms["total"] < 1000 for e in events)      # scored as soon as the second is over
    assert took < 10
    snap = pipe.stats.snapshot()
    assert snap.frames_in >= 40 and snap.faces_found > 0 and not snap.has_audio
    assert all(not t.is_alive() for t in pipe._threads)          # leaving the loop stopped every stage
    assert sink.closed and sink.frames == snap.frames_in and len(sink.faces) == snap.faces_processed
    assert not source.camera.running and not source.camera._thread.is_alive()   # the camera was released
    assert [e.id for e in sink.events[:2]] == [e.id for e in events]


def test_frame_rate_keeps_the_face_rate():
    from moodlens.realtime.capture.streams import FrameRate

    for fps_in, fps_out, expect in ((30, 15, 30), (25, 15, 30), (10, 15, 20), (60, 10, 20)):
        schedule = FrameRate(fps_out, early=0.25)
        kept = sum(schedule.keep(i / fps_in) for i in range(2 * fps_in))       # two seconds of frames
        assert abs(kept - expect) <= 1, (fps_in, fps_out, kept)             # the last may fall a bit early
    schedule = FrameRate(15, early=0.25)
    assert [i for i in range(12) if schedule.keep(i / 30)] == [0, 2, 4, 6, 8, 10]   # every other, not every third
    schedule = FrameRate(10, early=0.25)
    assert schedule.keep(5.0) and not schedule.keep(5.05) and schedule.keep(5.1)
    assert schedule.keep(1.0)                                                 # time went back: new stream
    # Without the early slack (a source's video_fps decimation) 25 fps to 15 keeps every slot's first frame.
    strict = FrameRate(15)
    assert [i for i in range(10) if strict.keep(i / 25)] == [0, 2, 4, 5, 7, 9]


def test_bundled_demo_clip_matches_its_sentence_list():
    from moodlens.core.assets import DEMO_CLIP, resolve_path
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.realtime.perception.vad import split_utterances

    clip = resolve_path(DEMO_CLIP)
    manifest = json.loads(clip.with_suffix(".json").read_text())
    assert clip.stat().st_size < 2_000_000
    with MediaFileSource(clip, video_fps=1.0, max_size=64) as source:
        assert source.has_audio and source.has_video and (source.width, source.height) == (640, 480)
        assert abs(source.nominal_fps - 25) < 0.5 and abs(source.duration - manifest["duration"]) < 0.2
        audio = np.concatenate([item.samples for item in source if not hasattr(item, "image")])
    spans = split_utterances(audio)
    sentences = manifest["sentences"]
    assert len(spans) == len(sentences) == 5
    assert sorted(s["sign"] for s in sentences) == [-1, -1, 0, 1, 1]
    for (start, end), sentence in zip(spans, sentences):
        assert abs(start - sentence["start"]) < 0.35 and abs(end - sentence["end"]) < 0.35


def test_waiting_windows_are_scored_in_one_batch(tts, tmp_path, scorer):
    from moodlens.realtime.engine.pipeline import _Transcribed
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.core.types import FaceFeatures

    speech, _ = sf.read(str(tts("I love this wonderful day.")), dtype="float32")
    wav = tmp_path / "a.wav"
    sf.write(str(wav), speech, SR)
    pipe = build_pipeline(MediaFileSource(wav, origin=0.0), scorer, transcriber=object())
    pipe.origin = 0.0
    face = FaceFeatures(t=0.1, values=np.full(scorer.featurizer_config.vision_dim, 0.2, np.float32), face_present=True)
    items = [
        _Transcribed(Window(0, 0.0, 2.0, speech[:2 * SR], faces=[face], closed_at=time.monotonic()), "I love this", 300.0),
        _Transcribed(Window(1, 3.0, 4.0, speech[:SR], closed_at=time.monotonic()), "", 250.0),
        _Transcribed(Window(2, 5.0, 5.5, speech[:SR // 2], closed_at=time.monotonic()), "wonderful day", 200.0),
    ]
    events = pipe._score(items)
    assert [e.id for e in events] == [0, 1, 2]
    assert [e.present for e in events] == [{"text": True, "audio": True, "vision": True},
                                           {"text": False, "audio": True, "vision": False},
                                           {"text": True, "audio": True, "vision": False}]
    assert events[1].text_score is None and events[1].vision_score is None
    assert (events[0].vision_score is not None) == ("vision" in scorer.trained_modalities)
    assert [e.latency_ms["asr"] for e in events] == [300.0, 250.0, 200.0]
    assert len({e.latency_ms["model"] for e in events}) == 1              # one model call for the batch
    # Each row is scored as it would be alone (padding in a batch changes nothing).
    alone = pipe._score(items[2:])[0]
    assert alone.fused == pytest.approx(events[2].fused, abs=1e-4)
    pipe.stop()
