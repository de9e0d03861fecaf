"""Recorded sessions + annotated labels -> training data.

    moodlens export SESSION_DIR --format csv --out labels.csv   # fill the `label` column (-3..+3)
    moodlens train --model hcrl_mfd --data SESSION_DIR --labels labels.csv

Each labelled window is featurized again from what was recorded, with the session's own
featurizer config (the config the live model used): its transcript as recognized live, its span of
the recorded audio, and the faces of its span (MediaPipe over the recorded video at the config's
rate, or the recorded face features of a privacy-mode session). Several sessions combine: pass
several folders (or a folder of session folders) and one labels CSV whose `session` column names
the session of each row (`moodlens export` writes it; concatenate the exported files).

Rows with an empty label are skipped (not annotated). A label that is not a number, lies outside
-3..+3, or names an unknown session or window id is refused with one sentence naming its row
(spreadsheet numbering: the header is row 1). An optional `split` column (train/valid/test) fixes
a row's split; the others are split at random (seeded) by `valid_fraction` / `test_fraction`.
To evaluate a checkpoint on every labelled window, write `test` in each row's split and run
`moodlens evaluate --checkpoint C --data SESSION_DIR --labels labels.csv`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from moodlens.core.errors import ConfigError, DataError
from moodlens.core.schema import SPLIT_ALIASES as SPLIT_NAMES
from moodlens.realtime.sessions.reader import RecordedSession, RecordedWindow, is_session_folder, open_session

LABEL_RANGE = 3.0


@dataclass
class LabelledWindow:
    session: RecordedSession
    window: RecordedWindow
    label: float
    split: str | None
    row: int


def session_folders(dirs: Iterable[str | Path]) -> list[Path]:
    """Expand the arguments: a session folder, or a folder holding session folders."""
    found: list[Path] = []
    for d in dirs:
        path = Path(d).expanduser()
        if is_session_folder(path):
            found.append(path)
        elif path.is_dir():
            children = sorted(p for p in path.iterdir() if is_session_folder(p))
            if not children:
                raise DataError(f"{path} is neither a recorded session nor a folder of sessions "
                                f"(no session.json in it or in its subfolders).")
            found.extend(children)
        else:
            raise DataError(f"The session folder {path} does not exist.")
    if not found:
        raise DataError("No session folders were given.")
    return found


def read_labels(path: str | Path, sessions: list[RecordedSession]) -> list[LabelledWindow]:
    """Parse the labels CSV against the sessions' windows (see the module docstring for the rules)."""
    path = Path(path).expanduser()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            text = f.read()
        # Spreadsheets in some locales save with ';' (or tabs): take whichever the header uses.
        first_line = text.split("\n", 1)[0]
        delimiter = max(",;\t", key=first_line.count)
        rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    except FileNotFoundError:
        raise DataError(f"The labels file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"Cannot read the labels file {path}: {err}.") from None
    if not rows:
        raise DataError(f"The labels file {path} is empty.")
    header = [h.strip().lower() for h in rows[0]]
    for needed in ("id", "label"):
        if needed not in header:
            raise DataError(f"The labels file {path} needs a header with columns 'id' and 'label' "
                            f"(as `moodlens export --format csv` writes), got {', '.join(rows[0]) or 'nothing'}.")
    col = {name: header.index(name) for name in ("id", "label", "session", "split") if name in header}

    by_name: dict[str, RecordedSession] = {}
    for s in sessions:
        for key in {s.name, str(s.info.get("session_id") or "")} - {""}:
            if key in by_name and by_name[key] is not s:
                raise DataError(f"Two of the given sessions are both named '{key}' ({by_name[key].folder} and "
                                f"{s.folder}); rename one folder so the labels can tell them apart.")
            by_name[key] = s
    windows = {id(s): {w.id: w for w in s.windows} for s in sessions}

    out: list[LabelledWindow] = []
    seen: dict[tuple[str, int], int] = {}
    for row_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} row {row_no}"

        def cell(name: str) -> str:
            i = col.get(name)
            return row[i].strip() if i is not None and i < len(row) else ""

        raw_label = cell("label")
        if raw_label == "":
            continue  # not annotated
        try:
            label = float(raw_label)
        except ValueError:
            raise DataError(f"{where}: the label '{raw_label}' is not a number (use -3 to +3).") from None
        if not math.isfinite(label) or abs(label) > LABEL_RANGE:
            raise DataError(f"{where}: the label {raw_label} is outside -3 to +3.")
        name = cell("session")
        if name:
            session = by_name.get(name)
            if session is None:
                raise DataError(f"{where}: session '{name}' is not among the given sessions "
                                f"({', '.join(s.name for s in sessions)}).")
        elif len(sessions) == 1:
            session = sessions[0]
        else:
            raise DataError(f"{where} has no session name, and {len(sessions)} sessions were given; fill the "
                            f"'session' column (moodlens export writes it).")
        raw_id = cell("id")
        try:
            window_id = int(float(raw_id))
            if float(raw_id) != window_id:
                raise ValueError
        except ValueError:
            raise DataError(f"{where}: the window id '{raw_id}' is not a whole number.") from None
        window = windows[id(session)].get(window_id)
        if window is None:
            raise DataError(f"{where}: session {session.name} has no window with id {window_id}.")
        key = (session.name, window_id)
        if key in seen:
            raise DataError(f"{where} labels window {window_id} of session {session.name} again "
                            f"(first labelled in row {seen[key]}).")
        seen[key] = row_no
        split = cell("split").lower() or None
        if split is not None:
            if split not in SPLIT_NAMES:
                raise DataError(f"{where}: the split '{split}' is not train, valid or test.")
            split = SPLIT_NAMES[split]
        out.append(LabelledWindow(session, window, label, split, row_no))
    if not out:
        raise DataError(f"The labels file {path} labels no window: fill the 'label' column with -3 to +3.")
    return out


