"""The interfaces the pipeline relies on, written down as Protocols, are provided by every implementation."""

from __future__ import annotations

import pytest

from moodlens.realtime.capture import Source
from moodlens.realtime.perception import FaceTracker


def test_media_and_synthetic_sources_are_sources():
    from helpers.media import DEMO
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.realtime.capture.synthetic import SyntheticSource

    with MediaFileSource(DEMO, pace="fast") as media:
        assert isinstance(media, Source) and media.has_audio and media.has_video and media.duration > 0
    synthetic = SyntheticSource(duration=0.5, tone_hz=220)
    assert isinstance(synthetic, Source)
    assert sum(1 for _ in synthetic) > 0 and synthetic.stats.frames_in + synthetic.stats.audio_chunks_in > 0


def test_a_recorded_session_is_a_source_and_its_faces_a_tracker(tmp_path):
    from helpers.sessions import record_synthetic
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.sessions.replay import RecordedFaces, RecordedSource

    record_synthetic(tmp_path / "s", seconds=1.1, video="none")
    source = RecordedSource(open_session(tmp_path / "s"))
    assert isinstance(source, Source)
    assert isinstance(RecordedFaces([]), FaceTracker)


def test_the_face_featurizer_is_a_tracker():
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    tracker = VisionFeaturizer()
    try:
        assert isinstance(tracker, FaceTracker)
    finally:
        tracker.close()


@pytest.mark.parametrize("missing", ["has_audio", "close"])
def test_the_protocol_refuses_what_lacks_a_member(missing):
    class Partial:
        has_audio = has_video = True
        duration = None
        stats = None

        def __iter__(self):
            return iter(())

        def close(self):
            pass

    obj = Partial()
    assert isinstance(obj, Source)
    delattr(Partial, missing)
    assert not isinstance(Partial(), Source)


def test_the_scorer_is_a_batch_scorer_and_sinks_are_sinks(tmp_path):
    from moodlens.models import build_model
    from moodlens.realtime.engine import Sink, SinkBase
    from moodlens.realtime.engine.events import JsonlSink
    from moodlens.realtime.scoring import BatchScorer, ScoredBatch
    from moodlens.realtime.scoring.scorer import Scorer
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder

    model = build_model("hcrl_mfd").eval()
    scorer = Scorer.from_model(model, backend="eager", quiet=True)
    assert isinstance(scorer, BatchScorer)
    assert isinstance(scorer.score(model.example_inputs(2)), ScoredBatch)
    jsonl = JsonlSink(tmp_path / "e.jsonl")
    recorder = SessionRecorder(tmp_path / "s", {}, RecordingOptions(video="none"))
    try:
        assert all(isinstance(s, Sink) for s in (jsonl, recorder, SinkBase()))
    finally:
        jsonl.close()
        recorder.close()
    assert not isinstance(object(), Sink)
