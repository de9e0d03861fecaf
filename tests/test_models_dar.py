"""DAR's paper-specific mechanisms: loss terms, random erasure, the alternately-trained CLUB estimator."""

from __future__ import annotations

import pytest
import torch

from moodlens.models import build_model
from moodlens.models.dar import UNK_TOKEN_ID, club_upper_bound, random_erasure

LABELS = torch.tensor([2.0, -1.5, 0.5, -0.5])



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("dar")


def test_every_loss_term_is_finite_and_has_gradients_but_not_into_club(model):
    model.train()
    batch = model.example_inputs(4)
    erased, extras = model.training_batch(batch, LABELS, torch.Generator().manual_seed(0))
    terms = model.loss(erased, LABELS, **extras)
    assert set(terms) == {"task", "unimodal", "restore", "similarity", "club", "total"}
    club_ids = {id(p) for p in model.auxiliary_parameters()}
    main = [p for p in model.parameters() if p.requires_grad and id(p) not in club_ids]
    for name, value in terms.items():
        assert torch.isfinite(value), name
        grads = torch.autograd.grad(value, main, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} has no gradient"
    model.zero_grad(set_to_none=True)
    terms["total"].backward()
    assert all(p.grad is None for p in model.auxiliary_parameters())


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_erasure_removes_the_configured_proportion(model, ratio):
    batch = model.example_inputs(6, text_len=20, audio_len=40, vision_len=16, seed=3)
    batch = batch.replace(present=torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]],
                                               dtype=torch.bool))
    ids = batch.text_ids.clone()
    ids[:, 0] = 101
    last = batch.text_mask.sum(1) - 1
    ids[torch.arange(6), last] = 102  # [SEP] at the end of every sentence
    batch = batch.replace(text_ids=ids)
    erased, where = random_erasure(batch, ratio, UNK_TOKEN_ID, torch.Generator().manual_seed(1))
    present = batch.present
    # text: a round(ratio * n) of the real, non-special tokens become [UNK]; nothing else changes
    erasable_text = batch.text_mask & (ids != 101) & (ids != 102) & present[:, :1]
    assert torch.equal(where["text"].sum(1), torch.round(erasable_text.sum(1) * ratio).long())
    assert bool((erased.text_ids[where["text"]] == UNK_TOKEN_ID).all())
    assert torch.equal(erased.text_ids[~where["text"]], ids[~where["text"]])
    assert not bool((where["text"] & ~erasable_text).any())
    # audio / vision: that share of real frames of present samples become zeros, the rest untouched
    for m, i in (("audio", 1), ("vision", 2)):
        mask = getattr(batch, f"{m}_mask") & present[:, i:i + 1]
        assert torch.equal(where[m].sum(1), torch.round(mask.sum(1) * ratio).long()), m
        assert not bool((where[m] & ~mask).any()), m
        assert bool((getattr(erased, m)[where[m]] == 0).all()), m
        assert torch.equal(getattr(erased, m)[~where[m]], getattr(batch, m)[~where[m]]), m
    # different draws erase different positions
    _, other = random_erasure(batch, ratio, UNK_TOKEN_ID, torch.Generator().manual_seed(2))
    assert not torch.equal(other["audio"], where["audio"])


def test_training_batch_erases_and_keeps_the_clean_batch_for_restoration(model):
    batch = model.example_inputs(4, audio_len=30)
    erased, extras = model.training_batch(batch, LABELS, torch.Generator().manual_seed(0))
    assert extras["clean_batch"] is batch
    zeroed = (erased.audio == 0).all(-1) & batch.audio_mask
    expected = torch.round(batch.audio_mask.sum(1) * model.config.erase_ratio).long()
    assert torch.equal(zeroed.sum(1), expected)


def test_club_auxiliary_step_lowers_its_own_loss(model):
    model.train()
    torch.manual_seed(0)
    batch = model.example_inputs(8, seed=5)
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.Adam(model.auxiliary_parameters(), lr=1e-2)
    encoder_before = [p.detach().clone() for p in model.common_encoder.parameters()]
    first = None
    for _ in range(10):
        optimizer.zero_grad(set_to_none=True)
        loss = model.auxiliary_loss(batch, torch.zeros(8))
        first = loss.item() if first is None else first
        loss.backward()
        # only the variational networks receive gradients from their own loss
        assert all(p.grad is None for p in model.common_encoder.parameters())
        optimizer.step()
    assert loss.item() < first - 0.1 * abs(first)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.common_encoder.parameters()))


def test_club_upper_bound_separates_dependent_from_independent_pairs():
    torch.manual_seed(0)
    b, k, d = 16, 4, 8
    independent = torch.randn(b, k, d)
    valid = torch.ones(b, dtype=torch.bool)
    logvar = torch.zeros(b, k, d)
    dependent = club_upper_bound(independent.clone(), logvar, independent, valid)   # q predicts i exactly
    unrelated = club_upper_bound(torch.randn(b, k, d), logvar, independent, valid)
    assert dependent.item() > 1.0 and abs(unrelated.item()) < dependent.item() / 4


def test_text_only_batch_keeps_every_term_finite_and_inference_is_lean(model):
    model.train()
    batch = model.example_inputs(4).replace(present=torch.tensor([[True, False, False]] * 4))
    erased, extras = model.training_batch(batch, LABELS, torch.Generator().manual_seed(0))
    terms = model.loss(erased, LABELS, **extras)
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["similarity"].item() == 0.0
    terms["total"].backward()
    model.eval()
    called = []
    hooks = [mod.register_forward_hook(lambda *a: called.append(1))
             for mod in list(model.club.values()) + list(model.restore.values())]
    try:
        with torch.no_grad():
            model(*model.example_inputs(2).tensors())
    finally:
        for h in hooks:
            h.remove()
    assert called == []


def test_alignment_gives_the_common_length_and_width_for_any_input_length(model):
    model.eval()
    k, d = model.config.common_length, model.config.hidden_dim
    for lt, la, lv in [(5, 7, 3), (30, 200, 45)]:
        batch = model.example_inputs(2, text_len=lt, audio_len=la, vision_len=lv)
        cleaned = model.clean_inputs(*batch.tensors())
        with torch.no_grad():
            common, independent = model.disentangle(*cleaned[:6])
        for m in ("text", "audio", "vision"):
            assert common[m].shape == (2, k, d) and independent[m].shape == (2, k, d), (m, lt, la, lv)
