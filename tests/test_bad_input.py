"""Bad input across every command: one sentence, the right exit code, no traceback (issue 13).

One table, `CASES`: (command line, expected exit code, a sentence fragment the output must hold).
Placeholders in {braces} are files prepared once in `work` (crafted pickles and checkpoints
included). Every case also asserts "no traceback", and the crafted-file cases that a code-running
loader would execute assert that their payload never ran (the marker file stays absent).
Exit-code policy (docs/reliability.md): 0 ok, 1 finished but something asked for failed,
2 bad input, 130 interrupted (Ctrl-C or SIGTERM).

The microphone case runs where no microphone is (this machine); the full-disk and read-only
cases mount a small tmpfs and skip, with the reason, where mounting is not allowed.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MOODLENS = [sys.executable, "-m", "moodlens.realtime.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow   # each case starts a fresh `moodlens` process


class _RunsCode:
    """What a crafted pickle carries: a call that creates the marker file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _mmsa(label: float = 1.0, n: int = 4) -> dict:
    """A tiny dataset in the MMSA layout (text as raw_text, audio and vision frames)."""
    rng = np.random.default_rng(0)
    split = {"id": [f"c{i}" for i in range(n)], "raw_text": ["good day", "bad day", "fine", "okay"][:n],
             "audio": rng.normal(size=(n, 5, 25)).astype(np.float32), "audio_lengths": np.full(n, 5),
             "vision": rng.normal(size=(n, 5, 20)).astype(np.float32), "vision_lengths": np.full(n, 5),
             "regression_labels": np.full(n, label, np.float32)}
    return {"train": split, "valid": split, "test": split}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("bad_input")
    marker = w / "PAYLOAD_RAN"
    (w / "afile").write_text("a regular file, not a folder")
    (w / "adir").mkdir()
    (w / "ok.tsv").write_text("text\tlabel\nwhat a good day\t1.5\nawful\t-2\n")
    (w / "big.tsv").write_text("text\tlabel\nwhat a good day\t7445\n")
    (w / "text.mp4").write_text("just text, not a video")
    (w / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    (w / "corrupt.pkl").write_bytes(b"\x80\x04garbage")
    (w / "big_mmsa.pkl").write_bytes(pickle.dumps(_mmsa(label=10.0)))
    evil = _mmsa()
    evil["train"]["audio"] = _RunsCode(marker)
    (w / "evil.pkl").write_bytes(pickle.dumps(evil))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(w / "face.png", np.random.default_rng(0).random((64, 64, 3)))
    # YAML train configs: a wrong type under a flag that overrides it, and an impossible value
    (w / "bad_type.yaml").write_text("batch_size: lots\n")
    (w / "zero_bs.yaml").write_text("batch_size: 0\n")
    # a raw dataset whose every clip is missing: featurize finishes with nothing to write
    (w / "raw" / "Raw").mkdir(parents=True)
    (w / "raw" / "label.csv").write_text("video_id,clip_id,text,label,mode\nv1,1,hi,0.5,train\nv1,2,yo,-1,test\n")

    # a real one-epoch checkpoint, then broken copies of it
    subprocess.run([*MOODLENS, "train", "--model", "tecafn", "--data", "synthetic", "--epochs", "1",
                    "--out", str(w / "run"), "--quiet"], check=True, env=ENV, cwd=w, capture_output=True,
                   timeout=600)
    import torch

    good = torch.load(w / "run" / "best.pt", weights_only=True)
    nan = dict(good, state_dict={k: v * float("nan") if v.is_floating_point() else v
                                 for k, v in good["state_dict"].items()})
    torch.save(nan, w / "nan.pt")
    torch.save(dict(good, model_name="dlf"), w / "wrongmodel.pt")
    key = next(k for k, v in good["state_dict"].items() if v.ndim == 2)
    torch.save(dict(good, state_dict={**good["state_dict"], key: torch.zeros(3, 3)}), w / "shape.pt")
    # --resume states: corrupt, missing keys, and one that would run code under weights_only=False
    for kind in ("corrupt", "nokeys", "evil"):
        (w / f"rs_{kind}" / "seed_1111").mkdir(parents=True)
    (w / "rs_corrupt" / "seed_1111" / "last.pt").write_bytes(b"garbage")
    torch.save({"model": {}}, w / "rs_nokeys" / "seed_1111" / "last.pt")
    torch.save({"model": _RunsCode(marker)}, w / "rs_evil" / "seed_1111" / "last.pt")

    # a recorded session (synthetic stand-in for the pipeline, the real recorder)
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder
    from helpers.sessions import synthetic_items

    recorder = SessionRecorder(w / "session", {}, RecordingOptions(video="none"))
    for kind, item in synthetic_items(1.5):
        getattr(recorder, f"on_{kind}")(item)
    recorder.close()
    return w


# (command line, exit code, fragment of the one sentence). Placeholders: {w} = the work folder.
CASES = [
    # outputs are checked before any work starts
    ("featurize {w}/text.mp4 --out {w}/afile/x.pkl", 2, "'{w}/afile' is a file, not a folder"),
    ("featurize --raw {w}/raw --out {w}/afile/x.pkl", 2, "'{w}/afile' is a file, not a folder"),
    ("featurize {w}/text.mp4 --out {w}/adir", 2, "is a folder; give a file path"),
    ("featurize {w}/text.mp4 --out {w}/out.txt", 2, "must end in .pkl"),
    ("featurize {w}/text.mp4 --out /sys/moodlens-x.pkl", 2, "cannot be written"),
    ("bench --skip-model --json {w}/afile/x.json", 2, "--json '{w}/afile/x.json' cannot be written"),
    ("bench --skip-model --plot {w}/afile/p.png", 2, "--plot '{w}/afile/p.png' cannot be written"),
    ("bench --skip-model --json /sys/moodlens.json", 2, "cannot be written"),
    ("train --data synthetic --out {w}/afile", 2, "is a file, not a folder"),
    ("train --data synthetic --out {w}/afile/run", 2, "'{w}/afile' is a file, not a folder"),
    ("export {w}/session --out {w}/afile/o.csv", 2, "'{w}/afile' is a file, not a folder"),
    ("replay {w}/session --headless --jsonl {w}/afile/o.jsonl", 2, "--jsonl"),
    ("run {w}/face.png --headless --jsonl {w}/afile/o.jsonl", 2, "--jsonl '{w}/afile/o.jsonl' cannot be written"),
    ("run {w}/face.png --headless --record {w}/afile/rec", 2, "--record '{w}/afile/rec' cannot be written"),
    ("run {w}/face.png --headless --record {w}/afile", 2, "is a file, not a folder"),
    ("run {w}/face.png --headless --record {w}/session", 2, "already holds a recorded session"),
    ("demo --headless --record {w}/afile/rec", 2, "cannot be written"),
    # numeric flags: out of range is refused by the parser, naming the flag
    ("train --data synthetic --batch-size 0", 2, "argument --batch-size: must be a whole number of at least 1"),
    ("train --data synthetic --lr -1", 2, "argument --lr: must be a positive number"),
    ("train --data synthetic --lr nan", 2, "argument --lr: must be a finite number"),
    ("train --data synthetic --epochs 0", 2, "argument --epochs"),
    ("train --data synthetic --threads -2", 2, "argument --threads"),
    ("evaluate --data {w}/ok.tsv --batch-size 0", 2, "argument --batch-size: must be a whole number of at least 1"),
    ("featurize {w}/text.mp4 --out {w}/o.pkl --workers 0", 2, "argument --workers"),
    ("featurize {w}/text.mp4 --out {w}/o.pkl --vision-fps -3", 2, "argument --vision-fps"),
    ("bench --batch-sizes 0,8", 2, "must list whole numbers of at least 1"),
    ("bench --iterations 0", 2, "argument --iterations"),
    ("replay {w}/session --speed -1", 2, "--speed must be 0"),
    # config values: blamed on the flag or the file that gave them
    ("train --data synthetic --config {w}/bad_type.yaml --batch-size 8", 2,
     "{w}/bad_type.yaml: key 'batch_size' must be a number"),
    ("train --data synthetic --config {w}/zero_bs.yaml", 2,
     "{w}/zero_bs.yaml: key 'batch_size' must be a whole number of at least 1"),
    ("train --data synthetic --set dropout=abc", 2, "--set: key 'dropout' must be a number"),
    ("train --data synthetic --set no_such_key=1", 2, "--set: unknown key 'no_such_key'"),
    ("train --data synthetic --set dropout", 2, "--set expects KEY=VALUE"),
    # data files: crafted, corrupt, out of range
    ("train --data {w}/evil.pkl --out {w}/r_evil", 2, "refers to 'posix.system'"),
    ("evaluate --checkpoint {w}/run/best.pt --data {w}/evil.pkl", 2, "refers to 'posix.system'"),
    ("evaluate --checkpoint {w}/run/best.pt --data {w}/corrupt.pkl", 2, "as a pickle"),
    ("evaluate --checkpoint {w}/run/best.pt --data {w}/big.tsv", 2, "outside -3 to +3"),
    ("evaluate --checkpoint {w}/run/best.pt --data {w}/big_mmsa.pkl", 2, "outside -3 to +3"),
    # checkpoints: NaN weights, another model's config, wrong shapes, not a checkpoint
    ("evaluate --checkpoint {w}/nan.pt --data synthetic", 2, "Checkpoint {w}/nan.pt holds NaN or infinite weights"),
    ("evaluate --checkpoint {w}/wrongmodel.pt --data synthetic", 2, "is not a dlf config"),
    ("evaluate --checkpoint {w}/shape.pt --data synthetic", 2, "does not fit model 'tecafn': weight"),
    ("evaluate --checkpoint {w}/garbage.pt --data synthetic", 2, "cannot be read"),
    ("evaluate --checkpoint {w}/missing.pt --data synthetic", 2, "does not exist"),
    ("demo --headless --checkpoint {w}/nan.pt", 2, "Checkpoint {w}/nan.pt holds NaN or infinite weights"),
    # --resume: corrupt, missing keys, code-carrying
    ("train --model tecafn --data synthetic --epochs 1 --quiet --resume --out {w}/rs_corrupt", 2, "Cannot resume from"),
    ("train --model tecafn --data synthetic --epochs 1 --quiet --resume --out {w}/rs_nokeys", 2, "lacks key 'optimizer'"),
    ("train --model tecafn --data synthetic --epochs 1 --quiet --resume --out {w}/rs_evil", 2, "Cannot resume from"),
    # sessions and media
    ("replay {w}/afile", 2, "is a file, not a session folder"),
    ("export {w}/afile --out {w}/o.csv", 2, "is a file, not a session folder"),
    ("export {w}/nothing --out {w}/o.csv", 2, "does not exist"),
    ("export {w}/session --out {w}/o.xyz", 2, "Cannot tell the export format"),
    ("replay {w}/adir", 2, "is not a recorded session"),
    ("run {w}/face.png --headless", 2, "is a still image, not audio or video"),
    ("featurize {w}/face.png --out {w}/o.pkl", 2, "is a still image, not audio or video"),
    ("featurize {w}/missing.mp4 --out {w}/o.pkl", 2, "does not exist"),
    ("featurize {w}/text.mp4 --out {w}/o.pkl", 2, "cannot be opened"),
    ("run {w}/text.mp4 --headless", 2, "cannot be opened"),
    ("run {w}/missing.mp4 --headless", 2, "does not exist"),
    ("run {w}/face.png --headless --record-video faces", 2, "add --record DIR"),
    ("bench --skip-model --media {w}/text.mp4", 2, "cannot be opened"),
    ("bench --skip-model --skip-pipeline", 2, "leave nothing to benchmark"),
    ("live --no-camera --mic NoSuchMic --headless", 2, "--mic 'NoSuchMic'"),
    # finished, but what was asked for failed: exit 1, and nothing empty written
    ("featurize --raw {w}/raw --out {w}/allfail.pkl --no-asr --workers 1", 1, "None of the 2 clips"),
]


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*MOODLENS, *argv], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("command, code, sentence", CASES, ids=[c[0].replace("{w}/", "")[:70] for c in CASES])
def test_bad_input_gets_one_sentence_and_its_exit_code(work, command, code, sentence):
    argv = [part.format(w=work) for part in command.split()]
    result = _run(argv, work)
    output = " ".join((result.stdout + result.stderr).split())
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == code, output[-3000:]
    assert sentence.format(w=work) in output, output[-3000:]
    assert not (work / "PAYLOAD_RAN").exists(), "a crafted file ran its code"
    if code == 1:
        assert not (work / "allfail.pkl").exists()        # no empty dataset left behind


