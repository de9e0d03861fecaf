"""One loader for every training source: `load_dataset(spec, **options) -> DatasetSplits`.

The spec decides the source:
- `*.pkl`: an MMSA pickle (`{train, valid, test}` each with id, raw_text, text, text_bert, audio,
  vision, audio_lengths, vision_lengths, regression_labels[_T/_A/_V]) or the same layout written by
  `moodlens featurize` (plus vision_mask / audio_mask / present and meta);
- `*.tsv` / `*.csv` or a folder of train/dev(valid)/test files: text-only transcripts `text<TAB>label`
  (audio and vision absent); a lone file with a `mode` column (MMSA label.csv's name: train / valid / test)
  holds all three splits;
- `synthetic`: a generated trimodal set whose label needs all three modalities;
- a folder with session.json (or a folder of such folders): recorded sessions, read by
  `moodlens.train.sessions.load_session_dataset` with a labels CSV.

Every split becomes one padded `MultimodalBatch` plus labels; `Split.batches()` yields mini-batches
trimmed to the longest real sequence in each. Bad data raises DataError naming file, split and key.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moodlens.models.batch import MAX_SEQ_LEN, MAX_TEXT_LEN, MultimodalBatch
from moodlens.core.schema import LIVE_AUDIO_DIM, LIVE_VISION_DIM
from moodlens.core.errors import DataError
from moodlens.core.schema import SPLIT_ALIASES, SPLITS



@dataclass
class DataOptions:
    """How to read a dataset. Text settings must match the model's text encoder."""

    text_encoder: str | None = None     # tokenizer folder (None = all-MiniLM-L6-v2)
    text_max_len: int = 50
    audio_dim: int = LIVE_AUDIO_DIM     # dims used where the data has no audio/vision (text-only)
    vision_dim: int = LIVE_VISION_DIM
    metric_dataset: str | None = None   # "mosi" | "mosei" | "sims"; None = guessed from the file
    labels: str | None = None           # labels CSV for session folders
    # synthetic data
    synthetic_sizes: tuple[int, int, int] = (512, 128, 128)
    synthetic_seed: int = 0
    synthetic_text_len: int = 12
    synthetic_audio_len: int = 24
    synthetic_vision_len: int = 16


