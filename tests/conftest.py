"""Shared test fixtures: the ../shared data folder, espeak-ng speech synthesis, a tiny model and backend options."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.media import silence, synthesize  # noqa: F401  (re-exported for old callers)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real MOSI transcripts, MMSA-FET pickles, face clips); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a fresh clone has no research data); this test needs it")
    return SHARED_DATA


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny three-modality model with a 1-layer BERT text encoder (helpers/models.py), one per test module."""
    from helpers.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture(scope="module")
def backend_options(tmp_path_factory):
    """The shipped backend options with an engine cache of the test module's own."""
    from moodlens.realtime.scoring import backends

    opts = backends.BackendOptions.load()
    opts.cache_dir = str(tmp_path_factory.mktemp("engine_cache"))
    return opts


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
