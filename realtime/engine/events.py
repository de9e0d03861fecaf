"""The per-window event the live pipeline emits: what the dashboard shows, `--jsonl` writes and
sinks (the session recorder) receive.

JSONL schema (one object per line, `WindowEvent.to_dict()`):
    {"id": int, "start": s, "end": s, "text": str,
     "scores":  {"text": x|null, "audio": x|null, "vision": x|null, "fused": x},
     "present": {"text": bool, "audio": bool, "vision": bool},
     "latency_ms": {"asr": ms, "features": ms, "model": ms, "total": ms},
     "backend": str, "interim": bool}
A per-modality score is null when that modality is absent; "fused" is always a number.
"latency_ms.total" runs from the moment the window closed (end of utterance detected) to the
score being ready.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from moodlens.core.errors import DataError
from moodlens.core.schema import MODALITIES

LATENCY_KEYS = ("asr", "features", "model", "total")
EVENT_KEYS = ("id", "start", "end", "text", "scores", "present", "latency_ms", "backend", "interim")


@dataclass
class WindowEvent:
    id: int
    start: float                  # seconds on the session clock
    end: float
    text: str
    fused: float                  # always a number
    text_score: float | None = None
    audio_score: float | None = None
    vision_score: float | None = None
    present: dict[str, bool] = field(default_factory=lambda: {m: False for m in MODALITIES})
    latency_ms: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in LATENCY_KEYS})
    backend: str = ""
    interim: bool = False
    merged: int = 1               # how many closed windows were merged into this one (>1 under load)

    @property
    def scores(self) -> dict[str, float | None]:
        return {"text": self.text_score, "audio": self.audio_score, "vision": self.vision_score,
                "fused": self.fused}

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        def num(x: float | None, digits: int = 4) -> float | None:
            return None if x is None else round(float(x), digits)

        return {
            "id": int(self.id),
            "start": num(self.start, 3),
            "end": num(self.end, 3),
            "text": self.text,
            "scores": {"text": num(self.text_score), "audio": num(self.audio_score),
                       "vision": num(self.vision_score), "fused": num(self.fused)},
            "present": {m: bool(self.present.get(m, False)) for m in MODALITIES},
            "latency_ms": {k: num(self.latency_ms.get(k, 0.0), 1) for k in LATENCY_KEYS},
            "backend": self.backend,
            "interim": bool(self.interim),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowEvent":
        check_event_dict(d)
        scores = d["scores"]
        return cls(id=int(d["id"]), start=float(d["start"]), end=float(d["end"]), text=d["text"],
                   fused=float(scores["fused"]), text_score=scores["text"], audio_score=scores["audio"],
                   vision_score=scores["vision"], present=dict(d["present"]),
                   latency_ms={k: float(v) for k, v in d["latency_ms"].items()},
                   backend=d.get("backend", ""), interim=bool(d.get("interim", False)))


def check_event_dict(d: dict[str, Any], where: str = "event") -> None:
    """Raise DataError when `d` does not follow the JSONL schema (used by tests and readers)."""
    missing = [k for k in EVENT_KEYS if k not in d]
    if missing:
        raise DataError(f"{where} lacks the key '{missing[0]}'.")
    scores, present, latency = d["scores"], d["present"], d["latency_ms"]
    if set(scores) != {*MODALITIES, "fused"}:
        raise DataError(f"{where} has scores keys {sorted(scores)}, expected text, audio, vision, fused.")
    if set(present) != set(MODALITIES):
        raise DataError(f"{where} has present keys {sorted(present)}, expected text, audio, vision.")
    if set(latency) != set(LATENCY_KEYS):
        raise DataError(f"{where} has latency_ms keys {sorted(latency)}, expected {', '.join(LATENCY_KEYS)}.")
    fused = scores["fused"]
    if not isinstance(fused, (int, float)) or isinstance(fused, bool) or not math.isfinite(fused):
        raise DataError(f"{where} has a fused score {fused!r} that is not a finite number.")
    for m in MODALITIES:
        if not isinstance(present[m], bool):
            raise DataError(f"{where} has present.{m}={present[m]!r}, expected true or false.")
        score = scores[m]
        if not present[m] and score is not None:
            raise DataError(f"{where} has a {m} score although {m} is absent (it must be null).")
        # A present modality may still score null: its branch was never trained in this checkpoint.
        if present[m] and score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool)
                                                 or not math.isfinite(score)):
            raise DataError(f"{where} has {m} present but its score is {score!r}, not a number or null.")
    for k in LATENCY_KEYS:
        if not isinstance(latency[k], (int, float)) or latency[k] < 0:
            raise DataError(f"{where} has latency_ms.{k}={latency[k]!r}, expected a number >= 0.")
    if not d["end"] >= d["start"]:
        raise DataError(f"{where} ends ({d['end']}) before it starts ({d['start']}).")


class JsonlSink:
    """Pipeline sink that writes one event per line (flushed, so `tail -f` works)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        except OSError as err:
            raise DataError(f"Cannot write the JSONL file {self.path}: {err.strerror}.") from None

    def on_audio(self, chunk) -> None:
        pass

    def on_frame(self, frame) -> None:
        pass

    def on_event(self, event: WindowEvent) -> None:
        if self._file is not None:
            self._file.write(event.to_json() + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | Path) -> list[WindowEvent]:
    events = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {n} is not valid JSON.") from None
            check_event_dict(d, f"{path} line {n}")
            events.append(WindowEvent.from_dict(d))
    return events
