"""scripts/gpu_check.sh: no GPU is lent to this project's CPU machines, so its CPU dry-run path is
what is tested here; the CUDA path runs the same code with device "cuda"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_dry_run_writes_one_json_and_names_what_it_skipped(tmp_path, tts):
    out = tmp_path / "gpu.json"
    speech = tts("I really love this wonderful day, it makes me happy.")
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--media", str(speech), str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["device"] == "cpu" and report["errors"] == []
    measured = {b["backend"]: b for b in report["backends"] if "latency_ms" in b}
    assert {"eager", "onnxruntime"} <= set(measured)
    assert measured["eager"]["latency_ms"]["p50"] > 0
    # Every piece not run is one sentence naming it (torch-tensorrt cannot be installed here).
    assert any(s.startswith("tensorrt:") for s in report["skipped"])
    assert all(s.endswith(".") for s in report["skipped"])
    paces = [p["pace"] for p in report["pipeline"]]
    assert paces == ["realtime", "fast"]
    share = {p["pace"]: p["whisper_share"] for p in report["pipeline"]}
    for p in report["pipeline"]:
        assert p["speech_end_to_score_ms"]["p95"] > 0 and 0.0 <= p["whisper_share"] <= 1.0
    # Read ahead of the clock, windows queue for Whisper; paced, the speculative transcript is usually
    # ready before the VAD confirms the end (share 0 is a real outcome there, not a missing number).
    assert share["fast"] > 0.0
    assert report["summary"]["speech_end_to_score_p95_ms_realtime"] > 0
    assert report["wall_s"] < 480


def test_without_cuda_and_without_dry_run_it_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real check would run")
    out = tmp_path / "gpu.json"
    run = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), str(out)], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert run.returncode == 2
    assert "torch sees no CUDA device" in run.stdout
    assert json.loads(out.read_text())["skipped"][0].startswith("Nothing was measured")
