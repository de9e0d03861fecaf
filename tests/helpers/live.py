"""The shipped scorer and transcriber as the commands build them, for the tests that run the whole pipeline."""

from __future__ import annotations

import pytest


def shipped_scorer():
    """The shipped default weights when they exist, else an untrained model of the zoo (signs not checked)."""
    from moodlens.models.checkpoint import default_checkpoint_path
    from moodlens.realtime.scoring.scorer import Scorer

    if default_checkpoint_path().exists():
        return Scorer("default", backend="eager")
    from moodlens.models import build_model

    return Scorer.from_model(build_model("hcrl_mfd").eval(), None, backend="eager")


def live_transcriber(scorer):
    """The shipped live ASR options, Whisper's encoder input following the checkpoint (as build_pipeline does)."""
    from moodlens.realtime.app.live_config import load_live_config
    from moodlens.realtime.engine.build import live_featurizer_config
    from moodlens.realtime.perception.asr import Transcriber

    return Transcriber(load_live_config().asr.for_features(live_featurizer_config(scorer, None)))


# Module-scoped fixtures for the pipeline tests: a test module imports them by name.
@pytest.fixture(scope="module")
def scorer():
    return shipped_scorer()


@pytest.fixture(scope="module")
def transcriber(scorer):
    return live_transcriber(scorer)
