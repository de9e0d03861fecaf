"""Session recording: crash safety (SIGINT, SIGTERM, SIGKILL mid-run), torn lines, a full disk and an
unwritable folder (the pipeline keeps going), face-features-only privacy mode, and the reader.

The recordings are made by a subprocess that plays the pipeline's part with synthetic audio chunks,
video frames and window events (this file run as a script: `python tests/test_recording.py ...`),
because a process has to die mid-recording. The camera and microphone are what is synthetic here;
the recorder, PyAV/x264, the file system and the signals are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.media import demo_face_frames  # noqa: F401
from helpers.sessions import CHUNK, SENTENCES, WINDOW_S, record_synthetic, synthetic_items  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable








def windows_on_disk(folder: Path) -> int:
    path = folder / "windows.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def start_recording_process(folder: Path, seconds: float, pace: float, extra_env=None, preexec_fn=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return subprocess.Popen([PYTHON, str(Path(__file__)), "record", str(folder), str(seconds), str(pace)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
                            preexec_fn=preexec_fn)


def wait_for_windows(folder: Path, n: int, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while windows_on_disk(folder) < n:
        if proc.poll() is not None:
            raise AssertionError(f"recording process ended early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {n} windows on disk after {timeout} s")
        time.sleep(0.05)


def assert_session_consistent(folder: Path, min_windows: int):
    """Every listed window has its audio and video, every file parses, the WAV is valid."""
    import soundfile as sf

    from moodlens.realtime.engine.events import check_event_dict
    from moodlens.realtime.sessions.reader import open_session

    session = open_session(folder)
    assert len(session.windows) >= min_windows
    for n, line in enumerate((folder / "windows.jsonl").read_text().splitlines(), 1):
        check_event_dict(json.loads(line), f"line {n}")
    ids = [w.id for w in session.windows]
    assert ids == list(range(len(ids)))
    last_end = session.windows[-1].end
    assert session.audio_duration >= last_end - 1e-3, (session.audio_duration, last_end)
    info = sf.info(str(session.audio_path))          # a valid WAV for any reader, header fixed
    assert info.samplerate == 16000 and abs(info.duration - session.audio_duration) < 1e-3
    audio = session.read_audio(last_end - WINDOW_S, last_end)
    assert np.abs(audio).max() > 0.1                 # the tone, not silence
    if session.video_path is not None:
        times = [f.t for f in session.iter_frames()]
        assert times == sorted(times)
        # The fragment closed at the last window is on disk: frames reach its end (10 fps here).
        assert times[-1] >= last_end - 0.15, (times[-1], last_end)
        assert min(np.diff(times)) > 0.05      # the fragment-closing repeats are not shown as frames
    return session


# ---- tests ----------------------------------------------------------------------------------------

def test_clean_recording_round_trip(tmp_path):
    from moodlens.realtime.sessions.reader import open_session

    folder = tmp_path / "session"
    recorder, events = record_synthetic(folder, seconds=3.1)
    assert recorder.error is None
    session = assert_session_consistent(folder, min_windows=events)
    assert len(session.windows) == events == 6
    assert session.closed_cleanly and session.notes == []
    info = session.info
    assert info["checkpoint"] == "default" and info["devices"]["camera"] == "synthetic stand-in"
    assert "torch" in info["versions"] and info["stats"]["windows_written"] == 6
    # Windows are on the session clock (0 = first recorded item).
    assert session.windows[0].start == pytest.approx(0.0) and session.windows[1].end == pytest.approx(1.0)
    assert session.windows[4].text == "" and session.windows[4].present["text"] is False
    assert session.windows[0].scores["vision"] is None and session.windows[1].scores["vision"] is not None
    # Recorded audio matches what was fed (PCM-16 rounding only).
    fed = np.concatenate([item.samples for kind, item in synthetic_items(3.1) if kind == "audio"])
    got = session.read_audio(0.0, len(fed) / 16000)
    assert np.max(np.abs(got - fed)) < 1e-4
    frames = list(session.iter_frames())
    assert 25 <= len(frames) <= 31 and frames[0].image.shape == (96, 128, 3)
    # A second recorder may not overwrite the folder.
    from moodlens.core.errors import ConfigError
    with pytest.raises(ConfigError, match="already holds a recorded session"):
        record_synthetic(folder, seconds=0.5)
    assert open_session(folder).windows == session.windows
    # Nor may it overwrite a user's file that happens to share a name.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "audio.wav").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already has a file named audio.wav"):
        record_synthetic(tmp_path / "mine", seconds=0.5)
    assert (tmp_path / "mine" / "audio.wav").read_bytes() == b"precious"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_interrupted_recording_stays_readable(tmp_path, sig):
    folder = tmp_path / f"cut_{sig.name}"
    proc = start_recording_process(folder, seconds=30.0, pace=1.0)
    wait_for_windows(folder, 3, proc)
    from moodlens.realtime.sessions.reader import open_session

    live = open_session(folder)          # while it records: read as it stands, nothing repaired
    assert any("still being recorded" in note for note in live.notes) and len(live.windows) >= 3
    assert json.loads((folder / "session.json").read_text())["state"] == "recording"
    time.sleep(0.2)  # stop somewhere inside the next window
    proc.send_signal(sig)
    proc.wait(timeout=20)
    session = assert_session_consistent(folder, min_windows=3)
    if sig == signal.SIGINT:
        # Ctrl-C reaches Python: the pipeline's `finally` closes the recorder properly.
        assert session.closed_cleanly and session.notes == []
    else:
        assert not session.closed_cleanly
        assert any("not closed" in note for note in session.notes)
        assert session.info["state"] == "interrupted"   # marked on the first open after the crash
    # Still replayable: the windows come back as events in order, no waiting at speed 0.
    from moodlens.realtime.sessions.replay import replay_events

    events = list(replay_events(session, speed=0))
    assert [e.id for e in events] == [w.id for w in session.windows]


def test_torn_last_line_is_ignored_with_a_note(tmp_path):
    from moodlens.core.errors import DataError
    from moodlens.realtime.sessions.reader import open_session

    folder = tmp_path / "s"
    record_synthetic(folder, seconds=1.6, video="none")
    with open(folder / "windows.jsonl", "ab") as f:
        f.write(b'{"id": 3, "start": 5001.5, "end": 50')       # power lost mid-write
    session = open_session(folder)
    assert len(session.windows) == 3
    assert any("cut off mid-write" in note for note in session.notes)
    # A broken line in the middle is not a torn write: it is refused, naming the line.
    lines = (folder / "windows.jsonl").read_bytes().split(b"\n")
    lines[1] = b"{not json"
    (folder / "windows.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match="line 2"):
        open_session(folder)


def test_unwritable_folder_gives_a_sentence_and_the_pipeline_goes_on(tmp_path):
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    said = []
    recorder = SessionRecorder(blocker / "session", {}, RecordingOptions(), on_error=said.append)
    assert not recorder.enabled and len(said) == 1
    assert str(blocker / "session") in said[0] and "live scoring continues" in said[0]
    assert said[0].count(".") <= 3 and "\n" not in said[0]
    for kind, item in synthetic_items(1.0):          # the sink protocol keeps working, silently
        getattr(recorder, f"on_{kind}")(item)
    recorder.close()
    assert said == [recorder.error]


def test_without_a_callback_the_sentence_is_logged_and_the_cli_shows_it_as_before(tmp_path, caplog):
    import logging

    from rich.console import Console

    from moodlens.core.cli import configure_logging
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    console = Console(record=True, width=400)
    handler = configure_logging(console)
    try:
        with caplog.at_level(logging.INFO, logger="moodlens"):
            recorder = SessionRecorder(blocker / "session", {}, RecordingOptions())
    finally:
        logging.getLogger("moodlens").removeHandler(handler)
    recorder.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [recorder.error]
    assert console.export_text().strip() == f"recording: {recorder.error}"


def test_disk_full_mid_recording(tmp_path):
    """A real write error from the kernel (file size limit, EFBIG): the recorder switches itself off
    with one sentence, the process keeps scoring, and what was written stays valid."""
    import resource

    folder = tmp_path / "full"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    proc = start_recording_process(folder, seconds=4.0, pace=0.0, preexec_fn=limit_file_size)
    out, err = proc.communicate(timeout=60)
    out, err = out.decode(), err.decode()
    assert proc.returncode == 0, err[-2000:]
    assert out.count("event ") == 8           # all windows were delivered; scoring went on
    assert "pipeline finished" in out
    assert "Recording to" in err and "File too large" in err and "live scoring continues" in err
    from moodlens.realtime.sessions.reader import open_session

    session = open_session(folder)
    assert session.info["state"] == "failed" and "File too large" in session.info["error"]
    assert 1 <= len(session.windows) < 8
    assert session.audio_duration >= session.windows[-1].end - 1e-3
    assert any("stopped early" in note for note in session.notes)


def test_dropped_audio_chunks_become_silence_so_times_still_match(tmp_path):
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.core.types import AudioChunk

    recorder = SessionRecorder(tmp_path / "gaps", {}, RecordingOptions(video="none"))
    rng = np.random.default_rng(1)
    chunks = []
    for i in range(40):
        t = 100.0 + i * CHUNK / 16000 + rng.uniform(-0.004, 0.004)   # capture-time jitter
        if 10 <= i < 20:
            continue                                                  # dropped upstream (320 ms)
        chunk = AudioChunk(t, np.full(CHUNK, 0.01 * (i + 1), np.float32))
        chunks.append((i, chunk))
        recorder.on_audio(chunk)
    recorder.close()
    session = open_session(tmp_path / "gaps")
    assert recorder.stats.audio_gap_samples > 0
    assert session.audio_duration == pytest.approx(40 * CHUNK / 16000, abs=0.01)
    for i in (0, 9, 20, 39):   # each chunk sits at its capture time (within the jitter)
        mid = i * CHUNK / 16000 + CHUNK / 32000
        assert session.read_audio(mid, mid + 0.001)[0] == pytest.approx(0.01 * (i + 1), abs=2e-4)
    assert np.abs(session.read_audio(0.4, 0.6)).max() == 0.0         # the gap is silence


def test_pcm16_audio_is_stored_bit_exactly(tmp_path):
    """Audio that arrived as PCM-16 (a WAV file, a microphone) is stored and read back sample for sample, so a
    rescore hears exactly what the live run heard (a 1/32767 vs 1/32768 scale slip moved loud samples by one step
    and changed Whisper's transcript of a rescored session)."""
    import soundfile as sf
    from moodlens.realtime.capture.media import MediaFileSource
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder

    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32768, 16000, dtype=np.int64).astype(np.int16)
    pcm[:4] = [-32768, 32767, 16385, -16385]
    wav = tmp_path / "in.wav"
    sf.write(str(wav), pcm, 16000, subtype="PCM_16")
    recorder = SessionRecorder(tmp_path / "s", {}, RecordingOptions(video="none"))
    source = MediaFileSource(wav, pace="fast", origin=0.0)
    heard = []
    for item in source:
        if hasattr(item, "samples"):
            heard.append(np.asarray(item.samples, np.float32))
            recorder.on_audio(item)
    recorder.close()
    heard = np.concatenate(heard)
    stored, _ = sf.read(str(open_session(tmp_path / "s").audio_path), dtype="int16")
    assert np.array_equal(stored[:len(pcm)], pcm)
    back = open_session(tmp_path / "s").read_audio(0.0, len(pcm) / 16000)
    assert np.array_equal(back[:len(heard)], heard)