@dataclass
class Split:
    name: str
    batch: MultimodalBatch          # every sample, padded to the split's longest sequences
    labels: torch.Tensor            # (N,) float32
    ids: list[str] = field(default_factory=list)
    raw_text: list[str] = field(default_factory=list)
    extra_labels: dict[str, torch.Tensor] = field(default_factory=dict)  # SIMS unimodal labels
    annotations: list[str] = field(default_factory=list)  # per sample, e.g. "fearful/ck/emotion_valence_v1"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def has_head_labels(self) -> bool:
        """True when some per-modality label is unknown (NaN): unimodal corpora and mixtures, whose
        heads must be supervised separately. Complete CH-SIMS labels keep the papers' setting (the
        one label per sample every model was written for)."""
        return any(bool(torch.isnan(v).any()) for v in self.extra_labels.values())

    def head_labels(self) -> torch.Tensor:
        """(N, 4) labels in models/losses.py LABEL_HEADS order (fused, text, audio, vision); a head
        without its own label column takes the sample's label; NaN = unknown for that head."""
        columns = [self.labels] + [self.extra_labels.get(m, self.labels) for m in ("T", "A", "V")]
        return torch.stack([c.float() for c in columns], 1)

    def training_labels(self) -> torch.Tensor:
        """What the models' `loss` gets: (N, 4) per-head labels when the split has them, else (N,)."""
        return self.head_labels() if self.has_head_labels else self.labels

    def lengths(self) -> torch.Tensor:
        """Longest real sequence of each sample over the three modalities (for length bucketing)."""
        b = self.batch
        return torch.stack([b.text_mask.sum(1), b.audio_mask.sum(1), b.vision_mask.sum(1)], 1).max(1).values

    def batch_order(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                    rank: int = 0, world_size: int = 1, bucket: bool = False) -> list[torch.Tensor]:
        """Index lists of the mini-batches. `bucket` groups samples of similar length (within
        shuffled chunks of 16 batches when shuffling) so padding, and compute, stay small."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if world_size > 1:  # each rank takes an equal share (DDP); pad by wrapping so counts match
            per_rank = -(-n // world_size)
            order = torch.cat([order, order[: per_rank * world_size - n]])[rank::world_size]
        if bucket:
            lengths = self.lengths()[order]
            chunk = batch_size * 16 if shuffle else len(order)
            parts = []
            for start in range(0, len(order), chunk):
                piece = order[start:start + chunk]
                parts.append(piece[torch.argsort(lengths[start:start + chunk], stable=True)])
            order = torch.cat(parts) if parts else order
        groups = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        if shuffle and bucket:  # batches of similar length, visited in random order
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        return groups

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                rank: int = 0, world_size: int = 1, bucket: bool = False, with_index: bool = False
                ) -> Iterator[tuple[MultimodalBatch, torch.Tensor]]:
        """(batch, labels) per mini-batch; `with_index` adds the rows' split indices (dataset-level
        samplers, e.g. DashFusion's §III-D, look the rows up)."""
        labels = self.training_labels()
        for idx in self.batch_order(batch_size, shuffle, generator, rank, world_size, bucket):
            yield (trim(self.batch.index(idx)), labels[idx]) + ((idx,) if with_index else ())

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        per_rank = -(-len(self) // world_size)
        return -(-per_rank // batch_size)


@dataclass
class DatasetSplits:
    source: str
    kind: str                       # mmsa | featurize | text | synthetic | sessions
    splits: dict[str, Split]
    audio_dim: int
    vision_dim: int
    metric_dataset: str = "mosi"
    has_audio: bool = True          # the source carries this modality at all
    has_vision: bool = True
    featurizer_config: dict | None = None  # how the features were made (featurize / sessions output)

    def __getitem__(self, name: str) -> Split:
        return self.split(name)

    def split(self, name: str) -> Split:
        key = SPLIT_ALIASES.get(name, name)
        if key not in self.splits:
            raise DataError(f"{self.source} has no '{name}' split (it has: {', '.join(self.splits) or 'none'}).")
        return self.splits[key]

    @property
    def train(self) -> Split:
        return self.split("train")

    @property
    def valid(self) -> Split:
        return self.split("valid")

    @property
    def test(self) -> Split:
        return self.split("test")


def trim(batch: MultimodalBatch) -> MultimodalBatch:
    """Cut padding beyond the longest real sequence of each modality (keeps at least 2 steps)."""
    def longest(mask):
        any_valid = mask.any(0)
        if not bool(any_valid.any()):
            return 2
        return max(2, int(torch.nonzero(any_valid).max()) + 1)

    lt, la, lv = longest(batch.text_mask), longest(batch.audio_mask), longest(batch.vision_mask)
    return MultimodalBatch(batch.text_ids[:, :lt], batch.text_mask[:, :lt], batch.audio[:, :la],
                           batch.audio_mask[:, :la], batch.vision[:, :lv], batch.vision_mask[:, :lv], batch.present)


# ------------------------------------------------------------------------------------------------
# dispatch
# ------------------------------------------------------------------------------------------------

def load_dataset(spec, options: DataOptions | None = None, **overrides) -> DatasetSplits:
    """Load `spec` (path, list of session folders, or "synthetic") into train/valid/test splits."""
    import dataclasses

    options = dataclasses.replace(options or DataOptions(), **overrides)
    if isinstance(spec, (list, tuple)):
        return _load_sessions([Path(s) for s in spec], options)
    if str(spec) == "synthetic":
        return make_synthetic(options)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"Dataset {path} does not exist (expected an MMSA .pkl, a .tsv/.csv, a folder, "
                        "session folders or 'synthetic').")
    if path.is_dir():
        if (path / "session.json").exists() or any(path.glob("*/session.json")):
            return _load_sessions([path], options)
        return _load_text_folder(path, options)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _load_data_yaml(path, options)
    if suffix in (".pkl", ".pickle"):
        return _load_pickle(path, options)
    if suffix in (".tsv", ".csv", ".txt"):
        return _load_text_file(path, options)
    raise DataError(f"Dataset {path} has an unknown type '{suffix}' (expected .pkl, .tsv or .csv).")


def _load_data_yaml(path: Path, options: DataOptions) -> DatasetSplits:
    """configs/data/*.yaml: `path` (relative paths are taken from the working directory) plus
    DataOptions keys, e.g. `metric_dataset: sims`."""
    import dataclasses

    from moodlens.core.options import fill_dataclass, read_yaml

    values = read_yaml(path)
    if "datasets" in values:  # several datasets at once, with weights (train/mixture.py)
        from moodlens.train.mixture import load_mixture

        return load_mixture(values, path, options)
    if "path" not in values:
        raise DataError(f"Data config {path} lacks key 'path'.")
    spec = values.pop("path")
    values.pop("name", None)
    values.pop("description", None)
    given = fill_dataclass(DataOptions, values, str(path))
    merged = dataclasses.replace(options, **{k: getattr(given, k) for k in values})
    return load_dataset(spec, merged)


# ------------------------------------------------------------------------------------------------
# text-only TSV / CSV
# ------------------------------------------------------------------------------------------------

LABEL_LIMIT = 3.0 + 1e-4   # sentiment labels live in [-3, 3] (MOSI/MOSEI; SIMS uses [-1, 1])


def check_label_range(labels: np.ndarray, where: str) -> None:
    """Refuse labels outside the sentiment scale (a wrong column or units, e.g. MAE 7445)."""
    finite = labels[np.isfinite(labels)]
    bad = np.flatnonzero(np.abs(finite) > LABEL_LIMIT)
    if bad.size:
        raise DataError(f"{where} has {bad.size} label(s) outside -3 to +3 (first: {float(finite[bad[0]]):g} "
                        f"at sample {int(bad[0])}); sentiment labels must lie on that scale.")


def _read_table(path: Path, split: str) -> list[list[str]]:
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if path.suffix.lower() != ".csv" else (",", csv.QUOTE_MINIMAL)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.reader(f, delimiter=delimiter, quoting=quoting))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"Cannot read {path} (split {split}): {err}.") from None