def test_a_featurize_cache_file_cannot_carry_code(tmp_path):
    """A planted cache entry (pickled object array in an npz) is refused and recomputed, never run."""
    from moodlens.train.datasets import _read_cache

    marker = tmp_path / "PAYLOAD_RAN"
    evil = np.empty(1, dtype=object)
    evil[0] = _RunsCode(marker)
    path = tmp_path / "clip.npz"
    np.savez(path, meta=np.frombuffer(b'{"format": "x"}', np.uint8), text_ids=evil)
    assert _read_cache(path, "any") is None
    (tmp_path / "old.npz").write_bytes(pickle.dumps({"format": "moodlens-featurize-clip/1", "sample": _RunsCode(marker)}))
    assert _read_cache(tmp_path / "old.npz", "any") is None
    assert not marker.exists()


@pytest.mark.shared
def test_the_restricted_unpickler_reads_real_mmsa_files(shared_data):
    from moodlens.core.safeload import safe_pickle_load

    for name in ("feature_aligned.pkl", "feature_unaligned.pkl"):
        data = safe_pickle_load(shared_data / "mmsa_fet_examples" / name)
        assert data["text"].ndim == 2 and data["text"].shape[1] == 768


@pytest.mark.e2e
def test_sigterm_ends_a_run_like_ctrl_c_and_the_session_says_so(tmp_path):
    """SIGTERM (docker stop, systemd) mid-run: exit 130, the recording closed with end_reason
    'interrupted', every window up to then readable."""
    from moodlens.core.assets import DEMO_CLIP, resolve_path
    from moodlens.realtime.sessions.reader import open_session

    folder = tmp_path / "rec"
    proc = subprocess.Popen([*MOODLENS, "run", str(resolve_path(DEMO_CLIP)), "--headless", "--pace", "realtime",
                             "--backend", "eager", "--record", str(folder), "--record-video", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (folder / "windows.jsonl").exists() or not (folder / "windows.jsonl").read_bytes().count(b"\n"):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no window recorded in 300 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    err = err.decode()
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    info = json.loads((folder / "session.json").read_text())
    assert info["state"] == "closed" and info["end_reason"] == "interrupted"
    session = open_session(folder)
    assert len(session.windows) >= 1 and any("Ctrl-C or SIGTERM" in n for n in session.notes)


def _mount_tmpfs(path: Path, size: str, read_only: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to make a real full / read-only disk "
                    f"({result.stderr.decode().strip() or 'mount failed'})")


def test_disk_full_records_why_the_session_ended_and_leaves_no_temporary(tmp_path):
    """A real ENOSPC (a 768 KiB tmpfs): what was written stays readable, session.json says
    'failed' with end_reason 'disk full' (the space reserve makes that last write fit), no .tmp left."""
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder
    from helpers.sessions import synthetic_items

    disk = tmp_path / "small"
    _mount_tmpfs(disk, "768k")
    try:
        said = []
        recorder = SessionRecorder(disk / "s", {}, RecordingOptions(video="none"), on_error=said.append)
        for kind, item in synthetic_items(60.0):     # ~1.9 MB of audio: far more than the disk holds
            getattr(recorder, f"on_{kind}")(item)
        recorder.close()
        assert len(said) == 1 and "No space left on device" in said[0]
        info = json.loads((disk / "s" / "session.json").read_text())
        assert info["state"] == "failed" and info["end_reason"] == "disk full"
        assert sorted(p.name for p in (disk / "s").iterdir() if p.name.endswith(".tmp")) == []
        assert not (disk / "s" / ".space.reserve").exists()
        session = open_session(disk / "s")
        assert len(session.windows) >= 1 and any("stopped early" in n for n in session.notes)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_read_only_mount_is_refused_before_any_work(tmp_path):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "64k", read_only=True)
    try:
        for argv, flag in ((["train", "--data", "synthetic", "--out", str(disk / "run")], "--out"),
                           (["featurize", str(tmp_path / "x.mp4"), "--out", str(disk / "x.pkl")], "--out"),
                           (["bench", "--skip-model", "--json", str(disk / "b.json")], "--json")):
            result = _run(argv, tmp_path)
            output = " ".join(result.stderr.split())
            assert result.returncode == 2 and "Traceback" not in output, output
            assert f"{flag} '{disk}" in output and "the file system is read-only" in output, output
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_resume_still_reads_a_real_training_state(work, tmp_path):
    """The control for the --resume cases: a genuine last.pt loads under weights_only=True."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(work / "run", run)
    (run / "seed_1111" / "metrics.json").unlink()      # not finished: resume from last.pt
    result = _run(["train", "--model", "tecafn", "--data", "synthetic", "--epochs", "2", "--quiet", "--resume",
                   "--out", str(run)], tmp_path)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert "resuming after epoch 1" in output


def test_evaluate_refuses_non_finite_predictions_from_finite_weights(monkeypatch, capsys):
    """Finite weights can still predict NaN (an overflow): evaluate names the checkpoint and exits 1
    instead of printing 'MAE nan' with exit 0."""
    import numpy as np

    import moodlens.train.trainer as trainer
    from moodlens.realtime.cli import main

    real = trainer.evaluate_split

    def nan_for_sample_1(model, split, *args, **kwargs):
        metrics, preds = real(model, split, *args, **kwargs)
        preds["fused"] = preds["fused"].copy()
        preds["fused"][1] = np.nan
        return metrics, preds

    monkeypatch.setattr(trainer, "evaluate_split", nan_for_sample_1)
    code = main(["evaluate", "--checkpoint", "default", "--data", "synthetic", "--batch-size", "64"])
    err = " ".join(capsys.readouterr().err.split())     # the console wraps long sentences
    assert code == 1
    assert "non-finite fused score for 1 of" in err and "default.pt" in err and "Traceback" not in err
