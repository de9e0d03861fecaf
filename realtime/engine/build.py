"""Building a pipeline from options: the windower, Whisper, the featurizer and the face tracker the
source needs, then `Pipeline` with them. Building and running are separate: the pipeline itself
is handed built components (tests and the benchmark hand it their own).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from moodlens.realtime.capture import Source
from moodlens.realtime.engine import Sink
from moodlens.realtime.engine.pipeline import Pipeline, PipelineOptions
from moodlens.realtime.perception import FaceTracker
from moodlens.realtime.scoring import BatchScorer


def live_featurizer_config(scorer: BatchScorer, overrides: dict[str, Any] | None):
    """The scorer's featurizer config with the live config's `features` overrides applied; an
    override that changes what the checkpoint was trained on is refused by the compatibility check."""
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    base = getattr(scorer, "featurizer_config", None)
    if base is None:
        base = FeaturizerConfig()
    elif isinstance(base, dict):
        base = FeaturizerConfig.from_dict(base, source="featurizer config of the scoring checkpoint")
    if not overrides:
        return base
    live = dataclasses.replace(base, **overrides)
    base.check_compatible(live, where="the live config's features section")
    return live


def build_pipeline(source: Source, scorer: BatchScorer, options: PipelineOptions | None = None, *,
                   sinks: Iterable[Sink] = (), vad=None, asr=None, features: dict[str, Any] | None = None,
                   transcriber=None, featurizer=None, vision: FaceTracker | None = None,
                   windower=None) -> Pipeline:
    """A pipeline for `source` scored by `scorer`. `vad`, `asr`: VadOptions / AsrOptions;
    `features`: FeaturizerConfig overrides (a dict). `transcriber`, `featurizer`, `vision` and
    `windower` may be given ready-made (shared between runs); the rest is built here."""
    config = live_featurizer_config(scorer, features)
    if windower is None and source.has_audio:
        from moodlens.realtime.perception.vad import UtteranceWindower, VadOptions

        windower = UtteranceWindower(vad or VadOptions())
    if transcriber is None and source.has_audio:
        from moodlens.realtime.perception.asr import AsrOptions, Transcriber

        # Whisper's encoder input follows the checkpoint's featurizer config (whisper_input)
        transcriber = Transcriber((asr or AsrOptions()).for_features(config))
    if featurizer is None:
        from moodlens.realtime.perception.features.featurizer import Featurizer

        featurizer = Featurizer(config, transcriber=transcriber)
    owns_vision = vision is None and source.has_video
    if owns_vision:
        from moodlens.realtime.perception.features.vision import VisionFeaturizer

        vision = VisionFeaturizer(config)
    return Pipeline(source, scorer, options, featurizer=featurizer, windower=windower, transcriber=transcriber,
                    vision=vision, sinks=sinks, owns_vision=owns_vision)
