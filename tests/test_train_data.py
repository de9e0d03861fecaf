"""Dataset loaders: real MOSI transcripts, real MMSA-FET feature fixtures, synthetic data, bad data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from moodlens.core.errors import DataError
from moodlens.train.data import DataOptions, load_dataset, make_synthetic


def _fixture(shared_data, name):
    with open(shared_data / "mmsa_fet_examples" / name, "rb") as f:
        return pickle.load(f)


def _mmsa_file(tmp_path, splits: dict, name="mosi_unaligned.pkl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(splits, f)
    return path


def _split_from_batch_example(ex, labels=(1.2, -0.8)):
    """An MMSA split built from the real padded batch of 2 (unaligned, with length keys)."""
    return {
        "id": np.array(["clip_a$_$1", "clip_b$_$2"]),
        "raw_text": np.array(["first clip", "second clip"]),
        "text": ex["text"], "text_bert": ex["text_bert"].copy(),
        "audio": ex["audio"].copy(), "vision": ex["vision"].copy(),
        "audio_lengths": ex["audio_lengths"].copy(), "vision_lengths": ex["vision_lengths"].copy(),
        "regression_labels": np.array(labels, dtype=np.float32),
    }


@pytest.mark.shared
def test_mosi_text_folder_has_the_standard_split(shared_data):
    data = load_dataset(shared_data / "mosi_text")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    assert data.kind == "text" and not data.has_audio and not data.has_vision
    test = data.test
    assert int((test.labels == 0).sum()) == 30 and int((test.labels > 0).sum()) == 277
    assert bool(test.batch.present[:, 0].all()) and not bool(test.batch.present[:, 1:].any())
    assert test.raw_text[0] == test.raw_text[0].lower()
    first = data.train
    assert first.raw_text[0].startswith("a lot of sad parts") and float(first.labels[0]) == pytest.approx(-0.5)
    assert int(first.batch.text_ids[0, 0]) == 101 and bool(first.batch.text_mask[0, :3].all())
    # mini-batches are trimmed to their longest real sequence
    batch, labels = next(first.batches(8))
    assert batch.text_ids.shape[1] == int(batch.text_mask.sum(1).max()) and labels.shape == (8,)


@pytest.mark.shared
def test_lone_tsv_is_its_own_split(shared_data):
    data = load_dataset(shared_data / "mosi_text" / "test.tsv")
    assert list(data.splits) == ["test"] and len(data.test) == 686


def test_csv_with_quoted_commas_and_bad_label(tmp_path):
    good = tmp_path / "train.csv"
    good.write_text('text,label\n"GREAT, REALLY GREAT",2.5\nawful,-3\n')
    data = load_dataset(good)
    assert data.train.raw_text == ["great, really great", "awful"]
    bad = tmp_path / "dev.tsv"
    bad.write_text("text\tlabel\nfine\tpositive\n")
    with pytest.raises(DataError, match=r"dev.tsv \(split valid\) line 2: key 'label'"):
        load_dataset(bad)
    headerless = tmp_path / "test.tsv"
    headerless.write_text("fine\t1.0\n")
    with pytest.raises(DataError, match="header"):
        load_dataset(headerless)


@pytest.mark.shared
def test_mmsa_pickle_from_real_fixture_handles_neg_inf_and_zero_lengths(shared_data, tmp_path):
    ex = _fixture(shared_data, "batch_example.pkl")
    train = _split_from_batch_example(ex)
    train["audio"][0, 3, 2] = -np.inf           # real openSMILE files contain -inf
    train["vision_lengths"][1] = 0              # a clip where no face was tracked
    valid = _split_from_batch_example(ex, (0.0, 2.0))
    path = _mmsa_file(tmp_path, {"train": train, "valid": valid, "test": valid})
    data = load_dataset(path)
    assert data.kind == "mmsa" and (data.audio_dim, data.vision_dim) == (25, 171)
    split = data.train
    assert torch.isfinite(split.batch.audio).all() and float(split.batch.audio[0, 3, 2]) == 0.0
    assert split.batch.audio_mask.sum(1).tolist() == ex["audio_lengths"].tolist()
    assert split.batch.present.tolist() == [[True, True, True], [True, True, False]]
    assert split.batch.text_ids.shape == (2, 50) and split.ids[0] == "clip_a$_$1"
    # the real features go through a model in their own dims (MiniLM reads the BERT uncased ids)
    from moodlens.models import build_model

    model = build_model("hcrl_mfd", {"audio_dim": 25, "vision_dim": 171, "text_hidden": 16, "audio_hidden": 16,
                                     "vision_hidden": 16, "shared_dim": 16, "fusion_hidden": 16,
                                     "encoder_layers": 1, "decouple_layers": 1}).eval()
    batch, _ = next(split.batches(2))
    with torch.no_grad():
        out = model(*batch.tensors())
    assert torch.isfinite(out.fused).all()


@pytest.mark.shared
def test_aligned_file_without_length_keys_follows_text_mask(shared_data, tmp_path):
    ex = _fixture(shared_data, "feature_aligned.pkl")
    split = {"text_bert": ex["text_bert"][None], "audio": ex["audio"][None], "vision": ex["vision"][None],
             "regression_labels": np.array([0.6], dtype=np.float32), "raw_text": np.array(["x"])}
    path = _mmsa_file(tmp_path, {"train": split, "valid": split, "test": split}, "sims_aligned.pkl")
    data = load_dataset(path)
    b = data.train.batch
    assert b.audio_mask.tolist() == b.text_mask.tolist()
    assert data.metric_dataset == "sims"  # guessed from the file name


@pytest.mark.shared
def test_single_clip_feature_file_is_refused(shared_data):
    with pytest.raises(DataError, match="single-clip feature file"):
        load_dataset(shared_data / "mmsa_fet_examples" / "feature_unaligned.pkl")


@pytest.mark.shared
@pytest.mark.parametrize("breakage, message", [
    (lambda s: s["vision"].__setitem__((1, 2, 5), np.nan), r"split 'valid' key 'vision' holds NaN"),
    (lambda s: s.pop("regression_labels"), r"split 'valid' lacks key 'regression_labels'"),
    (lambda s: s.pop("audio"), r"split 'valid' lacks key 'audio'"),
    (lambda s: s.__setitem__("audio_lengths", np.array([3])), r"split 'valid' key 'audio_lengths' has 1 entries"),
    (lambda s: s["text_bert"].__setitem__((0, 0, 1), 40000), r"split 'valid' key 'text_bert' holds token ids outside"),
])
def test_bad_mmsa_data_names_file_split_and_key(shared_data, tmp_path, breakage, message):
    ex = _fixture(shared_data, "batch_example.pkl")
    valid = _split_from_batch_example(ex)
    breakage(valid)
    path = _mmsa_file(tmp_path, {"train": _split_from_batch_example(ex), "valid": valid})
    with pytest.raises(DataError, match=message) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_empty_split_and_unreadable_files(tmp_path):
    empty = {"text_bert": np.zeros((0, 3, 4)), "audio": np.zeros((0, 4, 5)), "vision": np.zeros((0, 4, 6)),
             "regression_labels": np.zeros(0, dtype=np.float32)}
    with pytest.raises(DataError, match=r"split 'test' is empty"):
        load_dataset(_mmsa_file(tmp_path, {"test": empty}))
    garbage = tmp_path / "broken.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match=r"Cannot read .*broken.pkl"):
        load_dataset(garbage)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing.tsv")


def _ridge_r2(x_train, y_train, x_test, y_test, alpha=1.0):
    x_train = np.c_[x_train, np.ones(len(x_train))]
    x_test = np.c_[x_test, np.ones(len(x_test))]
    w = np.linalg.solve(x_train.T @ x_train + alpha * np.eye(x_train.shape[1]), x_train.T @ y_train)
    residual = y_test - x_test @ w
    return 1 - residual.var() / y_test.var()


def _pooled(split):
    b = split.batch
    def mean(x, m):
        m = m.float().unsqueeze(-1)
        return ((x * m).sum(1) / m.sum(1)).numpy()
    counts = torch.zeros(len(split), 30522)
    counts.scatter_add_(1, b.text_ids, b.text_mask.float())
    # share of word pieces from each of the synthetic vocabulary blocks (positive, negative, neutral)
    blocks = [counts[:, a:b].sum(1) for a, b in ((2204, 2254), (3204, 3254), (4204, 4304))]
    text = (torch.stack(blocks, 1) / b.text_mask.sum(1, keepdim=True)).numpy()
    return {"text": text, "audio": mean(b.audio, b.audio_mask), "vision": mean(b.vision, b.vision_mask)}


def test_synthetic_label_needs_more_than_one_modality():
    data = make_synthetic(DataOptions(synthetic_sizes=(600, 50, 300), audio_dim=8, vision_dim=6))
    assert (data.audio_dim, data.vision_dim) == (8, 6)
    train, test = _pooled(data.train), _pooled(data.test)
    y_train, y_test = data.train.labels.numpy(), data.test.labels.numpy()
    r2 = {m: _ridge_r2(train[m], y_train, test[m], y_test) for m in train}
    fused = _ridge_r2(np.hstack(list(train.values())), y_train, np.hstack(list(test.values())), y_test)
    assert all(0.05 < v < 0.5 for v in r2.values()), r2   # every modality carries part of the label ...
    assert fused > max(r2.values()) + 0.3, (fused, r2)   # ... and only all of them together explain it
    again = make_synthetic(DataOptions(synthetic_sizes=(600, 50, 300), audio_dim=8, vision_dim=6))
    assert torch.equal(again.train.batch.audio, data.train.batch.audio)  # seeded


def test_data_yaml_and_bad_spec(tmp_path):
    cfg = tmp_path / "syn.yaml"
    cfg.write_text("path: synthetic\nsynthetic_sizes: [20, 10, 10]\naudio_dim: 5\n")
    data = load_dataset(cfg)
    assert len(data.train) == 20 and data.audio_dim == 5
    with pytest.raises(DataError, match="unknown type"):
        load_dataset(cfg.with_suffix(".json").resolve() if cfg.with_suffix(".json").write_text("{}") is None
                     else cfg.with_suffix(".json"))


def test_featurize_output_layout(tmp_path):
    """`moodlens featurize` writes the MMSA layout plus frame masks, present flags and meta."""
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    n, ta, tv = 3, 6, 4
    ids = np.zeros((n, 3, 5), dtype=np.int64)
    ids[:, 0, :3] = [101, 2204, 102]
    ids[:, 1, :3] = 1
    vision_mask = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=bool)
    split = {"id": np.array(["a", "b", "c"]), "raw_text": np.array(["good", "good", "good"]),
             "text_bert": ids, "audio": np.random.default_rng(0).normal(size=(n, ta, 40)).astype(np.float32),
             "audio_lengths": np.array([6, 3, 0]), "audio_mask": np.arange(ta)[None] < np.array([[6], [3], [0]]),
             "vision": np.ones((n, tv, 64), np.float32), "vision_lengths": np.array([4, 0, 1]),
             "vision_mask": vision_mask, "present": np.array([[1, 1, 1], [1, 1, 0], [1, 0, 1]], bool),
             "regression_labels": np.array([1.0, -1.0, 0.5], np.float32)}
    empty = {k: v[:0] for k, v in split.items()}
    meta = FeaturizerConfig().to_dict()
    path = _mmsa_file(tmp_path, {"train": split, "valid": empty, "test": split, "meta": meta}, "features.pkl")
    data = load_dataset(path)
    assert data.kind == "featurize" and list(data.splits) == ["train", "test"]  # the empty fold is skipped
    assert data.featurizer_config == meta and (data.audio_dim, data.vision_dim) == (40, 64)
    b = data.train.batch
    assert b.vision_mask.tolist() == vision_mask.tolist()   # frames without a face stay masked
    assert b.present.tolist() == [[True, True, True], [True, True, False], [True, False, True]]


def test_checkpoint_carries_the_featurize_meta_and_the_modalities_present_in_train(tmp_path):
    """Trained on a featurize pickle, the checkpoint records the pickle's `meta` (not the live
    default) and only the modalities some training sample has present (vision never is here)."""
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.trainer import Trainer, TrainConfig

    rng = np.random.default_rng(1)
    n, ta, tv = 6, 5, 3
    ids = np.zeros((n, 3, 5), dtype=np.int64)
    ids[:, 0, :3] = [101, 2204, 102]
    ids[:, 1, :3] = 1
    split = {"id": np.array([str(i) for i in range(n)]), "raw_text": np.array(["good"] * n), "text_bert": ids,
             "audio": rng.normal(size=(n, ta, 40)).astype(np.float32), "audio_lengths": np.full(n, ta),
             "audio_mask": np.ones((n, ta), bool), "vision": np.ones((n, tv, 64), np.float32),
             "vision_lengths": np.full(n, tv), "vision_mask": np.ones((n, tv), bool),
             "present": np.array([[1, 1, 0], [1, 0, 0]] * 3, bool),
             "regression_labels": rng.uniform(-3, 3, n).astype(np.float32)}
    meta = FeaturizerConfig(audio_hop_length=320).to_dict()
    assert meta != FeaturizerConfig().to_dict()
    path = _mmsa_file(tmp_path, {"train": split, "valid": split, "meta": meta}, "features.pkl")
    tiny = {"text_hidden": 8, "audio_hidden": 8, "vision_hidden": 8, "shared_dim": 8, "fusion_hidden": 8,
            "heads": 2, "encoder_layers": 1, "decouple_layers": 1}
    config = TrainConfig(model_overrides=tiny, epochs=1, batch_size=6, seeds=[1], num_threads=1)
    Trainer(config, load_dataset(path), tmp_path / "run", show_progress=False).run()
    loaded = load_checkpoint(tmp_path / "run" / "best.pt")
    assert loaded.featurizer_config == meta
    assert loaded.extra["trained_modalities"] == ["text", "audio"]
