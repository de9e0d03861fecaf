"""xz-compressed checkpoints (how models/weights/default.pt is shipped): read like plain ones, stay compressed when
updated, and a damaged one is refused in one sentence."""

import pytest
import torch

from moodlens.core.errors import AssetError
from moodlens.models.checkpoint import (FORMAT, default_checkpoint_path, is_compressed, read_checkpoint,
                                        update_checkpoint, write_payload)


def _payload() -> dict:
    return {"format": FORMAT, "model_name": "hcrl_mfd", "model_config": {"audio_dim": 4},
            "featurizer_config": {"audio_features": "librosa"},
            "state_dict": {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3)}, "metrics": {}}


def test_compressed_and_plain_files_read_the_same(tmp_path):
    plain = write_payload(tmp_path / "plain.pt", _payload())
    packed = write_payload(tmp_path / "packed.pt", _payload(), compress=True)
    assert not is_compressed(plain) and is_compressed(packed)
    a, _ = read_checkpoint(plain)
    b, _ = read_checkpoint(packed)
    assert torch.equal(a["state_dict"]["w"], b["state_dict"]["w"]) and a["model_config"] == b["model_config"]


def test_update_keeps_a_compressed_file_compressed(tmp_path):
    packed = write_payload(tmp_path / "packed.pt", _payload(), compress=True)
    update_checkpoint(packed, trained_modalities=["text"])
    assert is_compressed(packed)
    payload, _ = read_checkpoint(packed)
    assert payload["trained_modalities"] == ["text"]


def test_a_truncated_compressed_file_is_one_sentence(tmp_path):
    packed = write_payload(tmp_path / "packed.pt", _payload(), compress=True)
    packed.write_bytes(packed.read_bytes()[:40])
    with pytest.raises(AssetError, match=r"packed\.pt cannot be read \("):
        read_checkpoint(packed)


def test_the_shipped_weights_are_compressed_and_under_20_mib():
    path = default_checkpoint_path()
    assert is_compressed(path)
    assert path.stat().st_size < 20 * 1024 * 1024