def text_file_modes(path: Path) -> list[str]:
    """The splits a text file's `mode` column names (SPLITS order), [] when it has no such column."""
    rows = _read_table(path, "any")
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "mode" not in header:
        return []
    mi, found = header.index("mode"), set()
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        mode = SPLIT_ALIASES.get(row[mi].strip().lower()) if len(row) > mi else None
        if mode is None:
            raise DataError(f"{path} line {line_no}: key 'mode' is {row[mi] if len(row) > mi else ''!r}, "
                            f"expected train, valid or test.")
        found.add(mode)
    return [m for m in SPLITS if m in found]


def read_text_rows(path: Path, split: str, only_mode: str | None = None) -> tuple[list[str], np.ndarray]:
    """Rows of a `text<TAB>label` TSV (quoting off) or a `text,label` CSV (standard quoting); with `only_mode`,
    the rows whose `mode` column names that split."""
    rows = _read_table(path, split)
    if not rows:
        raise DataError(f"{path} (split {split}) is empty.")
    header = [h.strip().lower() for h in rows[0]]
    if "text" not in header or "label" not in header:
        raise DataError(f"{path} (split {split}) needs a header with columns 'text' and 'label', "
                        f"got {rows[0]!r}.")
    ti, li = header.index("text"), header.index("label")
    mi = header.index("mode") if only_mode and "mode" in header else None
    texts, labels = [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if mi is not None and SPLIT_ALIASES.get(row[mi].strip().lower()) != only_mode:
            continue
        if len(row) <= max(ti, li):
            raise DataError(f"{path} (split {split}) line {line_no} has {len(row)} column(s), expected "
                            f"{len(header)} (key 'label').")
        try:
            value = float(row[li])
        except ValueError:
            raise DataError(f"{path} (split {split}) line {line_no}: key 'label' is not a number "
                            f"({row[li]!r}).") from None
        if not np.isfinite(value):
            raise DataError(f"{path} (split {split}) line {line_no}: key 'label' is {value}.")
        if abs(value) > LABEL_LIMIT:
            raise DataError(f"{path} (split {split}) line {line_no}: key 'label' is {value}, outside "
                            f"-3 to +3 (the sentiment scale).")
        texts.append(row[ti].strip().lower())  # the MiniLM / BERT vocabularies are uncased
        labels.append(value)
    if not texts:
        raise DataError(f"{path} (split {split}) has no rows.")
    return texts, np.asarray(labels, dtype=np.float32)


def _tokenizer(options: DataOptions):
    from moodlens.realtime.perception.features.text import TextFeaturizer

    return TextFeaturizer(options.text_encoder, max_len=options.text_max_len)


def text_split(name: str, texts: list[str], labels: np.ndarray, options: DataOptions, tokenizer=None) -> Split:
    tokenizer = tokenizer or _tokenizer(options)
    enc = tokenizer.encode(texts)
    n = len(texts)
    present = torch.zeros(n, 3, dtype=torch.bool)
    present[:, 0] = torch.from_numpy(enc.present)
    batch = MultimodalBatch(
        text_ids=torch.from_numpy(enc.ids), text_mask=torch.from_numpy(enc.mask),
        audio=torch.zeros(n, 2, options.audio_dim), audio_mask=torch.zeros(n, 2, dtype=torch.bool),
        vision=torch.zeros(n, 2, options.vision_dim), vision_mask=torch.zeros(n, 2, dtype=torch.bool),
        present=present,
    )
    return Split(name, batch, torch.from_numpy(labels), ids=[f"{name}_{i}" for i in range(n)], raw_text=texts)


def _text_dataset(source: str, files: dict[str, Path], options: DataOptions, by_mode: bool = False) -> DatasetSplits:
    tokenizer = _tokenizer(options)
    splits = {}
    for name, file in files.items():
        texts, labels = read_text_rows(file, name, only_mode=name if by_mode else None)
        splits[name] = text_split(name, texts, labels, options, tokenizer)
    return DatasetSplits(source, "text", splits, options.audio_dim, options.vision_dim,
                         options.metric_dataset or "mosi", has_audio=False, has_vision=False)


def _load_text_folder(folder: Path, options: DataOptions) -> DatasetSplits:
    files = {}
    for file in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(file.stem.lower())
        if split and file.suffix.lower() in (".tsv", ".csv"):
            files[split] = file
    if not files:
        raise DataError(f"Folder {folder} holds no train/dev/test .tsv or .csv files and no session.json.")
    return _text_dataset(str(folder), {s: files[s] for s in SPLITS if s in files}, options)


def _load_text_file(path: Path, options: DataOptions) -> DatasetSplits:
    """A lone file is one split, named by its stem (train/dev/test), else 'test' (for evaluation), unless a
    `mode` column spreads its rows over the splits."""
    modes = text_file_modes(path)
    if modes:
        return _text_dataset(str(path), {m: path for m in modes}, options, by_mode=True)
    split = SPLIT_ALIASES.get(path.stem.lower(), "test")
    return _text_dataset(str(path), {split: path}, options)


# ------------------------------------------------------------------------------------------------
# MMSA pickles (and `moodlens featurize` output, same layout)
# ------------------------------------------------------------------------------------------------

def _load_pickle(path: Path, options: DataOptions) -> DatasetSplits:
    from moodlens.core.safeload import safe_pickle_load

    data = safe_pickle_load(path)  # builtins and numpy arrays only: a crafted file cannot run code
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}, not an MMSA dict of splits.")
    found = {SPLIT_ALIASES[k]: k for k in data if isinstance(k, str) and k in SPLIT_ALIASES}
    if not found:
        if "text_bert" in data or "audio" in data:
            raise DataError(f"{path} is a single-clip feature file (keys {', '.join(map(str, list(data)[:6]))}), "
                            "not a dataset with train/valid/test splits and regression_labels.")
        raise DataError(f"{path} has no train/valid/test split keys (keys: {', '.join(map(str, list(data)[:8]))}).")
    kind = "featurize" if ("meta" in data or any("vision_mask" in data[k] for k in found.values()
                                                   if isinstance(data[k], dict))) else "mmsa"
    tokenizer = None
    splits: dict[str, Split] = {}
    audio_dim = vision_dim = None
    for split in SPLITS:
        if split not in found:
            continue
        raw = data[found[split]]
        if not isinstance(raw, dict):
            raise DataError(f"{path} split '{split}' is a {type(raw).__name__}, not a dict of arrays.")
        if kind == "featurize" and _num_samples(raw) == 0:
            continue  # featurize writes empty splits for folds it had no clips for
        if "text_bert" not in raw and "raw_text" in raw and tokenizer is None:
            tokenizer = _tokenizer(options)
        parsed = mmsa_split(raw, split, str(path), options, tokenizer)
        for key, dim, seen in (("audio", parsed.batch.audio.shape[-1], audio_dim),
                               ("vision", parsed.batch.vision.shape[-1], vision_dim)):
            if seen is not None and seen != dim:
                raise DataError(f"{path} split '{split}' key '{key}' has {dim} features per frame but other "
                                f"splits have {seen}.")
        audio_dim, vision_dim = parsed.batch.audio.shape[-1], parsed.batch.vision.shape[-1]
        splits[split] = parsed
    if not splits:
        raise DataError(f"{path} has only empty splits.")
    metric = options.metric_dataset
    if metric is None:
        is_sims = "sims" in path.name.lower() or any(s.extra_labels and not s.has_head_labels for s in splits.values())
        # (per-modality labels with unknowns are unimodal corpora on MOSI's scale, not CH-SIMS)
        metric = "sims" if is_sims else "mosi"
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else None
    return DatasetSplits(str(path), kind, splits, int(audio_dim), int(vision_dim), metric, featurizer_config=meta)


