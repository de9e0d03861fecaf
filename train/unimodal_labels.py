"""Emotion-labelled unimodal corpora -> MMSA-FET label.csv with per-modality valence labels.

    python scripts/make_labels.py ravdess ../shared/data/ravdess_speech --out runs/data/ravdess/label.csv
    python scripts/make_labels.py faces ../shared/data/faces --out runs/data/faces/label.csv
    moodlens featurize --raw ../shared/data/ravdess_speech --labels runs/data/ravdess/label.csv --out ...

The emotion -> valence mapping is a versioned YAML (configs/valence/emotion_valence_v1.yaml, which
says where each value comes from and which categories are dropped). Columns written:
video_id, clip_id (the file is <raw>/<video_id>/<clip_id>.<ext>), text, label, label_T, label_A,
label_V (empty = unknown for that head), annotation (emotion/intensity/mapping version), mode
(train/valid/test) and group (the speaker or face subject the split is made by).

Splits never share a speaker or a face:
- RAVDESS by actor: 01-16 train, 17-18 valid, 19-22 test (the issue's probes train on 01-18).
- faces by person: the CK+ subject; for muxspace the person named in the file name
  (George_W_Bush_0012.jpg -> George_W_Bush; labels.csv's `subject` there is the contributor who
  collected the image, not the person shown), each unnamed image its own group; groups are hashed
  into 70 % train, 10 % valid, 20 % test.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from moodlens.core.errors import ConfigError, DataError

DEFAULT_VALENCE = "emotion_valence_v1"
COLUMNS = ("video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode", "group")


@dataclass
class ValenceMap:
    name: str
    base: float
    strong: float
    signs: dict[str, float | None]
    text_weight: float = 2.0
    audio_weight: float = 1.0
    vision_weight: float = 1.0
    statement_valence: float = 0.0

    def has(self, emotion: str) -> bool:
        return emotion.strip().lower() in self.signs

    def valence(self, emotion: str, intensity: str | None = None) -> float | None:
        """Valence of an emotion (None = dropped as ambiguous); KeyError for an unknown emotion."""
        sign = self.signs[emotion.strip().lower()]
        if sign is None:
            return None
        scale = self.strong if (intensity or "").strip().lower() == "strong" else self.base
        return float(sign) * scale

    def fused(self, text: float | None = None, audio: float | None = None, vision: float | None = None) -> float:
        """The fused label rule of the mapping file: weighted mean of the known valences."""
        parts = [(v, w) for v, w in ((text, self.text_weight), (audio, self.audio_weight),
                                     (vision, self.vision_weight)) if v is not None and math.isfinite(v)]
        if not parts:
            raise DataError("A fused label needs at least one known modality valence.")
        return sum(v * w for v, w in parts) / sum(w for _, w in parts)


def load_valence_map(spec: str | Path | None = None) -> ValenceMap:
    """A mapping by name (configs/valence/<name>.yaml) or path."""
    from moodlens.core.options import configs_root, read_yaml

    spec = spec or DEFAULT_VALENCE
    path = Path(spec)
    if not path.suffix:
        path = configs_root() / "valence" / f"{spec}.yaml"
    if not path.is_file():
        raise ConfigError(f"The valence mapping '{spec}' does not exist (looked for {path}).")
    values = read_yaml(path)
    try:
        rule = values.get("fused_rule", {}) or {}
        return ValenceMap(
            name=str(values.get("name", path.stem)), base=float(values["base"]), strong=float(values["strong"]),
            signs={str(k).lower(): (None if v is None else float(v)) for k, v in values["emotions"].items()},
            text_weight=float(rule.get("text_weight", 2.0)), audio_weight=float(rule.get("audio_weight", 1.0)),
            vision_weight=float(rule.get("vision_weight", 1.0)),
            statement_valence=float(rule.get("ravdess_statement_valence", 0.0)))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"The valence mapping {path} is malformed ({type(err).__name__}: {err}).") from None


@dataclass
class LabelReport:
    out: Path
    written: int = 0
    dropped: dict[str, int] = field(default_factory=dict)     # ambiguous emotion -> rows left out
    refused: list[str] = field(default_factory=list)            # one sentence per bad row
    splits: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)        # distinct speakers/subjects per split


def _read_rows(labels: Path, needed: tuple[str, ...]) -> list[dict]:
    if not labels.is_file():
        raise DataError(f"The labels file '{labels}' does not exist.")
    with labels.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"The labels file '{labels}' has no rows.")
    for column in needed:
        if column not in rows[0]:
            raise DataError(f"The labels file '{labels}' lacks the column '{column}'.")
    return rows


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _write(rows: list[dict], out: Path, report: LabelReport) -> LabelReport:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    report.written = len(rows)
    for row in rows:
        report.splits[row["mode"]] = report.splits.get(row["mode"], 0) + 1
    for split in report.splits:
        report.groups[split] = len({r["group"] for r in rows if r["mode"] == split})
    return report


def ravdess_split(actor: int) -> str:
    return "train" if actor <= 16 else ("valid" if actor <= 18 else "test")


def make_ravdess_labels(src: str | Path, out: str | Path, valence: ValenceMap | None = None,
                        text: str = "statement") -> LabelReport:
    """RAVDESS speech: label_A from the emotion (and intensity), label_T unknown (neutral statements),
    label by the fused rule with the statement counted as neutral. `text`: "statement" writes the
    known words (no ASR needed), "asr" leaves text empty so featurize transcribes with Whisper."""
    src, out = Path(src), Path(out)
    valence = valence or load_valence_map()
    report = LabelReport(out)
    rows = []
    for line, row in enumerate(_read_rows(src / "labels.csv", ("path", "actor", "emotion")), start=2):
        emotion, path = (row.get("emotion") or "").strip().lower(), (row.get("path") or "").strip()
        where = f"row {line} of {src / 'labels.csv'} ({path or 'no path'})"
        if not valence.has(emotion):
            report.refused.append(f"{where} has the emotion '{emotion}', which {valence.name} does not map.")
            continue
        try:
            actor = int(row["actor"])
        except ValueError:
            report.refused.append(f"{where} has the actor '{row['actor']}', not a number.")
            continue
        if not (src / path).is_file():
            report.refused.append(f"{where} names a file that does not exist.")
            continue
        y_audio = valence.valence(emotion, row.get("intensity"))
        if y_audio is None:
            report.dropped[emotion] = report.dropped.get(emotion, 0) + 1
            continue
        rel = Path(path)
        rows.append({
            "video_id": rel.parent.as_posix(), "clip_id": rel.stem,
            "text": (row.get("statement") or "").strip() if text == "statement" else "",
            "label": _fmt(valence.fused(text=valence.statement_valence, audio=y_audio)),
            "label_T": "", "label_A": _fmt(y_audio), "label_V": "",
            "annotation": f"{emotion}/{row.get('intensity') or '-'}/{valence.name}",
            "mode": ravdess_split(actor), "group": f"actor{actor:02d}",
        })
    return _write(rows, out, report)


def face_person(path: str, source: str, subject: str) -> str:
    """The person a face image shows, for subject-independent splits (see module docstring)."""
    name = Path(path).name
    if source == "ckplus48":
        return f"ck:{subject}"
    match = re.match(r"(.+?)_\d+\.(jpe?g|png)$", name, flags=re.IGNORECASE)
    if match and not name.startswith("facial-expressions"):
        return f"mux:{match.group(1)}"
    return f"mux:{name}"


def hashed_split(group: str, valid: int = 10, test: int = 20) -> str:
    bucket = int(hashlib.sha1(group.encode()).hexdigest(), 16) % 100
    return "test" if bucket >= 100 - test else ("valid" if bucket >= 100 - test - valid else "train")


def make_faces_labels(src: str | Path, out: str | Path, valence: ValenceMap | None = None) -> LabelReport:
    """Face stills: label_V from the emotion, label = label_V, text and audio unknown (absent)."""
    src, out = Path(src), Path(out)
    valence = valence or load_valence_map()
    report = LabelReport(out)
    rows = []
    for line, row in enumerate(_read_rows(src / "labels.csv", ("path", "emotion")), start=2):
        emotion, path = (row.get("emotion") or "").strip().lower(), (row.get("path") or "").strip()
        where = f"row {line} of {src / 'labels.csv'} ({path or 'no path'})"
        if not valence.has(emotion):
            report.refused.append(f"{where} has the emotion '{emotion}', which {valence.name} does not map.")
            continue
        if not (src / path).is_file():
            report.refused.append(f"{where} names a file that does not exist.")
            continue
        y_vision = valence.valence(emotion)
        if y_vision is None:
            report.dropped[emotion] = report.dropped.get(emotion, 0) + 1
            continue
        group = face_person(path, (row.get("source") or "").strip(), (row.get("subject") or "").strip())
        rel = Path(path)
        rows.append({
            "video_id": rel.parent.as_posix(), "clip_id": rel.stem, "text": "",
            "label": _fmt(valence.fused(vision=y_vision)), "label_T": "", "label_A": "", "label_V": _fmt(y_vision),
            "annotation": f"{emotion}/{row.get('source') or '-'}/{valence.name}",
            "mode": hashed_split(group), "group": group,
        })
    return _write(rows, out, report)


MAKERS = {"ravdess": make_ravdess_labels, "faces": make_faces_labels}