def test_face_features_handed_over_by_the_pipeline(tmp_path):
    """Privacy mode without a second face tracker: the pipeline's own features go to faces.bin."""
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.core.types import FaceFeatures

    recorder = SessionRecorder(tmp_path / "handed", {}, RecordingOptions(video="faces", faces_from_pipeline=True))
    rng = np.random.default_rng(3)
    given = []
    for kind, item in synthetic_items(1.1):
        getattr(recorder, f"on_{kind}")(item)
        if kind == "frame":      # the pipeline's vision stage: a face on every other frame
            present = item.index % 2 == 0
            face = FaceFeatures(item.t, rng.standard_normal(64).astype(np.float32) if present else None, present)
            given.append(face)
            recorder.on_face(face)
    recorder.close()
    faces = open_session(tmp_path / "handed").read_faces()
    assert recorder.error is None and len(faces) == len(given) == 11
    for got, sent in zip(faces, given):
        assert got.face_present == sent.face_present and got.t == pytest.approx(sent.t - 5000.0)
        if sent.face_present:
            np.testing.assert_array_equal(got.values, sent.values)
    assert not (tmp_path / "handed" / "video.mp4").exists()


if __name__ == "__main__":
    # Child process for the interruption tests: python tests/test_recording.py record DIR SECONDS PACE
    sys.path.insert(0, str(REPO))
    _, command, folder, seconds, pace = sys.argv
    recorder, events = record_synthetic(Path(folder), float(seconds), float(pace))
    print(f"pipeline finished with {events} events", flush=True)