def _num_samples(raw: dict) -> int:
    for key in ("regression_labels", "id", "text_bert"):
        if key in raw and raw[key] is not None:
            return len(raw[key])
    return -1


def _array(raw: dict, key: str, split: str, source: str, ndim: int, dtype=np.float32) -> np.ndarray:
    if key not in raw:
        raise DataError(f"{source} split '{split}' lacks key '{key}'.")
    try:
        arr = np.asarray(raw[key], dtype=dtype)
    except (TypeError, ValueError):
        raise DataError(f"{source} split '{split}' key '{key}' is not a numeric array.") from None
    if arr.ndim != ndim:
        raise DataError(f"{source} split '{split}' key '{key}' has shape {arr.shape}, expected {ndim} dimensions.")
    return arr


def _lengths(raw: dict, key: str, split: str, source: str, n: int, max_len: int) -> np.ndarray | None:
    if key not in raw or raw[key] is None:
        return None
    lengths = np.asarray(raw[key]).reshape(-1)
    if lengths.shape[0] != n:
        raise DataError(f"{source} split '{split}' key '{key}' has {lengths.shape[0]} entries for {n} samples.")
    if not np.all(np.isfinite(lengths.astype(np.float64))) or (lengths < 0).any():
        raise DataError(f"{source} split '{split}' key '{key}' holds negative or non-finite lengths.")
    return np.minimum(lengths.astype(np.int64), max_len)


