"""DLF's paper-specific mechanisms: every loss term, the Language-Focused Attractor, the triplet margin."""

from __future__ import annotations

import pytest
import torch

from moodlens.models import build_model
from moodlens.models.dlf import triplet_margin_cosine

LABELS = torch.tensor([2.0, -1.5, 0.5, -0.5])



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("dlf")


def test_every_loss_term_is_finite_and_has_gradients(model):
    model.train()
    batch = model.example_inputs(4)
    terms = model.loss(batch, LABELS)
    expected = {"task_final", "task_shared", "task_text", "task_audio", "task_vision",
                "reconstruction", "specific", "margin", "orthogonality", "total"}
    assert set(terms) == expected
    params = [p for p in model.parameters() if p.requires_grad]
    for name, value in terms.items():
        assert torch.isfinite(value), name
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} has no gradient"


def test_text_only_batch_keeps_every_term_finite(model):
    model.train()
    batch = model.example_inputs(4)
    batch = batch.replace(present=torch.tensor([[True, False, False]] * 4))
    terms = model.loss(batch, LABELS)
    assert all(torch.isfinite(v) for v in terms.values())
    # audio/vision terms carry nothing when no sample has them
    assert terms["task_audio"].item() == 0.0 and terms["task_vision"].item() == 0.0
    terms["total"].backward()


def test_attractor_queries_with_language(model):
    """LFA: every branch (language, audio, vision as keys) returns the language sequence length,
    and the fused score moves with the text while audio and vision stay fixed."""
    model.eval()
    batch = model.example_inputs(2, text_len=7, audio_len=40, vision_len=11)
    shapes = {}
    hooks = [model.attractor[m].register_forward_hook(
        lambda mod, inp, out, m=m: shapes.__setitem__(m, tuple(out.shape))) for m in ("text", "audio", "vision")]
    try:
        with torch.no_grad():
            first = model(*batch.tensors())
            other_ids = batch.text_ids.clone()
            other_ids[:, 1:] = torch.where(batch.text_mask[:, 1:], other_ids[:, 1:] + 17, other_ids[:, 1:])
            second = model(*batch.replace(text_ids=other_ids).tensors())
    finally:
        for h in hooks:
            h.remove()
    assert shapes == {m: (2, 7, model.config.hidden_dim) for m in ("text", "audio", "vision")}
    assert (first.fused - second.fused).abs().max() > 1e-4


def test_triplet_margin_on_hand_made_features():
    mu = 0.3
    anchor = torch.tensor([1.0, 0.0])
    classes = torch.tensor([1, 1, -1])
    valid = torch.ones(3, dtype=torch.bool)
    # positive identical to the anchor, negative orthogonal: every triplet beats the margin
    far = torch.stack([anchor, anchor, torch.tensor([0.0, 1.0])])
    assert float(triplet_margin_cosine(far, classes, mu, valid)) == pytest.approx(0.0)
    # negative identical too: each triplet costs exactly mu
    near = torch.stack([anchor, anchor, anchor])
    assert float(triplet_margin_cosine(near, classes, mu, valid)) == pytest.approx(mu)
    # negative at 45 degrees: max(0, mu - 1 + cos 45) for both anchors of class 1
    mid = torch.stack([anchor, anchor, torch.tensor([1.0, 1.0])])
    expected = max(0.0, mu - 1 + 2 ** -0.5)
    assert float(triplet_margin_cosine(mid, classes, mu, valid)) == pytest.approx(expected, abs=1e-6)
    # an invalid (absent) negative removes every triplet
    assert float(triplet_margin_cosine(near, classes, mu, torch.tensor([True, True, False]))) == 0.0