def assign_splits(items: list[LabelledWindow], valid_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[LabelledWindow]]:
    """Rows with a `split` keep it; the rest are shuffled (seeded) into train/valid/test."""
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ConfigError("valid_fraction and test_fraction must be in [0, 1) and sum to less than 1.")
    splits: dict[str, list[LabelledWindow]] = {"train": [], "valid": [], "test": []}
    free = [item for item in items if item.split is None]
    if free and len(free) < 3 and not any(item.split == "valid" for item in items) and valid_fraction > 0:
        raise DataError(f"Only {len(items)} labelled window(s): training needs at least 3 (one each for train, "
                        f"valid and test); label more windows.")
    for item in items:
        if item.split is not None:
            splits[item.split].append(item)
    order = np.random.default_rng(seed).permutation(len(free))
    n_valid = int(round(valid_fraction * len(free)))
    n_test = int(round(test_fraction * len(free)))
    # Training needs a validation split; evaluation needs a test split: one window each at least.
    if valid_fraction > 0 and not splits["valid"] and len(free) >= 3:
        n_valid = max(n_valid, 1)
    if test_fraction > 0 and not splits["test"] and len(free) >= 3:
        n_test = max(n_test, 1)
    for rank, i in enumerate(order):
        name = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
        splits[name].append(free[i])
    for name in splits:
        splits[name].sort(key=lambda it: (it.row))
    # No train split is fine for `moodlens evaluate` (every row pinned to test); the trainer says
    # itself that it needs train and valid.
    return {k: v for k, v in splits.items() if v}


def session_featurizer_config(sessions: list[RecordedSession], text_max_len: int | None = None):
    """The featurizer config all sessions were recorded with (they must agree)."""
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    configs = []
    for s in sessions:
        raw = s.featurizer_config
        if raw is None:
            config = FeaturizerConfig()
        else:
            config = FeaturizerConfig.from_dict(raw, source=f"featurizer config of session {s.folder}")
        configs.append(config)
    first = configs[0]
    for s, config in zip(sessions[1:], configs[1:]):
        diff = first.first_difference(config)
        if diff is not None:
            name, mine, theirs = diff
            raise ConfigError(f"Sessions {sessions[0].folder} and {s.folder} were recorded with different features "
                              f"({name} is {mine!r} and {theirs!r}), so they cannot be trained on together.")
    if text_max_len is not None and text_max_len != first.text_max_len:
        first = dataclasses.replace(first, text_max_len=int(text_max_len))
    return first