def _clean_features(arr: np.ndarray, key: str, split: str, source: str, mask: np.ndarray) -> np.ndarray:
    # MMSA's own loader sets -inf in audio to 0 (real openSMILE/librosa files contain it).
    arr = np.where(np.isneginf(arr), 0.0, arr).astype(np.float32)
    bad = ~np.isfinite(arr) & mask[..., None]
    if bad.any():
        sample = int(np.nonzero(bad.any(axis=(1, 2)))[0][0])
        what = "NaN" if np.isnan(arr[bad]).any() else "inf"
        raise DataError(f"{source} split '{split}' key '{key}' holds {what} (first in sample {sample}).")
    return np.where(np.isfinite(arr), arr, 0.0).astype(np.float32)


def _encoder_vocab_size(text_encoder: str | None) -> int:
    """Vocabulary size of the configured encoder (config.json), 30522 (BERT uncased) if unreadable."""
    import json

    from moodlens.core.assets import TEXT_ENCODER, resolve_path

    try:
        return int(json.loads((resolve_path(TEXT_ENCODER, text_encoder) / "config.json").read_text())["vocab_size"])
    except Exception:  # a missing encoder is reported where the model is built, with its own sentence
        return 30522


def mmsa_split(raw: dict, split: str, source: str, options: DataOptions, tokenizer=None) -> Split:
    """One MMSA split dict -> Split. Handles -inf audio, zero lengths and aligned files without lengths."""
    # labels
    label_key = "regression_labels" if "regression_labels" in raw else ("labels" if "labels" in raw else None)
    if label_key is None:
        raise DataError(f"{source} split '{split}' lacks key 'regression_labels'.")
    labels_raw = raw[label_key]
    if isinstance(labels_raw, dict):  # older MMSA: labels = {"M": ..., "T": ...}
        labels_raw = labels_raw.get("M")
    labels = np.asarray(labels_raw, dtype=np.float32).reshape(-1)
    n = labels.shape[0]
    if n == 0:
        raise DataError(f"{source} split '{split}' is empty (key '{label_key}' has no samples).")
    if not np.all(np.isfinite(labels)):
        raise DataError(f"{source} split '{split}' key '{label_key}' holds NaN or inf.")
    check_label_range(labels, f"{source} split '{split}' key '{label_key}'")

    # text: BERT token ids [input_ids, attention_mask, token_type_ids], or raw_text re-tokenized
    if "text_bert" in raw:
        tb = _array(raw, "text_bert", split, source, 3, np.float64)
        if tb.shape[0] != n or tb.shape[1] < 2:
            raise DataError(f"{source} split '{split}' key 'text_bert' has shape {tb.shape}, expected ({n}, 3, L).")
        if not np.all(np.isfinite(tb)):
            raise DataError(f"{source} split '{split}' key 'text_bert' holds NaN or inf.")
        ids = tb[:, 0].astype(np.int64)[:, :MAX_TEXT_LEN]
        text_mask = tb[:, 1][:, :MAX_TEXT_LEN] > 0
        vocab = _encoder_vocab_size(options.text_encoder)
        if (ids < 0).any() or (ids >= vocab).any():
            raise DataError(f"{source} split '{split}' key 'text_bert' holds token ids outside the text encoder's "
                            f"vocabulary (0..{vocab - 1}); set the model's text_encoder to the BERT the file was "
                            "tokenized for.")
        ids = np.where(text_mask, ids, 0)
    elif "raw_text" in raw:
        enc = (tokenizer or _tokenizer(options)).encode([str(t).lower() for t in raw["raw_text"]])
        ids, text_mask = enc.ids, enc.mask
        if ids.shape[0] != n:
            raise DataError(f"{source} split '{split}' key 'raw_text' has {ids.shape[0]} entries for {n} labels.")
    else:
        raise DataError(f"{source} split '{split}' lacks key 'text_bert' (and 'raw_text').")
    text_present = text_mask.any(1)

    modal = {}
    for key in ("audio", "vision"):
        arr = _array(raw, key, split, source, 3, np.float64)
        if arr.shape[0] != n:
            raise DataError(f"{source} split '{split}' key '{key}' has {arr.shape[0]} samples, labels have {n}.")
        if arr.shape[1] > MAX_SEQ_LEN:
            arr = arr[:, :MAX_SEQ_LEN]
        length = arr.shape[1]
        if f"{key}_mask" in raw:  # featurize output carries explicit frame masks
            mask = np.asarray(raw[f"{key}_mask"]).astype(bool)[:, :length]
            if mask.shape != arr.shape[:2]:
                raise DataError(f"{source} split '{split}' key '{key}_mask' has shape {mask.shape}, "
                                f"expected {arr.shape[:2]}.")
        else:
            lengths = _lengths(raw, f"{key}_lengths", split, source, n, length)
            if lengths is None:
                # aligned files carry no lengths: sequences follow the text tokens when aligned, else full
                if length == text_mask.shape[1]:
                    mask = text_mask.copy()
                else:
                    mask = np.ones((n, length), dtype=bool)
            else:
                mask = np.arange(length)[None, :] < lengths[:, None]
        modal[key] = (_clean_features(arr, key, split, source, mask), mask)

    present = np.stack([text_present, modal["audio"][1].any(1), modal["vision"][1].any(1)], axis=1)
    if "present" in raw:
        given = np.asarray(raw["present"]).astype(bool)
        if given.shape != (n, 3):
            raise DataError(f"{source} split '{split}' key 'present' has shape {given.shape}, expected ({n}, 3).")
        present &= given
    if len(ids.shape) != 2 or ids.shape[1] < 2:
        pad = np.zeros((n, 2), dtype=np.int64)
        pad[:, : ids.shape[1]] = ids
        ids = pad
        text_mask = np.pad(text_mask, ((0, 0), (0, 2 - text_mask.shape[1])))

    def padded(arr, mask):  # models need at least 2 steps (export dims); pad short sequences
        if arr.shape[1] >= 2:
            return arr, mask
        extra = 2 - arr.shape[1]
        return np.pad(arr, ((0, 0), (0, extra), (0, 0))), np.pad(mask, ((0, 0), (0, extra)))

    audio, audio_mask = padded(*modal["audio"])
    vision, vision_mask = padded(*modal["vision"])
    batch = MultimodalBatch(
        text_ids=torch.from_numpy(np.ascontiguousarray(ids)), text_mask=torch.from_numpy(text_mask.copy()),
        audio=torch.from_numpy(audio), audio_mask=torch.from_numpy(audio_mask),
        vision=torch.from_numpy(vision), vision_mask=torch.from_numpy(vision_mask),
        present=torch.from_numpy(present),
    )
    extra = {}
    for m in ("T", "A", "V"):
        key = f"regression_labels_{m}"
        if key in raw:
            values = np.asarray(raw[key], dtype=np.float32).reshape(-1)
            # NaN = unknown for that head (a unimodal corpus, or a clip without that label); inf is an error
            if values.shape[0] != n or np.isinf(values).any():
                raise DataError(f"{source} split '{split}' key '{key}' has the wrong length or holds inf.")
            extra[m] = torch.from_numpy(values)   # an all-NaN column still says "unknown", never "use label"
    ids_list = [str(i) for i in raw.get("id", [f"{split}_{i}" for i in range(n)])]
    raw_text = [str(t) for t in raw.get("raw_text", [])]
    annotations = [str(a) for a in raw.get("annotations", [])]
    return Split(split, batch, torch.from_numpy(labels), ids=ids_list, raw_text=raw_text, extra_labels=extra,
                 annotations=annotations)


