"""The scoring engine: a checkpoint, checked against the live featurizer, run on one backend.

    scorer = Scorer("default", backend="auto")       # logs which backend auto chose and why
    scorer.warmup()                                   # builds/compiles before the first window
    result = scorer.score(batch)                      # a ScoredBatch: rows, model_ms, backend
    result[0] == WindowScores(fused=1.2, text=0.9, audio=None, vision=0.3,
                              present={"text": True, "audio": False, "vision": True})

The scorer is the one place that nulls a score (an absent modality, or one the checkpoint never trained).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from moodlens.core.schema import MODALITIES
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.realtime.scoring import ScoredBatch, WindowScores
from moodlens.realtime.scoring.backends import Backend, BackendOptions, create_backend, resolve_device, typical_batch
from moodlens.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MIN_SEQ_LEN = 2   # the exported graphs' dynamic lengths start at 2 (MultimodalBatch.dynamic_shapes)


class Scorer:
    """Loads a checkpoint ("default" = the shipped weights, a path, or a LoadedCheckpoint), refuses a
    featurizer-config mismatch with the live featurizer, and scores batches on one backend.

    `featurizer_config`: the live FeaturizerConfig (or dict). When None, the live featurizer is built
    from the checkpoint's own config (validated), which is what the pipeline then uses.
    """

    def __init__(self, checkpoint: Any = "default", backend: str = "auto", device: str | None = None,
                 featurizer_config=None, options: BackendOptions | None = None, quiet: bool = False):
        from moodlens.models.checkpoint import checkpoint_trained_modalities, load_checkpoint

        loaded = checkpoint if hasattr(checkpoint, "model") and hasattr(checkpoint, "featurizer_config") \
            else load_checkpoint(checkpoint, device="cpu")
        self.checkpoint_path = str(loaded.path)
        self.model_name = loaded.model_name
        self.metrics = dict(getattr(loaded, "metrics", {}) or {})
        self.trained_modalities = tuple(checkpoint_trained_modalities(getattr(loaded, "extra", {}) or {}))
        self._setup(loaded.model, loaded.featurizer_config, featurizer_config,
                    where=f"checkpoint {loaded.path}", backend=backend, device=device, options=options,
                    quiet=quiet)

    @classmethod
    def from_model(cls, model: torch.nn.Module, featurizer_config=None, backend: str = "auto",
                   device: str | None = None, live_featurizer_config=None, options: BackendOptions | None = None,
                   quiet: bool = False) -> "Scorer":
        """A scorer for an in-memory model trained on features made with `featurizer_config`
        (None = the live featurizer's defaults)."""
        scorer = cls.__new__(cls)
        scorer.checkpoint_path = None
        scorer.model_name = getattr(model, "name", type(model).__name__)
        scorer.metrics = {}
        scorer.trained_modalities = tuple(MODALITIES)
        scorer._setup(model, featurizer_config, live_featurizer_config, where=f"model {scorer.model_name}",
                      backend=backend, device=device, options=options, quiet=quiet)
        return scorer

    # ---- set-up ------------------------------------------------------------------------------
    def _setup(self, model, trained_config, live_config, where: str, backend: str, device, options,
               quiet: bool):
        from moodlens.realtime.perception.features.config import FeaturizerConfig

        if trained_config is None:
            trained = FeaturizerConfig()
        elif isinstance(trained_config, FeaturizerConfig):
            trained = trained_config
        else:
            if isinstance(trained_config, dict) and trained_config.get("live_compatible") is False:
                raise ConfigError(f"The {where} was trained on features with audio/vision dims "
                                  f"{trained_config.get('audio_dim')}/{trained_config.get('vision_dim')} "
                                  "that the live featurizer does not compute, so it cannot score live windows.")
            trained = FeaturizerConfig.from_dict(trained_config, source=f"featurizer config of {where}")
        if live_config is not None:
            live = live_config if isinstance(live_config, FeaturizerConfig) else \
                FeaturizerConfig.from_dict(live_config, source="live featurizer config")
            live.check_compatible(trained, where=where)
        else:
            live = trained
        model_config = getattr(model, "config", None)
        for name in ("audio_dim", "vision_dim"):
            want, have = getattr(model_config, name, None), getattr(live, name)
            if want is not None and want != have:
                raise ConfigError(f"The {where} expects {name}={want} but the live featurizer computes {have}.")
        self.featurizer_config = live
        self.options = options or BackendOptions.load()
        self.device = resolve_device(device)
        self.backend: Backend = create_backend(backend, model, self.device, self.options)
        self.backend_name = self.backend.name
        self.backend_reason = self.backend.reason
        self.model = self.backend.model
        self.warmed_up = False
        if backend == "auto" and not quiet:
            log.info(self.backend_reason, extra={"style": "dim"})

    # ---- scoring -----------------------------------------------------------------------------
    def typical_batch(self, batch_size: int = 1, seconds: float | None = None, seed: int = 0) -> MultimodalBatch:
        """A batch shaped like live windows of `seconds` (default: the configured typical window)."""
        window = self.options.typical_window
        return typical_batch(self.model, batch_size, seconds or window.seconds, window,
                             audio_fps=self.featurizer_config.audio_frame_rate,
                             vision_fps=self.featurizer_config.vision_fps, seed=seed)

    def warmup(self, seconds: list[float] | None = None, repeats: int = 2) -> float:
        """Build and run the backend on the configured warm-up window lengths; returns seconds taken."""
        start = time.perf_counter()
        for s in seconds or self.options.warmup_seconds:
            batch = self.typical_batch(1, s)
            for _ in range(repeats):
                self.backend(batch)
        self.warmed_up = True
        return time.perf_counter() - start

    def predict(self, batch: MultimodalBatch) -> tuple[SentimentOutput, float]:
        """Raw model output (numpy arrays, all rows and modalities) and the model time in ms."""
        self._check_finite(batch)
        batch = self._trim_absent(self._without_untrained(batch))
        start = time.perf_counter()
        out = self.backend(batch)
        model_ms = (time.perf_counter() - start) * 1000
        return SentimentOutput(*(t.numpy() for t in out)), model_ms

    def score(self, batch: MultimodalBatch) -> ScoredBatch:
        """Per sample: the fused score (always a number) and per-modality scores (None where that
        modality is absent or untrained), with the batch's model time."""
        out, model_ms = self.predict(batch)
        present = batch.present.detach().cpu().numpy().astype(bool)
        scored = present & np.array([m in self.trained_modalities for m in MODALITIES])
        rows = []
        for i in range(batch.batch_size):
            fused = float(out.fused[i])
            if not np.isfinite(fused):
                raise DataError(f"The model gave a non-finite fused score for sample {i} of the batch.")
            # None where absent, and where the checkpoint never trained that branch (its score
            # would be noise): `present` still reports what was perceived.
            per = {m: float(getattr(out, m)[i]) if scored[i, j] else None for j, m in enumerate(MODALITIES)}
            rows.append(WindowScores(fused=fused, **per,
                                     present={m: bool(present[i, j]) for j, m in enumerate(MODALITIES)}))
        return ScoredBatch(tuple(rows), model_ms, self.backend_name)

    def _without_untrained(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Feed the model only modalities its checkpoint was trained on (a text-only checkpoint
        then scores exactly as it was evaluated, instead of mixing in random-weight branches)."""
        if len(self.trained_modalities) == len(MODALITIES):
            return batch
        keep = torch.tensor([m in self.trained_modalities for m in MODALITIES], device=batch.present.device)
        return batch.replace(present=batch.present.to(torch.bool) & keep)

    @staticmethod
    def _trim_absent(batch: MultimodalBatch) -> MultimodalBatch:
        """A modality absent from every row (no face in the window, no words) is cut to MIN_SEQ_LEN steps:
        the model zeroes an absent modality's frames and replaces its pooled features with the learned
        `absent` embedding, so its branch's output does not depend on them, and 45 masked face frames
        cost what 45 real ones do (0.6-0.7 ms CPU of a ~4 ms window, docs/benchmarks.md; tests/test_scorer.py
        checks the outputs match)."""
        present = batch.present.to(torch.bool)
        cut = {}
        for col, ids, mask in ((0, "text_ids", "text_mask"), (1, "audio", "audio_mask"), (2, "vision", "vision_mask")):
            values = getattr(batch, ids)
            if values.shape[1] > MIN_SEQ_LEN and not bool(present[:, col].any()):
                cut[ids] = values[:, :MIN_SEQ_LEN]
                cut[mask] = getattr(batch, mask)[:, :MIN_SEQ_LEN]
        return batch.replace(**cut) if cut else batch

    @staticmethod
    def _check_finite(batch: MultimodalBatch) -> None:
        for name, values, mask, col in (("audio", batch.audio, batch.audio_mask, 1),
                                        ("vision", batch.vision, batch.vision_mask, 2)):
            valid = mask.to(torch.bool) & batch.present[:, col:col + 1].to(torch.bool)
            bad = ~torch.isfinite(values).all(-1) & valid
            if bool(bad.any()):
                row, frame = (int(x) for x in bad.nonzero()[0])
                raise DataError(f"The {name} features of sample {row} hold a NaN or infinite value at frame {frame}.")

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_name, "checkpoint": self.checkpoint_path, "backend": self.backend_name,
                "trained_modalities": list(self.trained_modalities),
                "device": str(self.device), "reason": self.backend_reason, **{
                    k: v for k, v in self.backend.describe().items() if k not in ("backend", "device")}}
