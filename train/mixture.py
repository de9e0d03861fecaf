"""Several datasets at once: per-head labels, dataset weights, and composed trimodal samples.

A data YAML with a `datasets:` list (configs/data/default_trimodal.yaml):

    datasets:
      - {path: ../shared/data/mosi_text, weight: 1.0}                 # text head (and fused)
      - {path: runs/data/ravdess.pkl, weight: 1.0, neutral_text: true} # audio head
      - {path: runs/data/faces.pkl, weight: 0.5}                      # vision head
    valence: emotion_valence_v1      # the fused rule for composed samples (configs/valence/)
    compose: {train: 3000, valid: 400, test: 800, seed: 0, p_audio: 0.85, p_vision: 0.85}

Labels are (N, 4) per head (models/losses.py: fused, text, audio, vision; NaN = unknown, masked).
A dataset without per-modality columns (MOSI) gives its one label to every head it has.

`weight` is how often a dataset's samples are drawn per training epoch (2 = each twice, 0.5 =
a random half, drawn anew each epoch); evaluation always takes every sample once. `balance: true`
spreads that weight so that positive and negative labels (of the head the dataset teaches) are
drawn equally often, zero labels keeping their share: happy is 1 in 5 of RAVDESS's valenced clips and
negative faces are scarce, and a head that sees mostly one sign learns to answer it. `balance: three_way`
draws positive, zero and negative labels a third each: RAVDESS has 4 neutral clips per actor against 8 of
each other emotion, and a voice head that sees neutral 1 time in 11 called every neutral test voice
negative (docs/model_card.md, the voice lean study). `balance: emotions` balances the signs as `true` does and,
within each sign, draws every emotion (the first field of a sample's annotation, `fearful/ck/...`) equally
often: within the negative faces fear (64 of 1 002 train + valid with a face) is otherwise drowned by sad, angry and
disgust (scripts/probe_face_fear.py).

Composed samples (`compose`): no corpus here has text, voice and face with one label, so the
fusion would never see all three present. A composed sample takes its text from one real sample,
its audio from another and its face from a third (same split, so never across speakers or
subjects of different splits); its fused label is the valence mapping's fused rule over the
sources' own labels (text counts double; a `neutral_text` dataset's words count as 0), and its
text/audio/vision labels are unknown: composed samples train the fused head only, the unimodal
heads learn from real samples only. When the text comes from a dataset whose samples carry
their own audio (RAVDESS: the statement and its voice), the audio is that same clip's.

Rows are kept as references into the source splits and padded per mini-batch, so a face-only
sample never holds a 100-frame audio tensor of zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moodlens.models.batch import MultimodalBatch
from moodlens.core.errors import DataError

KEYS = ("path", "weight", "neutral_text", "name", "balance")
COMPOSE_KEYS = ("train", "valid", "test", "seed", "p_audio", "p_vision")


def _last_true(mask: torch.Tensor) -> torch.Tensor:
    """Per row, index of the last True + 1 (0 when none): the real length of a padded sequence."""
    positions = torch.arange(1, mask.shape[1] + 1).expand_as(mask)
    return (positions * mask).max(1).values


@dataclass
class Part:
    name: str
    split: object            # train.data.Split
    weight: float
    neutral_text: bool
    head: torch.Tensor = field(init=False)   # (N, 4) labels
    lengths: dict = field(init=False)

    def __post_init__(self):
        self.head = self.split.head_labels()
        b = self.split.batch
        self.lengths = {"text": _last_true(b.text_mask), "audio": _last_true(b.audio_mask),
                        "vision": _last_true(b.vision_mask)}


class RefBatch:
    """A lazily padded batch: row i = (text ref, audio ref, vision ref), each (part, row) or None."""

    def __init__(self, parts: list[Part], refs: np.ndarray, text_dim: int, audio_dim: int, vision_dim: int):
        self.parts, self.refs = parts, refs            # refs (N, 3, 2) int64, -1 = absent
        self.audio_dim, self.vision_dim = audio_dim, vision_dim
        present = torch.zeros(len(refs), 3, dtype=torch.bool)
        for m in range(3):
            for p, part in enumerate(parts):
                rows = np.nonzero(refs[:, m, 0] == p)[0]
                if len(rows):
                    present[rows, m] = part.split.batch.present[torch.from_numpy(refs[rows, m, 1]), m]
        self.present = present

    def __len__(self) -> int:
        return len(self.refs)

    def row_lengths(self) -> torch.Tensor:
        out = torch.zeros(len(self.refs), dtype=torch.long)
        for m, key in enumerate(("text", "audio", "vision")):
            for p, part in enumerate(self.parts):
                rows = np.nonzero(self.refs[:, m, 0] == p)[0]
                if len(rows):
                    out[rows] = torch.maximum(out[rows], part.lengths[key][torch.from_numpy(self.refs[rows, m, 1])])
        return out

    def index(self, idx) -> MultimodalBatch:
        idx = torch.as_tensor(idx).reshape(-1).numpy()
        refs = self.refs[idx]
        n = len(idx)
        fields = {}
        for m, (key, data_key, mask_key, dim, dtype) in enumerate((
                ("text", "text_ids", "text_mask", None, torch.long),
                ("audio", "audio", "audio_mask", self.audio_dim, torch.float32),
                ("vision", "vision", "vision_mask", self.vision_dim, torch.float32))):
            lens = [0 if r[0] < 0 else int(self.parts[r[0]].lengths[key][r[1]]) for r in refs[:, m]]
            length = max(lens + [2])
            data = torch.zeros((n, length) if dim is None else (n, length, dim), dtype=dtype)
            mask = torch.zeros(n, length, dtype=torch.bool)
            for i, ((p, r), k) in enumerate(zip(refs[:, m], lens)):
                if p < 0 or k == 0:
                    continue
                source = self.parts[p].split.batch
                data[i, :k] = getattr(source, data_key)[r, :k]
                mask[i, :k] = getattr(source, mask_key)[r, :k]
            fields[data_key], fields[mask_key] = data, mask
        return MultimodalBatch(fields["text_ids"], fields["text_mask"], fields["audio"], fields["audio_mask"],
                               fields["vision"], fields["vision_mask"], self.present[torch.from_numpy(idx)])


class MixedSplit:
    """The Split interface (train/data.py) over several datasets' splits plus composed samples."""

    def __init__(self, name: str, parts: list[Part], refs: np.ndarray, labels: torch.Tensor,
                 origin: list[str], weights: np.ndarray, audio_dim: int, vision_dim: int):
        self.name, self.parts = name, parts
        self.batch = RefBatch(parts, refs, 0, audio_dim, vision_dim)
        self._head = labels                     # (N, 4)
        self.labels = labels[:, 0]              # fused: what evaluate_split's MMSA metrics score
        self.origin = origin                    # per row: the dataset name or "composed"
        self.weights = weights                  # per row: draws per epoch
        self.ids = [f"{o}:{i}" for i, o in enumerate(origin)]
        self.raw_text: list[str] = []
        self.extra_labels = {m: labels[:, i + 1] for i, m in enumerate(("T", "A", "V"))}

    def __len__(self) -> int:
        return len(self.labels)

    has_head_labels = True

    def head_labels(self) -> torch.Tensor:
        return self._head

    def training_labels(self) -> torch.Tensor:
        return self._head

    def lengths(self) -> torch.Tensor:
        return self.batch.row_lengths()

    def epoch_rows(self, generator: torch.Generator | None) -> torch.Tensor:
        """Rows of one training epoch: each row floor(w) times plus once more with probability frac(w)."""
        whole = np.floor(self.weights).astype(np.int64)
        extra = torch.rand(len(self.weights), generator=generator).numpy() < (self.weights - whole)
        counts = whole + extra
        return torch.from_numpy(np.repeat(np.arange(len(self.weights)), counts))

    def batch_order(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                    rank: int = 0, world_size: int = 1, bucket: bool = False) -> list[torch.Tensor]:
        if not shuffle:
            order = torch.arange(len(self))
        else:
            rows = self.epoch_rows(generator)
            order = rows[torch.randperm(len(rows), generator=generator)]
        if world_size > 1:
            per_rank = -(-len(order) // world_size)
            order = torch.cat([order, order[: per_rank * world_size - len(order)]])[rank::world_size]
        if bucket:
            lengths = self.lengths()[order]
            chunk = batch_size * 16 if shuffle else len(order)
            pieces = [order[s:s + chunk][torch.argsort(lengths[s:s + chunk], stable=True)]
                      for s in range(0, len(order), chunk)]
            order = torch.cat(pieces) if pieces else order
        groups = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        if shuffle and bucket:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        return groups

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                rank: int = 0, world_size: int = 1, bucket: bool = False, with_index: bool = False):
        """As Split.batches; `with_index` adds the rows' indices (for dataset-level samplers)."""
        from moodlens.train.data import trim

        for idx in self.batch_order(batch_size, shuffle, generator, rank, world_size, bucket):
            yield (trim(self.batch.index(idx)), self._head[idx]) + ((idx,) if with_index else ())

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        per_epoch = float(self.weights.sum())
        return -(-math.ceil(per_epoch / world_size) // batch_size)

    def subset(self, origin: str) -> "MixedSplit":
        """The rows that came from one dataset (or "composed"), as its own split (for per-dataset metrics)."""
        rows = np.array([i for i, o in enumerate(self.origin) if o == origin], dtype=np.int64)
        if not len(rows):
            raise DataError(f"The {self.name} split has no rows from '{origin}' (it has: "
                            f"{', '.join(sorted(set(self.origin)))}).")
        return MixedSplit(self.name, self.parts, self.batch.refs[rows], self._head[torch.from_numpy(rows)],
                          [self.origin[i] for i in rows], self.weights[rows], self.batch.audio_dim,
                          self.batch.vision_dim)


def _balance_mode(entry: dict, path: Path, i: int) -> str:
    """`balance`: false (as drawn), true (+ and - equally often), three_way (+, 0, - a third each) or emotions
    (+ and - equally often, and every emotion within a sign equally often)."""
    value = entry.get("balance", False)
    if value in (False, None):
        return ""
    if value is True:
        return "signs"
    if value in ("three_way", "emotions"):
        return value
    raise DataError(f"Data config {path}: datasets entry {i + 1} has balance {value!r} "
                    f"(known: true, false, three_way, emotions).")


def sign_balanced_rows(sign: np.ndarray) -> np.ndarray:
    """Relative draws per row: + and - split the non-zero rows' share equally, zero labels keep theirs."""
    rows = np.ones(len(sign))
    nonzero = sign != 0
    signs = [c for c in (-1.0, 1.0) if (sign == c).any()]
    for c in signs:
        rows[sign == c] = nonzero.sum() / (len(signs) * (sign == c).sum())
    return rows


def emotion_balanced_rows(sign: np.ndarray, emotion) -> np.ndarray:
    """sign_balanced_rows, then within each sign every emotion drawn equally often (the sign's share is kept)."""
    emotion = np.asarray(emotion)
    rows = sign_balanced_rows(sign)
    for c in (-1.0, 1.0):
        in_sign = sign == c
        if not in_sign.any():
            continue
        share, kinds = rows[in_sign].sum(), np.unique(emotion[in_sign])
        for e in kinds:
            m = in_sign & (emotion == e)
            rows[m] = share / (len(kinds) * m.sum())
    return rows


def _emotions(part: Part) -> np.ndarray:
    """Each row's emotion: the first field of its annotation (`fearful/ck/emotion_valence_v1`)."""
    notes = list(getattr(part.split, "annotations", []) or [])
    if len(notes) != len(part.split) or not all(notes):
        raise DataError(f"Dataset {part.name}: `balance: emotions` needs an emotion annotation on every sample "
                        f"(found {sum(1 for a in notes if a)} of {len(part.split)}); featurize it from a "
                        f"labels file made by scripts/make_labels.py.")
    return np.array([str(a).split("/")[0] for a in notes])


def _balanced(part: Part, weight: float, mode: str = "signs") -> np.ndarray:
    """Per-row draws per epoch: `weight` on average; + and - drawn equally often, zero labels keeping
    their share (`signs`), also every emotion of a sign equally often (`emotions`), or +, 0 and - a third
    of the draws each (`three_way`)."""
    head = part.head.numpy()
    present = part.split.batch.present.numpy()
    column = 0
    for m, c in ((1, 2), (2, 3), (0, 1)):        # the head this dataset teaches: audio, vision, else text
        if present[:, m].any() and np.isfinite(head[present[:, m], c]).all():
            column = c
            break
    sign = np.sign(np.nan_to_num(head[:, column]))
    if mode == "three_way":
        rows = np.ones(len(sign))
        classes = [c for c in (-1.0, 0.0, 1.0) if (sign == c).any()]
        for c in classes:                          # each sign class the same share of the draws
            rows[sign == c] = len(sign) / (len(classes) * (sign == c).sum())
        return weight * rows * len(rows) / rows.sum()
    rows = emotion_balanced_rows(sign, _emotions(part)) if mode == "emotions" else sign_balanced_rows(sign)
    return weight * rows * len(rows) / rows.sum()


def _compose(name: str, parts: list[Part], count: int, rng: np.random.Generator, valence, p_audio: float,
             p_vision: float) -> tuple[np.ndarray, torch.Tensor]:
    """`count` composed rows (refs, (count, 4) labels); see the module docstring for the rule."""
    def pool(modality: int, head: int):
        """(part, row) of every row with that modality present and its head label known (or neutral text)."""
        out = []
        for p, part in enumerate(parts):
            present = part.split.batch.present[:, modality]
            known = torch.isfinite(part.head[:, head]) | (torch.tensor(part.neutral_text) & (modality == 0))
            rows = torch.nonzero(present & known).reshape(-1).numpy()
            out += [(p, int(r)) for r in rows]
        return out

    texts, audios, visions = pool(0, 1), pool(1, 2), pool(2, 3)
    if not texts or not (audios or visions):
        raise DataError(f"Composed samples for the {name} split need text and voice or face sources; "
                        f"found {len(texts)} text, {len(audios)} audio, {len(visions)} face samples.")
    refs = np.full((count, 3, 2), -1, dtype=np.int64)
    labels = torch.full((count, 4), float("nan"))
    made = 0
    while made < count:
        tp, tr = texts[rng.integers(len(texts))]
        text_part = parts[tp]
        if text_part.neutral_text:                     # its own voice comes with the words
            y_text = valence.statement_valence
            audio = (tp, tr) if bool(text_part.split.batch.present[tr, 1]) else None
        else:
            y_text = float(text_part.head[tr, 1])
            audio = audios[rng.integers(len(audios))] if audios and rng.random() < p_audio else None
        vision = visions[rng.integers(len(visions))] if visions and rng.random() < p_vision else None
        if audio is None and vision is None:
            continue                                   # a text-only sample adds nothing composed
        y_audio = None if audio is None else float(parts[audio[0]].head[audio[1], 2])
        y_vision = None if vision is None else float(parts[vision[0]].head[vision[1], 3])
        if y_audio is not None and not math.isfinite(y_audio):
            continue
        refs[made, 0] = (tp, tr)
        if audio is not None:
            refs[made, 1] = audio
        if vision is not None:
            refs[made, 2] = vision
        labels[made, 0] = valence.fused(text=y_text, audio=y_audio, vision=y_vision)
        made += 1
    return refs, labels


def load_mixture(values: dict, path: Path, options):
    """A `datasets:` data YAML -> DatasetSplits of MixedSplits (see the module docstring)."""
    import dataclasses

    from moodlens.train.data import DatasetSplits, load_dataset
    from moodlens.train.unimodal_labels import load_valence_map

    entries = values.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise DataError(f"Data config {path}: 'datasets' must be a non-empty list of {{path, weight}} entries.")
    unknown = sorted(set(values) - {"datasets", "compose", "valence", "name", "description", "metric_dataset"})
    if unknown:
        raise DataError(f"Data config {path} has an unknown key '{unknown[0]}'.")
    specs = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or "path" not in entry:
            raise DataError(f"Data config {path}: datasets entry {i + 1} needs a 'path'.")
        bad = sorted(set(entry) - set(KEYS))
        if bad:
            raise DataError(f"Data config {path}: datasets entry {i + 1} has an unknown key '{bad[0]}' "
                            f"(known: {', '.join(KEYS)}).")
        weight = float(entry.get("weight", 1.0))
        if not weight >= 0:
            raise DataError(f"Data config {path}: datasets entry {i + 1} has a negative weight.")
        specs.append((str(entry["path"]), weight, bool(entry.get("neutral_text", False)),
                      str(entry.get("name") or Path(str(entry["path"])).stem), _balance_mode(entry, path, i)))
    # Feature files first: text-only datasets then get the same (absent) audio/vision widths.
    loaded: dict[int, object] = {}
    for i, (spec, *_rest) in enumerate(specs):
        if Path(spec).suffix.lower() in (".pkl", ".pickle"):
            loaded[i] = load_dataset(spec, options)
    audio_dims = {d.audio_dim for d in loaded.values() if d.has_audio}
    vision_dims = {d.vision_dim for d in loaded.values() if d.has_vision}
    if len(audio_dims) > 1 or len(vision_dims) > 1:
        raise DataError(f"Data config {path}: the datasets have different feature widths (audio {sorted(audio_dims)}, "
                        f"vision {sorted(vision_dims)}); featurize them with one featurizer config.")
    audio_dim = audio_dims.pop() if audio_dims else options.audio_dim
    vision_dim = vision_dims.pop() if vision_dims else options.vision_dim
    inner = dataclasses.replace(options, audio_dim=audio_dim, vision_dim=vision_dim)
    for i, (spec, *_rest) in enumerate(specs):
        if i not in loaded:
            loaded[i] = load_dataset(spec, inner)
    configs = [d.featurizer_config for d in loaded.values() if d.featurizer_config]
    if configs:
        from moodlens.realtime.perception.features.config import FeaturizerConfig

        first = FeaturizerConfig.from_dict(configs[0], source=f"featurizer config of {specs[0][0]}")
        for other in configs[1:]:
            first.check_compatible(other, where=f"a dataset of {path}")

    valence = load_valence_map(values.get("valence"))
    compose = dict(values.get("compose") or {})
    bad = sorted(set(compose) - set(COMPOSE_KEYS))
    if bad:
        raise DataError(f"Data config {path}: compose has an unknown key '{bad[0]}' (known: {', '.join(COMPOSE_KEYS)}).")
    rng = np.random.default_rng(int(compose.get("seed", 0)))

    splits = {}
    for split_name in ("train", "valid", "test"):
        parts, refs, labels, origin, weights = [], [], [], [], []
        for i, (spec, weight, neutral_text, name, balance) in enumerate(specs):
            data = loaded[i]
            if split_name not in data.splits:
                continue
            part = Part(name, data.splits[split_name], weight, neutral_text)
            p = len(parts)
            parts.append(part)
            n = len(part.split)
            rows = np.arange(n)
            refs.append(np.stack([np.stack([np.full(n, p), rows], 1)] * 3, 1))
            labels.append(part.head)
            origin += [name] * n
            weights.append(_balanced(part, weight, balance) if balance and split_name == "train"
                           else np.full(n, weight))
        if not parts:
            continue
        count = int(compose.get(split_name, 0))
        if count > 0:
            c_refs, c_labels = _compose(split_name, parts, count, rng, valence, float(compose.get("p_audio", 0.85)),
                                        float(compose.get("p_vision", 0.85)))
            refs.append(c_refs)
            labels.append(c_labels)
            origin += ["composed"] * count
            weights.append(np.ones(count))
        splits[split_name] = MixedSplit(split_name, parts, np.concatenate(refs), torch.cat(labels), origin,
                                        np.concatenate(weights), audio_dim, vision_dim)
    if "train" not in splits:
        raise DataError(f"Data config {path}: no dataset has a train split.")
    return DatasetSplits(str(path), "mixture", splits, audio_dim, vision_dim,
                         values.get("metric_dataset") or options.metric_dataset or "mosi",
                         has_audio=any(d.has_audio for d in loaded.values()),
                         has_vision=any(d.has_vision for d in loaded.values()),
                         featurizer_config=configs[0] if configs else None)