# ------------------------------------------------------------------------------------------------
# synthetic trimodal data
# ------------------------------------------------------------------------------------------------

# Token-id blocks inside the BERT uncased vocabulary; which block a token comes from carries the text signal.
_POS_TOKENS = torch.arange(2204, 2254)   # ordinary word pieces
_NEG_TOKENS = torch.arange(3204, 3254)
_NEUTRAL_TOKENS = torch.arange(4204, 4304)


def make_synthetic(options: DataOptions) -> DatasetSplits:
    """Trimodal data where label = text + audio + vision latents (each ~N(0,1)), scaled to [-3, 3].

    Each modality carries one independent third of the label, so a fused model beats every
    unimodal predictor (each can explain at most about a third of the variance)."""
    g = torch.Generator().manual_seed(options.synthetic_seed)
    da, dv = options.audio_dim, options.vision_dim
    direction_a = torch.nn.functional.normalize(torch.randn(da, generator=g), dim=0) * (da ** 0.5)
    direction_v = torch.nn.functional.normalize(torch.randn(dv, generator=g), dim=0) * (dv ** 0.5)
    splits = {}
    for name, n in zip(SPLITS, options.synthetic_sizes):
        z = torch.randn(n, 3, generator=g)
        labels = (z.sum(1) * (3.0 / 3.5)).clamp(-3.0, 3.0)  # sum of 3 N(0,1) has std 1.73

        lt, la, lv = options.synthetic_text_len, options.synthetic_audio_len, options.synthetic_vision_len
        # text: each token is positive/negative/neutral with probabilities set by the text latent
        p_pos = torch.sigmoid(1.5 * z[:, 0:1]).expand(n, lt)
        u = torch.rand(n, lt, generator=g)
        kind = torch.where(torch.rand(n, lt, generator=g) < 0.35, 2, (u >= p_pos).long())  # 0 pos 1 neg 2 neutral
        pick = torch.randint(0, 50, (n, lt), generator=g)
        ids = torch.where(kind == 0, _POS_TOKENS[pick], torch.where(kind == 1, _NEG_TOKENS[pick],
                                                                    _NEUTRAL_TOKENS[pick * 2 % 100]))
        ids[:, 0] = 101
        text_len = torch.randint(lt // 2, lt + 1, (n,), generator=g)
        text_mask = torch.arange(lt)[None] < text_len[:, None]
        ids[torch.arange(n), text_len - 1] = 102
        ids = ids.where(text_mask, torch.zeros_like(ids))

        def frames(length, dim, latent, direction):
            lens = torch.randint(max(2, length // 2), length + 1, (n,), generator=g)
            mask = torch.arange(length)[None] < lens[:, None]
            x = torch.randn(n, length, dim, generator=g) + 0.8 * latent[:, None, None] * direction
            return x * mask[..., None], mask

        audio, audio_mask = frames(la, da, z[:, 1], direction_a)
        vision, vision_mask = frames(lv, dv, z[:, 2], direction_v)
        batch = MultimodalBatch(ids, text_mask, audio, audio_mask, vision, vision_mask,
                                torch.ones(n, 3, dtype=torch.bool))
        splits[name] = Split(name, batch, labels.float(), ids=[f"syn_{name}_{i}" for i in range(n)])
    return DatasetSplits("synthetic", "synthetic", splits, da, dv, "mosi")


# ------------------------------------------------------------------------------------------------
# recorded sessions (train/sessions.py, owned by the Sessions engineer)
# ------------------------------------------------------------------------------------------------

def _load_sessions(dirs: list[Path], options: DataOptions) -> DatasetSplits:
    try:
        from moodlens.train.sessions import load_session_dataset
    except ImportError:
        raise DataError(f"Session folders ({dirs[0]}) need moodlens.train.sessions, which is not installed.") from None
    if options.labels is None:
        raise DataError(f"Session folders ({dirs[0]}) need a labels CSV: pass --labels FILE.")
    result = load_session_dataset(dirs, options.labels, text_encoder=options.text_encoder,
                                  text_max_len=options.text_max_len)
    if isinstance(result, DatasetSplits):
        return result
    if isinstance(result, dict):  # MMSA-layout dict of splits
        source = ", ".join(str(d) for d in dirs)
        splits = {SPLIT_ALIASES[k]: mmsa_split(v, SPLIT_ALIASES[k], source, options)
                  for k, v in result.items() if k in SPLIT_ALIASES}
        if not splits:
            raise DataError(f"Sessions {source} produced no train/valid/test splits.")
        first = next(iter(splits.values()))
        return DatasetSplits(source, "sessions", splits, first.batch.audio.shape[-1],
                             first.batch.vision.shape[-1], options.metric_dataset or "mosi")
    raise DataError(f"load_session_dataset returned a {type(result).__name__}, not DatasetSplits.")
