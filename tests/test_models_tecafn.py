"""TeCaFN's paper-specific mechanisms: loss terms, the replacement gate (Table 2), hard-negative
mining (Algorithm 1), and the lean inference path."""

from __future__ import annotations

import pytest
import torch

from moodlens.models import build_model
from moodlens.models.batch import MultimodalBatch
from moodlens.models.tecafn import GATE_CASES, mine_hard_negatives

LABELS = torch.tensor([2.0, -1.5, 0.5, -0.5])
SMALL = {"self_layers": 1, "cross_layers": 1}  # the mechanisms do not depend on depth; keeps tests fast



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tecafn", SMALL)


def tiny_batch(b: int, present: torch.Tensor | None = None) -> MultimodalBatch:
    """A cheap batch for gate statistics (the gate only reads batch size and presence)."""
    return MultimodalBatch(
        text_ids=torch.full((b, 2), 101), text_mask=torch.ones(b, 2, dtype=torch.bool),
        audio=torch.zeros(b, 2, 40), audio_mask=torch.ones(b, 2, dtype=torch.bool),
        vision=torch.zeros(b, 2, 64), vision_mask=torch.ones(b, 2, dtype=torch.bool),
        present=present if present is not None else torch.ones(b, 3, dtype=torch.bool))


def test_every_loss_term_is_finite_and_has_gradients(model):
    model.train()
    batch = model.example_inputs(4)
    _, extras = model.training_batch(batch, LABELS, torch.Generator().manual_seed(1))
    terms = model.loss(batch, LABELS, **extras)
    assert set(terms) == {"task", "contrastive_unimodal", "contrastive_fused", "pairwise", "unimodal", "total"}
    params = [p for p in model.parameters() if p.requires_grad]
    for name, value in terms.items():
        assert torch.isfinite(value), name
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} has no gradient"


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_gate_produces_the_four_table2_cases_at_probability_p(p):
    gate = build_model("tecafn", {**SMALL, "replace_prob": p}, load_text_weights=False)
    n = 20_000
    _, extras = gate.training_batch(tiny_batch(n), torch.zeros(n), torch.Generator().manual_seed(7))
    audio_replaced, vision_replaced = ~extras["audio_paired"], ~extras["vision_paired"]
    expected = {"paired": (1 - p) ** 2, "audio_replaced": p * (1 - p),
                "vision_replaced": (1 - p) * p, "both_replaced": p * p}
    for case, (a, v) in GATE_CASES.items():
        freq = ((audio_replaced == a) & (vision_replaced == v)).float().mean().item()
        assert freq == pytest.approx(expected[case], abs=0.015), case
    assert int(extras["audio_pick"].max()) == gate.config.hard_negatives - 1
    # same seed, same draws
    _, again = gate.training_batch(tiny_batch(n), torch.zeros(n), torch.Generator().manual_seed(7))
    assert torch.equal(again["audio_paired"], extras["audio_paired"])


def test_gate_never_replaces_an_absent_modality_or_a_lone_sample():
    gate = build_model("tecafn", {**SMALL, "replace_prob": 1.0}, load_text_weights=False)
    present = torch.tensor([[True, False, True]] * 50)
    _, extras = gate.training_batch(tiny_batch(50, present), torch.zeros(50), torch.Generator().manual_seed(0))
    assert bool(extras["audio_paired"].all()) and not bool(extras["vision_paired"].any())
    _, lone = gate.training_batch(tiny_batch(1), torch.zeros(1), torch.Generator().manual_seed(0))
    assert bool(lone["audio_paired"].all()) and bool(lone["vision_paired"].all())


def test_hard_negative_mining_takes_the_most_similar_other_samples():
    similarity = torch.tensor([
        [0.9, 0.1, 0.8, 0.7, 0.2],
        [0.3, 0.9, 0.2, 0.6, 0.5],
        [0.1, 0.2, 0.9, 0.3, 0.4],
        [0.5, 0.4, 0.3, 0.9, 0.2],
        [0.2, 0.3, 0.1, 0.0, 0.9],
    ])
    candidates = torch.ones(5, 5, dtype=torch.bool)
    candidates[:, 4] = False  # sample 4 lacks the modality: never a source
    replace = torch.tensor([True, True, True, True, False])
    for pick, expected in [(0, [2, 3, 3, 0, 4]), (1, [3, 0, 1, 1, 4]), (2, [1, 2, 0, 2, 4])]:
        source, replaced = mine_hard_negatives(similarity, candidates, replace, torch.full((5,), pick), 3)
        assert source.tolist() == expected, pick
        assert replaced.tolist() == [True, True, True, True, False]
    # a sample chosen for replacement with no other candidate stays paired
    source, replaced = mine_hard_negatives(similarity, torch.eye(5, dtype=torch.bool), replace,
                                           torch.zeros(5, dtype=torch.long), 3)
    assert source.tolist() == [0, 1, 2, 3, 4] and not bool(replaced.any())


def test_replaced_pairs_change_the_training_fusion_and_text_only_stays_finite(model):
    model.eval()  # no dropout, so the only difference is the swap
    batch = model.example_inputs(4)
    zeros = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        paired = model.loss(batch, LABELS, audio_paired=torch.ones(4, dtype=torch.bool),
                            vision_paired=torch.ones(4, dtype=torch.bool), audio_pick=zeros, vision_pick=zeros)
        swapped = model.loss(batch, LABELS, audio_paired=torch.zeros(4, dtype=torch.bool),
                             vision_paired=torch.zeros(4, dtype=torch.bool), audio_pick=zeros, vision_pick=zeros)
    assert abs(paired["task"].item() - swapped["task"].item()) > 1e-6
    assert paired["pairwise"].item() != pytest.approx(swapped["pairwise"].item())
    model.train()
    text_only = batch.replace(present=torch.tensor([[True, False, False]] * 4))
    _, extras = model.training_batch(text_only, LABELS, torch.Generator().manual_seed(0))
    terms = model.loss(text_only, LABELS, **extras)
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["pairwise"].item() == 0.0 and terms["contrastive_unimodal"].item() == 0.0
    terms["total"].backward()


def test_inference_path_runs_no_training_machinery(model):
    model.eval()
    called = []
    hooks = [getattr(model, name).register_forward_hook(lambda *a, name=name: called.append(name))
             for name in ("pair_audio", "pair_vision")]
    try:
        with torch.no_grad():
            out = model(*model.example_inputs(3).tensors())
    finally:
        for h in hooks:
            h.remove()
    assert called == []
    r = model.config.output_range
    assert all(t.shape == (3,) and bool((t.abs() <= r).all()) for t in out)
