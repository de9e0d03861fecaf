"""scripts/combine_checkpoints.py on synthetic tiny checkpoints (a few tensors under the real key names)."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from combine_checkpoints import CombineError, branch, combine


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def tiny_base() -> dict:
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g).half()

    return {
        "format": "moodlens-checkpoint/1", "model_name": "hcrl_mfd", "weights_dtype": "float16",
        "state_dict": {"text_proj.weight": t(4, 3), "fusion.net.0.weight": t(2, 4), "absent.audio": t(4),
                       "absent.vision": t(4), "audio_offset": torch.zeros(1), "audio_proj.weight": t(4, 5),
                       "pooled_heads.audio.stat_mean": t(10), "vision_proj.weight": t(4, 6),
                       "pooled_heads.vision.net.0.weight": t(3, 6)},
        "featurizer_config": {"text_max_len": 50, "audio_features": "whisper_encoder", "whisper_input": "15s",
                              "audio_dim": 5, "vision_features": "mediapipe_v2", "vision_dim": 6,
                              "versions": {"numpy": "2.4"}},
        "model_config": {"audio_dim": 5, "vision_dim": 6, "pooled_share_audio": 0.75, "pooled_mirror": ["vision"],
                         "pooled_heads": ["audio", "vision"], "late_fusion": [2.0, 1.0, 1.0]},
        "metrics": {"seed": 1111}, "trained_modalities": ["text", "audio", "vision"],
    }


def retrained(base: dict, part: str) -> dict:
    out = copy.deepcopy(base)
    for key in out["state_dict"]:
        if branch(key) == part:
            out["state_dict"][key] = out["state_dict"][key] + torch.ones_like(out["state_dict"][key])
    return out


@pytest.fixture
def trio():
    base = tiny_base()
    a, b = retrained(base, "vision"), retrained(base, "audio")
    a["featurizer_config"].update(vision_features="mediapipe_v3", vision_dim=7)
    a["model_config"]["vision_dim"] = 7
    b["featurizer_config"]["audio_level"] = "rms_-23"
    b["model_config"]["pooled_share_audio"] = 0.5
    b["versions"] = {"torch": "2"}
    return a, b, base


def test_takes_vision_from_a_audio_from_b_and_keeps_the_rest(trio):
    a, b, base = trio
    out = combine(a, b, base)
    for key, value in out["state_dict"].items():
        src = {"vision": a, "audio": b, "other": base}[branch(key)]
        assert torch.equal(value, src["state_dict"][key]) and value.dtype == src["state_dict"][key].dtype, key
    assert set(out["state_dict"]) == set(base["state_dict"])
    assert not torch.equal(out["state_dict"]["vision_proj.weight"], base["state_dict"]["vision_proj.weight"])
    assert not torch.equal(out["state_dict"]["audio_proj.weight"], base["state_dict"]["audio_proj.weight"])
    fc, mc = out["featurizer_config"], out["model_config"]
    assert (fc["vision_features"], fc["vision_dim"], fc["audio_level"], fc["whisper_input"]) == (
        "mediapipe_v3", 7, "rms_-23", "15s")
    assert (mc["vision_dim"], mc["pooled_share_audio"], mc["audio_dim"]) == (7, 0.5, 5)
    assert out["metrics"]["vision_checkpoint_metrics"] == {"seed": 1111} and out["versions"] == {"torch": "2"}
    assert out["trained_modalities"] == ["text", "audio", "vision"]     # the checkpoints' order, not sorted


@pytest.mark.parametrize("change, message", [
    (lambda a, b: a["state_dict"].__setitem__("text_proj.weight", a["state_dict"]["text_proj.weight"] * 2),
     "'text_proj.weight' belongs to neither branch and A changed it"),
    (lambda a, b: b["state_dict"].__setitem__("absent.audio", b["state_dict"]["absent.audio"].float()),
     "'absent.audio' belongs to neither branch and B changed it"),            # same values, another dtype
    (lambda a, b: b["state_dict"].pop("fusion.net.0.weight"), "B lacks it"),
    (lambda a, b: a["state_dict"].__setitem__("audio_proj.weight", a["state_dict"]["audio_proj.weight"] + 1),
     "vision checkpoint A changed the audio tensor 'audio_proj.weight'"),
    (lambda a, b: b["state_dict"].__setitem__("vision_proj.weight", b["state_dict"]["vision_proj.weight"] + 1),
     "audio checkpoint B changed the vision tensor 'vision_proj.weight'"),
    (lambda a, b: a["featurizer_config"].__setitem__("text_max_len", 64),
     "featurizer config key 'text_max_len' belongs to neither branch and differs"),
    (lambda a, b: b["model_config"].__setitem__("late_fusion", [1.0, 1.0, 1.0]),
     "model config key 'late_fusion' belongs to neither branch and differs"),
    (lambda a, b: a.__setitem__("model_name", "other"), "different models"),
])
def test_refuses_what_was_not_trained_from_one_frozen_base(trio, change, message):
    a, b, base = trio
    change(a, b)
    with pytest.raises(CombineError) as err:
        combine(a, b, base)
    assert message in flat(str(err.value))


def test_both_changing_a_shared_config_key_the_same_way_is_refused_too(trio):
    a, b, base = trio
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    a["model_config"]["late_fusion"] = b["model_config"]["late_fusion"] = [1.0, 1.0, 1.0]
    with pytest.raises(CombineError, match="both checkpoints changed it from the base"):
        combine(a, b, base)
    a2["model_config"]["pooled_hidden_vision_x"] = 3          # a key naming vision: A's own
    assert combine(a2, b2, base)["model_config"]["pooled_hidden_vision_x"] == 3


def test_a_vision_setting_named_otherwise_is_taken_from_a_when_named(trio):
    a, b, base = trio
    a["featurizer_config"]["face_expression_sha"] = "abc"      # a new vision field A's code adds
    with pytest.raises(CombineError, match="'face_expression_sha' belongs to neither branch"):
        combine(a, b, base)
    assert combine(a, b, base, vision_keys=("face_expression_sha",))["featurizer_config"]["face_expression_sha"] == "abc"


def test_cli_writes_a_loadable_checkpoint_from_the_shipped_weights(tmp_path):
    """The real stage-4 checkpoint as base, A and B (nothing retrained): the output loads and equals it."""
    from combine_checkpoints import main
    from moodlens.models.checkpoint import (
        default_checkpoint_path,
        load_checkpoint,
        read_checkpoint,
    )

    shipped = str(default_checkpoint_path())
    out = tmp_path / "combined.pt"
    assert main(["--vision", shipped, "--audio", shipped, "--base", shipped, "--out", str(out)]) == 0
    combined, _ = read_checkpoint(out)
    original, _ = read_checkpoint(shipped)
    assert set(combined["state_dict"]) == set(original["state_dict"])
    assert all(torch.equal(v, original["state_dict"][k]) for k, v in combined["state_dict"].items())
    load_checkpoint(out)


# ---- --text: the words-only path from another lineage -------------------------------------------------

def test_take_text_replaces_only_the_text_path(trio):
    from combine_checkpoints import TEXT_PREFIXES, take_text

    a, b, base = trio
    combined = combine(a, b, base)
    other_lineage = retrained(tiny_base(), "vision")      # different voice/face branches: never taken
    for key in other_lineage["state_dict"]:
        if key.startswith(TEXT_PREFIXES):
            other_lineage["state_dict"][key] = other_lineage["state_dict"][key] * 0 + 3
    out = take_text(combined, other_lineage)
    for key, value in out["state_dict"].items():
        want = other_lineage if key.startswith(TEXT_PREFIXES) else combined
        assert torch.equal(value, want["state_dict"][key]), key
    assert {"text_proj.weight", "fusion.net.0.weight", "absent.audio"} <= {
        k for k in out["state_dict"] if k.startswith(TEXT_PREFIXES)}
    assert out["model_config"] == combined["model_config"] and "text" in out["combined_from"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c["state_dict"].pop("fusion.net.0.weight"), "lacks the text tensor 'fusion.net.0.weight'"),
    (lambda c: c["state_dict"].__setitem__("text_proj.weight", torch.zeros(4, 2).half()), "has (4, 2)"),
    (lambda c: c["featurizer_config"].__setitem__("text_max_len", 64), "key 'text_max_len' differs"),
    (lambda c: c.__setitem__("model_name", "dlf"), "holds model 'dlf'"),
])
def test_take_text_refuses_a_text_path_that_does_not_fit(trio, change, message):
    from combine_checkpoints import take_text

    a, b, base = trio
    other = tiny_base()
    change(other)
    with pytest.raises(CombineError, match=re.escape(message)):
        take_text(combine(a, b, base), other)
