"""Scoring: the Scorer (checkpoint + featurizer contract) and the backends that run the model.

`BatchScorer` is what the pipeline needs of a scorer; `scorer.Scorer` provides it
(tests/test_interfaces.py checks). Its one result type is `ScoredBatch`: one `WindowScores` per row,
where a modality's score is None when it was absent or its branch never trained. The scorer is the
only place that decides that; everything downstream (events, recordings, the dashboard) copies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol, runtime_checkable

if TYPE_CHECKING:
    from moodlens.models.batch import MultimodalBatch


@dataclass(frozen=True)
class WindowScores:
    fused: float                       # always a finite number
    text: float | None                 # None: absent, or a branch the checkpoint never trained
    audio: float | None
    vision: float | None
    present: dict[str, bool]           # what was perceived (even where the score is None)


@dataclass(frozen=True)
class ScoredBatch:
    rows: tuple[WindowScores, ...]
    model_ms: float                    # the backend's time for the batch (input checks left out)
    backend: str

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> WindowScores:
        return self.rows[i]

    def __iter__(self) -> Iterator[WindowScores]:
        return iter(self.rows)


@runtime_checkable
class BatchScorer(Protocol):
    backend_name: str                  # shown on the dashboard and written in every event
    device: Any                        # where the model runs
    featurizer_config: Any             # the FeaturizerConfig its checkpoint was trained with (checked)

    def score(self, batch: "MultimodalBatch") -> ScoredBatch: ...
