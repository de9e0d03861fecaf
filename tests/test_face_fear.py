"""`pooled_exp_vision` (models/hcrl_mfd.py; scripts/probe_face_fear.py): the face head pools exp of the window mean
of its slice, the expression CNN's (geometric-mean) probabilities instead of its log-probabilities. Off by default:
the face head then reads the log-probabilities exactly as before."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from moodlens.core.errors import ConfigError
from test_face_expression import _model


def _log_probs(batch, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch.vision.shape[:2] + (7,), generator=g)
    vision = batch.vision.clone()
    vision[..., 64:] = torch.log_softmax(logits, -1)
    return replace(batch, vision=vision)


def test_the_face_head_pools_probabilities_of_the_window_mean():
    base = _model(pooled_inputs_vision=[64, 71])
    on = _model(pooled_inputs_vision=[64, 71], pooled_exp_vision=True)
    on.load_state_dict(base.state_dict())                # same weights: only the pooled statistics differ
    batch = _log_probs(base.example_inputs(4, seed=3), 3)
    head_off, head_on = base.pooled_heads["vision"], on.pooled_heads["vision"]
    mean = head_off.statistics(batch.vision[..., 64:], batch.vision_mask)
    stats = head_on.statistics(batch.vision[..., 64:], batch.vision_mask)
    assert torch.allclose(stats, mean.exp()) and bool((stats <= 1.0).all())   # exp after the window mean
    with torch.no_grad():
        a, b = base(*batch.tensors()), on(*batch.tensors())
    assert not torch.allclose(a.vision, b.vision, atol=1e-4)
    assert torch.equal(a.audio, b.audio) and torch.equal(a.text, b.text)     # the voice and words untouched
    terms = on.train().loss(batch, torch.tensor([2.0, -2.0, -2.0, 0.0]))
    assert torch.isfinite(terms["pooled"]) and terms["pooled"] > 0
    assert torch.all(on.pooled_heads["vision"].stat_mean <= 1.0)             # running stats of probabilities


def test_off_by_default_and_refused_without_a_slice():
    assert _model(pooled_inputs_vision=[64, 71]).pooled_heads["vision"].exp is False
    assert _model().config.pooled_exp_vision is False
    with pytest.raises(ConfigError) as err:
        _model(pooled_exp_vision=True)
    assert "pooled_exp_vision needs pooled_inputs_vision" in " ".join(str(err.value).split())


@pytest.mark.export
def test_a_probability_face_head_exports_to_onnx_and_matches_eager(tmp_path):
    from test_models_hcrl_mfd_product import assert_onnx_matches_eager

    model = _model(pooled_inputs_vision=[64, 71], pooled_exp_vision=True, pooled_mirror=["vision"])
    head = model.pooled_heads["vision"]
    head.stat_mean.fill_(0.15)                           # probabilities' statistics: exp must be in the graph
    head.stat_log_std.fill_(-2.0)
    assert_onnx_matches_eager(model, tmp_path / "probs.onnx")
