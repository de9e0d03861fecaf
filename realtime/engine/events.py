"""The scored-window record: the event the live pipeline emits (what the dashboard shows, `--jsonl`
writes and sinks such as the session recorder receive) and, read back, a recorded session's window
(`seq` and `recorded_t` set, times relative to the session's start). `to_dict`/`from_dict` are its
one converter to and from a JSONL line; `windows.jsonl` lines are `to_dict()` plus `seq` and `recorded_t`.

JSONL schema, version 2 (one object per line, `WindowEvent.to_dict()`; docs/sessions.md):
    {"v": 2, "id": int, "start": s, "end": s, "text": str,
     "scores":  {"text": x|null, "audio": x|null, "vision": x|null, "fused": x},
     "present": {"text": bool, "audio": bool, "vision": bool},
     "latency_ms": {"asr": ms, "features": ms, "model": ms, "total": ms,
                    and when known "speech_end", "vad", "queue", "asr_wait": ms},
     "speech_end": s|null, "ready_at": s|null,
     "backend": str, "interim": bool, "cut": bool, "speculative": bool}
A per-modality score is null when that modality is absent; "fused" is always a number.
Times are seconds on the media clock (like start/end). "speech_end": the last voiced sample the VAD
saw; "ready_at": when the score was ready; latency_ms.speech_end = their difference in ms, the
latency a speaker feels. "latency_ms.total" runs from the moment the window closed (end of
utterance detected) to the score being ready. "interim": a preview of a still-open utterance
(partial text), superseded by the later final with the same id; "cut": a final window cut at
max_utterance_s while speech went on; "speculative": the transcript came from a decode started
before the end of the utterance was confirmed.

Version 1 (no "v" key) had only the four latency keys, no speech_end/ready_at/cut/speculative, and
its "interim" meant what "cut" means now; `check_event_dict` and `from_dict` accept it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from moodlens.core.errors import DataError
from moodlens.core.schema import MODALITIES
from moodlens.realtime.engine import SinkBase

SCHEMA_VERSION = 2
LATENCY_KEYS = ("asr", "features", "model", "total")            # always present (version 1 had only these)
LATENCY_KEYS_V2 = ("speech_end", "vad", "queue", "asr_wait")    # version 2, when known
EVENT_KEYS = ("id", "start", "end", "text", "scores", "present", "latency_ms", "backend", "interim")
EVENT_KEYS_V2 = ("speech_end", "ready_at", "cut", "speculative")


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
    interim: bool = False         # a preview of an open utterance, superseded by the final with this id
    merged: int = 1               # how many closed windows were merged into this one (>1 under load)
    speech_end: float | None = None   # media clock: the last voiced sample the VAD saw
    ready_at: float | None = None     # media clock: when the score was ready
    cut: bool = False             # cut at max_utterance_s while speech went on (the next window goes on)
    speculative: bool = False     # the transcript came from a speculative decode
    # Read back from a recording: its line number and wall seconds since the recording started.
    seq: int | None = None
    recorded_t: float | None = None

    @property
    def felt_ms(self) -> float | None:
        """Speech end -> score, ms (None without a speech end)."""
        return self.latency_ms.get("speech_end")

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
            "v": SCHEMA_VERSION,
            "id": int(self.id),
            "start": num(self.start, 3),
            "end": num(self.end, 3),
            "text": self.text,
            "scores": {"text": num(self.text_score), "audio": num(self.audio_score),
                       "vision": num(self.vision_score), "fused": num(self.fused)},
            "present": {m: bool(self.present.get(m, False)) for m in MODALITIES},
            "latency_ms": {**{k: num(self.latency_ms.get(k, 0.0), 1) for k in LATENCY_KEYS},
                           **{k: num(self.latency_ms[k], 1) for k in LATENCY_KEYS_V2 if k in self.latency_ms}},
            "speech_end": num(self.speech_end, 3),
            "ready_at": num(self.ready_at, 3),
            "backend": self.backend,
            "interim": bool(self.interim),
            "cut": bool(self.cut),
            "speculative": bool(self.speculative),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "event") -> "WindowEvent":
        """The event of a JSONL line of either version (checked; `seq`/`recorded_t` when recorded)."""
        check_event_dict(d, where)
        scores = d["scores"]
        v1 = d.get("v", 1) == 1
        optional = lambda k: None if d.get(k) is None else float(d[k])  # noqa: E731
        return cls(id=int(d["id"]), start=float(d["start"]), end=float(d["end"]), text=d["text"],
                   fused=float(scores["fused"]), text_score=scores["text"], audio_score=scores["audio"],
                   vision_score=scores["vision"], present=dict(d["present"]),
                   latency_ms={k: float(v) for k, v in d["latency_ms"].items()},
                   backend=d.get("backend", ""),
                   # Version 1's "interim" was a max-length cut: a final, not a preview.
                   interim=False if v1 else bool(d.get("interim", False)),
                   cut=bool(d.get("interim", False)) if v1 else bool(d.get("cut", False)),
                   speech_end=optional("speech_end"), ready_at=optional("ready_at"),
                   speculative=bool(d.get("speculative", False)), merged=1,
                   seq=None if d.get("seq") is None else int(d["seq"]),
                   recorded_t=optional("recorded_t"))


def check_event_dict(d: dict[str, Any], where: str = "event") -> None:
    """Raise DataError when `d` does not follow the JSONL schema (used by tests and readers)."""
    version = d.get("v", 1)
    if version not in (1, SCHEMA_VERSION) or isinstance(version, bool):
        raise DataError(f"{where} has schema version {version!r}; this moodlens reads versions 1 and {SCHEMA_VERSION}.")
    missing = [k for k in (*EVENT_KEYS, *(EVENT_KEYS_V2 if version >= 2 else ())) if k not in d]
    if missing:
        raise DataError(f"{where} lacks the key '{missing[0]}'.")
    scores, present, latency = d["scores"], d["present"], d["latency_ms"]
    if set(scores) != {*MODALITIES, "fused"}:
        raise DataError(f"{where} has scores keys {sorted(scores)}, expected text, audio, vision, fused.")
    if set(present) != set(MODALITIES):
        raise DataError(f"{where} has present keys {sorted(present)}, expected text, audio, vision.")
    allowed = set(LATENCY_KEYS) | (set(LATENCY_KEYS_V2) if version >= 2 else set())
    if not set(LATENCY_KEYS) <= set(latency) <= allowed:
        raise DataError(f"{where} has latency_ms keys {sorted(latency)}, expected {', '.join(LATENCY_KEYS)}"
                        + (f" and optionally {', '.join(LATENCY_KEYS_V2)}." if version >= 2 else "."))
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
    for k in latency:
        if not isinstance(latency[k], (int, float)) or isinstance(latency[k], bool) or latency[k] < 0:
            raise DataError(f"{where} has latency_ms.{k}={latency[k]!r}, expected a number >= 0.")
    if not d["end"] >= d["start"]:
        raise DataError(f"{where} ends ({d['end']}) before it starts ({d['start']}).")
    if version >= 2:
        for k in ("interim", "cut", "speculative"):
            if not isinstance(d[k], bool):
                raise DataError(f"{where} has {k}={d[k]!r}, expected true or false.")
        times = {k: d[k] for k in ("speech_end", "ready_at")}
        for k, t in times.items():
            if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t)):
                raise DataError(f"{where} has {k}={t!r}, expected seconds or null.")
        if (times["speech_end"] is None) != (times["ready_at"] is None):
            raise DataError(f"{where} has speech_end={times['speech_end']!r} but ready_at={times['ready_at']!r}; "
                            "both are set or both are null.")
        if times["speech_end"] is not None:
            # 1 ms of slack: both are rounded to milliseconds.
            if not d["start"] - 1e-3 <= times["speech_end"] <= d["end"] + 1e-3:
                raise DataError(f"{where} has speech_end={times['speech_end']} outside its window "
                                f"{d['start']}-{d['end']} s.")
            if times["ready_at"] < times["speech_end"] - 1e-3:
                raise DataError(f"{where} is ready (ready_at={times['ready_at']}) before its speech ended "
                                f"({times['speech_end']}).")


class JsonlSink(SinkBase):
    """Pipeline sink that writes one event per line (flushed, so `tail -f` works)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        except OSError as err:
            raise DataError(f"Cannot write the JSONL file {self.path}: {err.strerror}.") from None

    def on_event(self, event: WindowEvent) -> None:
        if self._file is not None:
            self._file.write(event.to_json() + "\n")
            self._file.flush()

    def on_interim(self, event: WindowEvent) -> None:
        """Interim (preview) events go into the same file, marked `"interim": true`."""
        self.on_event(event)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | Path, interim: bool = False) -> list[WindowEvent]:
    """The events of a JSONL file (either version); interim (preview) events only with `interim=True`."""
    events = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {n} is not valid JSON.") from None
            check_event_dict(d, f"{path} line {n}")
            event = WindowEvent.from_dict(d)
            if interim or not event.interim:
                events.append(event)
    return events
