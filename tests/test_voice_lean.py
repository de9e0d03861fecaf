"""The voice lean fixes (issue 10, docs/model_card.md "Voice lean study"): three-way balanced draws
(train/mixture.py `balance: three_way`), the stored neutral offset of the voice output (`recentre_audio`,
models/hcrl_mfd.py) and clipped voice statistics (`pooled_clip_audio`). Off by default; on, they change the
voice output only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moodlens.models import build_model
from test_models_hcrl_mfd_product import PRODUCT, assert_onnx_matches_eager, scores


class _Part:
    """What train.mixture._balanced reads of a Part: per-head labels and presence."""

    def __init__(self, audio_labels):
        y = torch.tensor(audio_labels, dtype=torch.float32)
        nan = torch.full_like(y, float("nan"))
        self.head = torch.stack([y / 3, nan, y, nan], 1)
        present = torch.zeros(len(y), 3, dtype=torch.bool)
        present[:, 1] = True
        self.split = type("S", (), {"batch": type("B", (), {"present": present})()})()


def test_three_way_balance_draws_each_sign_a_third():
    from moodlens.train.mixture import _balanced

    labels = [2.0] * 2 + [0.0] * 1 + [-2.0] * 8          # RAVDESS-like: neutral and happy scarce
    part = _Part(labels)
    sign = np.sign(labels)
    three = _balanced(part, 1.0, "three_way")
    signs = _balanced(part, 1.0, "signs")
    for w in (three, signs):
        assert w.sum() == pytest.approx(len(labels))     # the dataset weight is kept on average
    assert [three[sign == c].sum() / three.sum() for c in (-1, 0, 1)] == pytest.approx([1 / 3] * 3)
    # `balance: true`: + and - equal, neutral keeps its 1-in-11 share
    assert signs[sign == 1].sum() == pytest.approx(signs[sign == -1].sum())
    assert signs[sign == 0].sum() / signs.sum() == pytest.approx(1 / 11)


def test_unknown_balance_mode_is_one_sentence(tmp_path):
    from moodlens.core.errors import DataError
    from moodlens.train.mixture import _balance_mode

    assert _balance_mode({"balance": "three_way"}, tmp_path / "d.yaml", 0) == "three_way"
    assert _balance_mode({"balance": True}, tmp_path / "d.yaml", 0) == "signs"
    assert _balance_mode({}, tmp_path / "d.yaml", 0) == ""
    with pytest.raises(DataError, match="entry 2 has balance 'thirds'"):
        _balance_mode({"balance": "thirds"}, tmp_path / "d.yaml", 1)


def _pair(seed, **extra):
    torch.manual_seed(seed)
    base = build_model("hcrl_mfd", {**PRODUCT}).eval()
    torch.manual_seed(seed)
    on = build_model("hcrl_mfd", {**PRODUCT, **extra}).eval()
    state = base.state_dict()
    if "audio_offset" in on.state_dict():
        state["audio_offset"] = on.audio_offset
    on.load_state_dict(state)
    return base, on


def test_recentre_subtracts_the_stored_offset_from_the_voice_only():
    base, on = _pair(11, recentre_audio=True)
    assert "audio_offset" in on.state_dict() and "audio_offset" not in base.state_dict()
    on.audio_offset.fill_(-0.4)
    batch = base.example_inputs(4, seed=11)
    present = torch.tensor([[True, True, True], [True, True, False], [True, False, True], [False, True, False]])
    batch = batch.replace(present=present)
    a, b = scores(base, batch), scores(on, batch)
    assert torch.allclose(b.audio, (a.audio + 0.4).clamp(-3, 3), atol=1e-5)
    assert torch.equal(a.text, b.text) and torch.equal(a.vision, b.vision)
    # late fusion (2, 1, 1): the voice counts once where present; a row without voice is untouched
    expected = a.fused.clone()
    expected[0] = a.fused[0] + 0.4 / 4
    expected[1] = a.fused[1] + 0.4 / 3
    expected[3] = a.fused[3] + 0.4
    assert torch.allclose(b.fused, expected, atol=1e-5)
    assert torch.equal(a.fused[2], b.fused[2])


def test_clipped_voice_statistics_bound_a_far_voice_and_leave_the_face():
    base, on = _pair(12, pooled_clip_audio=3.0)
    batch = base.example_inputs(3, seed=12)
    with torch.no_grad():
        for head in (base.pooled_heads["audio"], on.pooled_heads["audio"]):
            head.stat_mean.zero_()
            head.stat_log_std.zero_()
    far = batch.replace(audio=batch.audio * 0 + 40.0 * torch.sign(torch.randn(batch.audio.shape[-1])))
    near = batch.replace(audio=batch.audio.clamp(-0.5, 0.5))
    t = on.clean_inputs(*far.tensors())
    with torch.no_grad():
        clipped = on.pooled_heads["audio"](t[2], t[3], t[6][:, 1])
        at_edge = on.pooled_heads["audio"](t[2].clamp(-3, 3), t[3], t[6][:, 1])
        unclipped = base.pooled_heads["audio"](t[2], t[3], t[6][:, 1])
    assert torch.allclose(clipped, at_edge, atol=1e-5) and not torch.allclose(clipped, unclipped, atol=1e-2)
    a, b = scores(base, near), scores(on, near)            # inside +-3 sd nothing changes
    for key in ("fused", "text", "audio", "vision"):
        assert torch.allclose(getattr(a, key), getattr(b, key), atol=1e-6), key
    assert on.pooled_heads["vision"].clip == 0.0


@pytest.mark.export
def test_recentred_model_exports_to_onnx_and_matches_eager(tmp_path):
    _, model = _pair(13, recentre_audio=True)
    model.audio_offset.fill_(-0.7)   # a stored offset must travel into the ONNX graph
    assert_onnx_matches_eager(model, tmp_path / "recentred.onnx")
