"""`moodlens run`, `demo` and `live` as a user runs them: subprocesses, exit codes, what is printed."""

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
import soundfile as sf

from moodlens.realtime.engine.events import check_event_dict

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
MOODLENS = [sys.executable, "-m", "moodlens.realtime.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}


def moodlens(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process (errors come before any heavy loading); (code, stdout, stderr)."""
    from moodlens.realtime.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:          # argparse --help
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_sentence(stderr: str) -> str:
    text = " ".join(stderr.split())
    assert "Traceback" not in stderr, stderr
    assert text.startswith("error: "), stderr
    return text


def test_corrupt_file_is_one_clear_sentence_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    code, out, err = moodlens(capsys, "run", bad, "--headless")
    assert code == 2
    text = one_sentence(err)
    assert "broken.mp4" in text and "corrupt" in text
    assert out == ""


def test_corrupt_file_through_the_installed_command(tmp_path):
    # The same through a real process: exit status 2 and no traceback.
    bad = tmp_path / "broken.mkv"
    bad.write_bytes(os.urandom(3000))
    result = subprocess.run([*MOODLENS, "run", str(bad), "--headless"], capture_output=True, text=True,
                            timeout=120, env=ENV, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "broken.mkv" in result.stderr and result.stdout == ""


def test_missing_file_and_bad_config_key(tmp_path, capsys):
    code, _, err = moodlens(capsys, "run", tmp_path / "nope.wav", "--headless")
    assert code == 2 and "nope.wav" in one_sentence(err)
    config = tmp_path / "live.yaml"
    config.write_text("vad:\n  min_silence: 0.3\n")
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(16000, np.float32), 16000)
    code, _, err = moodlens(capsys, "run", wav, "--headless", "--config", config)
    assert code == 2
    text = one_sentence(err)
    assert "live.yaml" in text and "'min_silence'" in text
    config.write_text("engin:\n  backend: eager\n")
    code, _, err = moodlens(capsys, "demo", "--headless", "--config", config)
    assert code == 2 and "unknown section 'engin'" in one_sentence(err)
    config.write_text("engine:\n  backend: tensorrtx\n")
    code, _, err = moodlens(capsys, "demo", "--headless", "--config", config)
    assert code == 2 and "tensorrtx" in one_sentence(err)


def test_live_without_camera_or_microphone_says_so_and_exits_2(capsys):
    # This machine has neither a camera nor a microphone (CI machines neither).
    code, _, err = moodlens(capsys, "live", "--camera", "0")
    assert code == 2
    text = one_sentence(err)
    assert "camera" in text and "microphone" in text and "moodlens run FILE" in text
    assert text.count(". ") == 0    # one sentence


def test_help_lists_the_options(capsys):
    for command, options in (("run", ["--pace", "--headless", "--jsonl", "--record", "--backend", "--config"]),
                             ("demo", ["--headless", "--jsonl", "--checkpoint"]),
                             ("live", ["--camera", "--mic", "--record", "--backend", "--checkpoint"])):
        code, out, _ = moodlens(capsys, command, "--help")
        assert code == 0
        for option in options:
            assert option in out, (command, option)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The shipped default weights when present, else an untrained HCRL-MFD checkpoint written here."""
    from moodlens.models.checkpoint import default_checkpoint_path, save_checkpoint

    if default_checkpoint_path().exists():
        return "default"
    from moodlens.models import build_model
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(path, build_model("hcrl_mfd"), FeaturizerConfig().to_dict(), metrics={})
    return str(path)


def test_ctrl_c_during_a_paced_run_exits_cleanly_within_a_second(tts, tmp_path, checkpoint):
    # Speech, 1 s pause, speech...: paced at real time the run lasts ~15 s; Ctrl-C comes after the first window.
    parts = []
    for text in ["I love this wonderful day.", "This is terrible and I hate it."] * 2:
        audio, _ = sf.read(str(tts(text)), dtype="float32")
        parts += [audio, np.zeros(16000, np.float32)]
    wav = tmp_path / "talk.wav"
    sf.write(str(wav), np.concatenate(parts), 16000)
    out = tmp_path / "events.jsonl"
    proc = subprocess.Popen([*MOODLENS, "run", str(wav), "--pace", "realtime", "--headless", "--jsonl", str(out),
                             "--backend", "eager", "--checkpoint", checkpoint, "--record", str(tmp_path / "session")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        assert out.exists(), "no window was scored before the deadline"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 1.0, f"took {took:.2f} s to stop"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped" in stderr
    lines = out.read_text().splitlines()
    assert 1 <= len(lines) < 4
    for line in lines:
        event = json.loads(line)
        assert event["present"] == {"text": True, "audio": True, "vision": False}
        assert isinstance(event["scores"]["text"], float) and event["scores"]["vision"] is None
        # Audio was perceived; a checkpoint trained without audio (the shipped text-only default) scores it
        # null. events.check_event_dict still demands a number for every present modality, so the schema
        # is checked on the scored view (presence = has a score) until that check learns about it.
        scored = {m: event["scores"][m] is not None for m in ("text", "audio", "vision")}
        check_event_dict({**event, "present": scored})
        assert event["backend"] == "eager"
    assert stdout == ""                                       # --jsonl went to the file
    # The recorder (a sink) was closed cleanly too: its session lists the scored windows.
    session = json.loads((tmp_path / "session" / "session.json").read_text())
    assert session["state"] == "closed"
    assert len((tmp_path / "session" / "windows.jsonl").read_text().splitlines()) == len(lines)


def test_live_config_layers_a_user_file_over_the_defaults(tmp_path):
    from moodlens.core.errors import ConfigError
    from moodlens.realtime.app.live_config import load_live_config

    default = load_live_config()
    assert default.engine.checkpoint == "default" and default.engine.backend == "auto"
    assert default.vad.min_silence_s == 0.4 and default.asr.language == "en" and default.features == {}
    user = tmp_path / "mine.yaml"
    user.write_text("vad:\n  threshold: 0.7\nasr:\n  beam_size: 2\nengine:\n  backend: eager\n"
                    "features:\n  vision_fps: 10\npipeline:\n  asr_queue_size: 3\n")
    config = load_live_config(user)
    assert config.vad.threshold == 0.7 and config.vad.neg_threshold == pytest.approx(0.55)  # follows threshold
    assert config.vad.min_silence_s == 0.4                       # untouched keys keep the defaults
    assert config.asr.beam_size == 2 and config.engine.backend == "eager"
    assert config.features == {"vision_fps": 10} and config.pipeline.asr_queue_size == 3
    assert config.to_dict()["vad"]["threshold"] == 0.7
    assert default.recording.video == "mp4" and default.to_dict()["recording"]["fsync"] is True
    for text, needle in (("features:\n  vision_fsp: 10\n", "'vision_fsp'"),
                         ("pipeline:\n  asr_queue_size: 0\n", "asr_queue_size"),
                         ("asr:\n  beam_size: many\n", "beam_size"),
                         ("vad: 3\n", "section 'vad'"),
                         ("recording:\n  video: mkv\n", "mkv")):
        user.write_text(text)
        with pytest.raises(ConfigError, match=needle) as err:
            load_live_config(user)
        assert "mine.yaml" in str(err.value)


def test_a_feature_override_that_changes_values_is_refused(tmp_path):
    from moodlens.models import build_model
    from moodlens.core.errors import ConfigError
    from moodlens.realtime.engine.build import build_pipeline
    from moodlens.realtime.scoring.scorer import Scorer
    from moodlens.realtime.capture.media import MediaFileSource

    scorer = Scorer.from_model(build_model("hcrl_mfd").eval(), None, backend="eager", quiet=True)
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(8000, np.float32), 16000)
    with pytest.raises(ConfigError, match="audio_n_mels"):
        build_pipeline(MediaFileSource(wav), scorer, features={"audio_n_mels": 64}, transcriber=object())
    # An override that keeps the values (here: the same rate spelled as an int) is accepted.
    pipe = build_pipeline(MediaFileSource(wav), scorer, features={"vision_fps": int(scorer.featurizer_config.vision_fps)},
                    transcriber=object())
    assert pipe.featurizer_config.vision_fps == scorer.featurizer_config.vision_fps
    pipe.stop()


def test_record_video_needs_record_and_is_listed_in_help(capsys):
    for command in ("run", "live", "demo"):
        code, out, _ = moodlens(capsys, command, "--help")
        assert code == 0 and "--record-video" in out and "faces" in out
    code, _, err = moodlens(capsys, "demo", "--headless", "--record-video", "faces")
    assert code == 2 and "--record DIR" in one_sentence(err)
    code, _, err = moodlens(capsys, "demo", "--headless", "--record-video", "mkv")
    assert code == 2 and "mkv" in err                              # argparse names the bad choice


def test_record_video_faces_keeps_the_pipelines_face_features_and_no_video(tmp_path, checkpoint):
    # Privacy mode over the bundled clip (a face throughout): no video file, face features only, and
    # they are the pipeline's own (faces_from_pipeline), so MediaPipe does not run a second time.
    folder = tmp_path / "private"
    result = subprocess.run([*MOODLENS, "demo", "--headless", "--pace", "fast", "--backend", "eager",
                             "--checkpoint", checkpoint, "--record", str(folder), "--record-video", "faces"],
                            capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and f"recorded the session in {folder}" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) >= 3 and all(e["present"]["vision"] for e in events)
    from moodlens.realtime.sessions.reader import open_session

    session = open_session(folder)
    assert session.closed_cleanly and len(session.windows) == len(events)
    assert session.video_path is None and not (folder / "video.mp4").exists()
    recording = session.info["config"]["recording"]
    assert recording["video"] == "faces" and recording["faces_from_pipeline"] is True
    faces = session.read_faces()
    # The pipeline tracks faces at the featurizer's vision fps: about that many per second of clip.
    fps = session.featurizer_config["vision_fps"]
    assert 0.5 * fps * events[-1]["end"] <= len(faces) <= 1.5 * fps * 27.0
    assert sum(f.face_present for f in faces) >= 0.8 * len(faces)


def test_a_recorder_that_fills_the_disk_says_so_once_after_the_run_and_scoring_goes_on(tts, tmp_path, checkpoint):
    import resource

    parts = []
    for text in ["I love this wonderful day.", "This is terrible and I hate it.", "The meeting is on Tuesday."]:
        audio, _ = sf.read(str(tts(text)), dtype="float32")
        parts += [audio, np.zeros(16000, np.float32)]
    wav = tmp_path / "talk.wav"
    sf.write(str(wav), np.concatenate(parts), 16000)
    folder = tmp_path / "full"

    def limit_file_size():             # a disk that fills after ~60 kB (about 2 s of recorded audio)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    result = subprocess.run([*MOODLENS, "run", str(wav), "--headless", "--pace", "fast", "--backend", "eager",
                             "--checkpoint", checkpoint, "--record", str(folder)],
                            capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO,
                            preexec_fn=limit_file_size)
    # exit policy: scoring finished, but the recording asked for did not -> 1 (docs/reliability.md)
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 3                        # every sentence was still scored
    err = " ".join(result.stderr.split())
    assert err.count("Recording to") == 1, result.stderr              # once, not per failed write
    assert "File too large" in err and "live scoring continues" in err
    assert err.index("windows in") < err.index("Recording to")         # after the run's totals
    assert "recorded the session in" not in err


def test_a_folder_that_cannot_be_created_fails_quietly_until_the_run_reports_it(tmp_path, capsys):
    from types import SimpleNamespace

    from moodlens.realtime.app.session import make_recorder
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.app.live_config import load_live_config

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    pipeline = SimpleNamespace(featurizer_config=FeaturizerConfig(), backend_name="eager", device="cpu")
    recorder = make_recorder(blocker / "session", load_live_config(), None, pipeline, {}, realtime=True,
                             video="none", on_error=lambda sentence: None)
    try:
        assert recorder.error and str(blocker / "session") in recorder.error
        assert "live scoring continues" in recorder.error
        assert recorder.options.video == "none"
        assert capsys.readouterr().err == ""       # nothing printed under a dashboard
    finally:
        recorder.close()