def _session_faces(session: RecordedSession, windows: list[RecordedWindow], config) -> list:
    """The session's faces over the windows' time range: recorded features, or MediaPipe over the
    recorded video (one tracker per stream, frames in time order)."""
    if session.faces_path is not None:
        return session.read_faces()
    if session.video_path is None or not windows:
        return []
    lo, hi = min(w.start for w in windows), max(w.end for w in windows)
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    vision = VisionFeaturizer(config)
    try:
        return [vision.process(frame) for frame in session.iter_frames(lo, hi) if vision.wants(frame.t)]
    finally:
        vision.close()


def featurize_windows(items: list[LabelledWindow], config, text_encoder: str | None = None,
                      show_progress: bool = True):
    """Featurizer samples for the labelled windows, in the given order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from moodlens.realtime.perception.features.featurizer import Featurizer

    featurizer = Featurizer(config, text_encoder_path=text_encoder)
    samples: dict[int, object] = {}
    by_session: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        by_session.setdefault(id(item.session), []).append(i)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        task = progress.add_task("featurizing recorded windows", total=len(items))
        for indices in by_session.values():
            session = items[indices[0]].session
            windows = [items[i].window for i in indices]
            faces = _session_faces(session, windows, featurizer.config)
            for i, w in zip(indices, windows):
                audio = session.read_audio(w.start, w.end) if session.audio_path is not None else None
                samples[i] = featurizer.span_sample(w.text, audio, faces, w.start, w.end)
                progress.advance(task)
    featurizer.close()
    return featurizer, [samples[i] for i in range(len(items))]


def load_session_dataset(dirs, labels_csv, text_encoder: str | None = None, text_max_len: int | None = None,
                         valid_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                         show_progress: bool = True):
    """Labelled windows of recorded sessions as `DatasetSplits` (train/data.py)."""
    from moodlens.train.data import DatasetSplits, Split

    if isinstance(dirs, (str, Path)):
        dirs = [dirs]
    folders = session_folders(dirs)
    sessions = [open_session(f) for f in folders]
    if labels_csv is None:
        raise DataError(f"Session folders ({folders[0]}) need a labels CSV: export one with "
                        f"`moodlens export {folders[0]} --format csv --out labels.csv`, fill its label column, "
                        f"and pass --labels labels.csv.")
    label_files = [labels_csv] if isinstance(labels_csv, (str, Path)) else list(labels_csv)
    items = [item for f in label_files for item in read_labels(f, sessions)]
    config = session_featurizer_config(sessions, text_max_len)
    featurizer, samples = featurize_windows(items, config, text_encoder, show_progress)
    index = {id(item): i for i, item in enumerate(items)}
    parts = assign_splits(items, valid_fraction, test_fraction, seed)
    splits = {}
    for name, members in parts.items():
        chosen = [samples[index[id(m)]] for m in members]
        batch = featurizer.collate(chosen)
        labels = torch.tensor([m.label for m in members], dtype=torch.float32)
        splits[name] = Split(name, batch, labels, ids=[f"{m.session.name}:{m.window.id}" for m in members],
                             raw_text=[m.window.text for m in members])
    all_present = np.stack([s.present for s in samples])
    source = ", ".join(str(f) for f in folders)
    data = DatasetSplits(source, "sessions", splits, config.audio_dim, config.vision_dim, "mosi",
                         has_audio=bool(all_present[:, 1].any()), has_vision=bool(all_present[:, 2].any()))
    # The featurizer config the features were made with, for the checkpoint (train/trainer.py).
    data.featurizer_config = config.to_dict()
    return data
