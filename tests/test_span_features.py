"""The train/serve contract: live scoring, `moodlens featurize` and training on a recorded session
compute a window's features with one function (`Featurizer.span_sample`), so for the same media they
give the same features.

Real parts throughout: PyAV decoding, Silero VAD, Whisper, MediaPipe, the session recorder/reader.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.media import talking_face_clip

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """One paced-fast pipeline run over a talking-face clip, recorded in privacy mode (face features)."""
    from helpers.media import synthesize
    from moodlens.models import build_model
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.realtime.engine.pipeline import PipelineOptions
    from moodlens.realtime.engine.build import build_pipeline
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.featurizer import Featurizer
    from moodlens.realtime.scoring.scorer import Scorer
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder

    tmp = tmp_path_factory.mktemp("span")
    clip = talking_face_clip(tmp / "talk.mp4", synthesize("I really enjoyed the concert last night.", tmp / "s.wav"))
    scorer = Scorer.from_model(build_model("hcrl_mfd").eval(), FeaturizerConfig().to_dict(), backend="eager",
                               quiet=True)
    captured = []
    real = Featurizer.span_sample

    def spy(self, *args, **kwargs):          # records what the live pipeline computed, changes nothing
        sample = real(self, *args, **kwargs)
        captured.append(sample)
        return sample

    Featurizer.span_sample = spy
    try:
        source = MediaFileSource(clip, pace="fast", origin=0.0, max_size=240)
        pipe = build_pipeline(source, scorer, PipelineOptions(realtime=False), transcriber=Transcriber(AsrOptions(cpu_threads=2)))
        folder = tmp / "session"
        recorder = SessionRecorder(folder, {"featurizer_config": pipe.featurizer_config.to_dict()},
                                   RecordingOptions(video="faces", block_when_busy=True, faces_from_pipeline=True))
        pipe.sinks.append(recorder)
        events = pipe.run()
    finally:
        Featurizer.span_sample = real
    # interim previews are featurized and scored too; keep the samples of the final windows
    finals = [next(s for s in reversed(captured) if s.start == e.start and s.end == e.end and s.text == e.text)
              for e in events]
    assert recorder.error is None and len(events) == len(finals) >= 1
    return clip, folder, events, finals


def same_sample(a, b, audio_atol=0.0):
    np.testing.assert_array_equal(a.text_ids, b.text_ids)
    np.testing.assert_array_equal(a.present, b.present)
    np.testing.assert_array_equal(a.vision_mask, b.vision_mask)
    np.testing.assert_array_equal(a.vision, b.vision)
    assert a.audio.shape == b.audio.shape
    np.testing.assert_allclose(a.audio, b.audio, rtol=0, atol=audio_atol)


def test_offline_featurize_gives_the_live_features(live_run):
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.train.datasets import ClipFeaturizer, FeaturizeOptions

    clip, _, events, live = live_run
    offline = ClipFeaturizer(FeaturizerConfig(), FeaturizeOptions(max_frame_size=240, progress=False))
    try:
        audio, faces, _, _, _ = offline.decode(clip)
        for event, sample in zip(events, live):
            same_sample(offline.window_sample(audio, faces, event.start, event.end, text=event.text), sample)
    finally:
        offline.close()
    assert any(s.present[2] for s in live), "the face was tracked: the vision features were compared"


def test_session_training_gives_the_live_features(live_run):
    """Text and faces (the pipeline's own, recorded) match the live features exactly. The recording keeps
    audio as PCM-16, so the session path is compared with the live function over that same audio: the
    clip's audio as the pipeline saw it, stored as the recorder stores it (near-silent stretches round to
    zero there, which moves log-energies, so raw live audio features cannot match bit for bit)."""
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.featurizer import Featurizer, span_audio
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.train.datasets import ClipFeaturizer, FeaturizeOptions
    from moodlens.train.sessions import LabelledWindow, featurize_windows

    clip, folder, events, live = live_run
    session = open_session(folder)
    assert [w.id for w in session.windows] == [e.id for e in events]
    items = [LabelledWindow(session, w, 0.0, None, i) for i, w in enumerate(session.windows)]
    _, samples = featurize_windows(items, FeaturizerConfig(), show_progress=False)
    offline = ClipFeaturizer(FeaturizerConfig(), FeaturizeOptions(max_frame_size=240, progress=False))
    audio, _, _, _, _ = offline.decode(clip)
    offline.close()
    stored = np.clip((audio * 32768.0).round(), -32768, 32767).astype(np.int16).astype(np.float32) / 32768.0   # the recorder's PCM-16
    featurizer = Featurizer(FeaturizerConfig())
    for sample, reference, event in zip(samples, live, events):
        np.testing.assert_array_equal(sample.text_ids, reference.text_ids)
        np.testing.assert_array_equal(sample.present, reference.present)
        np.testing.assert_array_equal(sample.vision_mask, reference.vision_mask)
        np.testing.assert_array_equal(sample.vision, reference.vision)
        expected = featurizer.span_sample(event.text, stored, [], event.start, event.end, audio_start=0.0)
        np.testing.assert_array_equal(sample.audio, expected.audio)
    assert any(s.present[2] for s in samples)
