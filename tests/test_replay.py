"""Replay and rescore: recorded windows come back at the recorded pace (or faster) on the dashboard or
as JSONL; a session recorded by the real pipeline (PyAV, Silero VAD, Whisper, MediaPipe, a model) is
rescored from its recorded audio and video."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.media import talking_face_clip
from helpers.sessions import record_synthetic

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "realtime" / "assets" / "demo.mp4"
SR = 16_000


@pytest.fixture(scope="module")
def synthetic_session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replay") / "synthetic"
    record_synthetic(folder, seconds=3.1, video="none")
    return folder


def test_headless_replay_writes_the_recorded_windows(synthetic_session, tmp_path):
    from moodlens.realtime.engine.events import check_event_dict
    from moodlens.realtime.sessions.reader import open_session

    out = tmp_path / "replay.jsonl"
    code, err = run_cli("replay", str(synthetic_session), "--headless", "--jsonl", str(out))
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    session = open_session(synthetic_session)
    assert len(lines) == len(session.windows) == 6
    for d, w in zip(lines, session.windows):
        check_event_dict(d)
        assert (d["id"], d["text"], d["scores"]) == (w.id, w.text, w.scores)
        assert d["start"] == pytest.approx(w.start, abs=1e-3)


def test_replay_speed(synthetic_session):
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.sessions.replay import replay_events

    session = open_session(synthetic_session)
    last_due = session.windows[-1].end + session.windows[-1].latency_ms["total"] / 1000   # 3.115 s
    t0 = time.monotonic()
    arrivals = []
    for _ in replay_events(session, speed=6.0):
        arrivals.append(time.monotonic() - t0)
    assert arrivals[-1] == pytest.approx(last_due / 6.0, abs=0.15)
    assert arrivals[0] == pytest.approx((0.5 + 0.110) / 6.0, abs=0.1)
    t0 = time.monotonic()
    assert len(list(replay_events(session, speed=0))) == 6
    assert time.monotonic() - t0 < 0.1


def test_replay_dashboard_shows_the_recorded_windows(synthetic_session):
    from moodlens.realtime.ui.dashboard import Dashboard, render_to_text
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.sessions.replay import ReplayClock, replay_events

    session = open_session(synthetic_session)
    clock = ReplayClock(session, speed=0)
    dashboard = Dashboard(f"replay {session.name}", backend="eager", device="recorded", stats=clock.snapshot)
    for event in replay_events(session, speed=0):
        clock.add(event)
        dashboard.add(event)
    clock.finished = True
    screen = render_to_text(dashboard, 100, 30)
    last = session.windows[-1]
    assert "replay synthetic" in screen
    assert f"{last.scores['fused']:+.2f}" in screen and last.text[:20] in screen
    snap = clock.snapshot()
    assert snap.windows_scored == 6 and snap.media_s == pytest.approx(last.end)
    assert snap.latency_p50["total"] == pytest.approx(np.median([w.latency_ms["total"] for w in session.windows]))


# ---- the real pipeline: record, then rescore --------------------------------------------------------

@pytest.fixture(scope="module")
def scorer():
    """Engine-A's Scorer with an untrained zoo model (the scores' signs are not what is tested)."""
    from moodlens.models import build_model
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    from moodlens.realtime.scoring.scorer import Scorer

    return Scorer.from_model(build_model("hcrl_mfd").eval(), FeaturizerConfig().to_dict(), backend="eager",
                             quiet=True)


@pytest.fixture(scope="module")
def transcriber():
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber

    return Transcriber(AsrOptions(cpu_threads=2))




@pytest.mark.e2e
def test_record_with_the_pipeline_then_rescore(tts, tmp_path, scorer, transcriber):
    from moodlens.realtime.engine.events import JsonlSink, read_jsonl
    from moodlens.realtime.engine.pipeline import PipelineOptions
    from moodlens.realtime.engine.build import build_pipeline
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.app.live_config import LiveConfig
    from moodlens.realtime.app.session import configured_pipeline
    from moodlens.realtime.sessions.replay import RecordedSource
    from moodlens.realtime.capture.media import MediaFileSource

    clip = talking_face_clip(tmp_path / "talk.mp4", tts("I really enjoyed the concert last night."))
    folder = tmp_path / "recorded"
    source = MediaFileSource(clip, pace="fast", origin=0.0, max_size=240)
    pipe = build_pipeline(source, scorer, PipelineOptions(realtime=False), transcriber=transcriber)
    recorder = SessionRecorder(folder, {"featurizer_config": pipe.featurizer_config.to_dict(),
                                        "checkpoint": "untrained hcrl_mfd", "source": {"path": str(clip)}},
                               RecordingOptions(block_when_busy=True))
    pipe.sinks.append(recorder)
    live_events = pipe.run()               # run() closes the sinks at the end
    assert recorder.error is None
    session = open_session(folder)
    assert session.closed_cleanly and len(session.windows) == len(live_events) >= 1
    assert "concert" in " ".join(w.text.lower() for w in session.windows)
    assert session.windows[0].present["vision"]          # the demo face was tracked live
    frames = list(session.iter_frames())
    assert len(frames) >= 20 and frames[0].image.shape == (180, 240, 3)
    assert session.audio_duration == pytest.approx(source.duration, abs=0.1)

    out = tmp_path / "rescored.jsonl"
    recorded = RecordedSource(session)        # what `moodlens replay --rescore` builds (app/session.py)
    rescore = configured_pipeline(recorded, scorer, LiveConfig(), realtime=False, vision=recorded.vision_stand_in(),
                             transcriber=transcriber)
    rescore.sinks.append(JsonlSink(out))
    rescored = rescore.run()
    assert [e.text for e in rescored] == [w.text for w in session.windows]   # same Whisper, same audio
    for e, w in zip(rescored, session.windows):
        assert e.start == pytest.approx(w.start, abs=0.1) and e.end == pytest.approx(w.end, abs=0.1)
        assert e.present == w.present                   # the face is found again in the recorded video
        # Same model, same media (PCM-16 audio, re-encoded frames): nearly the same scores.
        assert e.fused == pytest.approx(w.scores["fused"], abs=0.25)
    assert len(read_jsonl(out)) == len(rescored)


def test_rescore_needs_media(tmp_path):
    from moodlens.core.errors import DataError
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.sessions.replay import RecordedSource

    folder = tmp_path / "empty"
    from moodlens.realtime.sessions.writer import SessionRecorder
    SessionRecorder(folder, {}).close()
    with pytest.raises(DataError, match="neither recorded audio nor video"):
        RecordedSource(open_session(folder))
