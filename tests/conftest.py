"""Shared test fixtures: the ../shared data folder and espeak-ng speech synthesis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real MOSI transcripts, MMSA-FET pickles, face clips); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a fresh clone has no research data); this test needs it")
    return SHARED_DATA


def synthesize(text: str, out_wav: Path, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Speak `text` with espeak-ng into a 16 kHz mono WAV (real English speech with known words)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed; `make setup` (or .ci/run) installs it with apt")
    raw = out_wav.with_suffix(".raw.wav")
    subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text], check=True)
    import soundfile as sf
    import librosa

    audio, sr = sf.read(str(raw), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(1)
    audio = librosa.resample(audio, orig_sr=sr, target_sr=16000)
    sf.write(str(out_wav), audio, 16000, subtype="PCM_16")
    raw.unlink()
    return out_wav


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.float32)


@pytest.fixture
def tts(tmp_path):
    """tts(text) -> Path of a 16 kHz mono WAV spoken by espeak-ng."""
    counter = iter(range(10_000))

    def make(text: str, **kw) -> Path:
        return synthesize(text, tmp_path / f"tts_{next(counter)}.wav", **kw)

    return make


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """One intra-op torch thread for the whole run: on 2 shared CPU cores it is faster and steadier
    at test shapes (and it is the live engine's default, `cpu_threads: 1`)."""
    import torch

    torch.set_num_threads(1)
