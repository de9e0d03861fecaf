"""HCRL-MFD's own mechanisms: label-threshold candidates + top-k/bottom-k pair selection (eq. 11-20)
on hand-made similarity matrices, the multi-positive InfoNCE (eq. 21), decoupling kept out of the
inference path, the absent-modality embedding, and the YAML mirroring the paper defaults."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from moodlens.models import build_model, load_config
from moodlens.models.hcrl_mfd import Config, multi_positive_info_nce, select_pairs

# Labels: anchor 0 (y = 0.0) has positive candidates 1, 2, 3 (|Δy| <= 0.5) and negatives 4..7.
LABELS = torch.tensor([0.0, 0.1, 0.2, 0.3, 2.0, 2.5, -2.0, -1.0])
DISTANCE = (LABELS[:, None] - LABELS[None, :]).abs()


def hand_made_similarity() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(8, 8, generator=g) * 2 - 1
    sim = (sim + sim.T) / 2
    sim.fill_diagonal_(1.0)
    #            self   pos   pos   pos   neg   neg   neg   neg
    sim[0] = torch.tensor([1.0, 0.9, 0.1, 0.5, 0.8, -0.3, 0.0, -0.6])
    return sim


def indices(mask_row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask_row).flatten().tolist())



def test_pair_selection_takes_most_similar_positives_and_least_similar_negatives():
    pos, neg = select_pairs(hand_made_similarity(), DISTANCE, delta=0.5, k=2)
    assert indices(pos[0]) == {1, 3}      # top-2 of the positive candidates {1: .9, 2: .1, 3: .5}
    assert indices(neg[0]) == {7, 5}      # bottom-2 of the negative candidates {4: .8, 5: -.3, 6: 0, 7: -.6}


def test_pair_selection_properties_on_every_row():
    sim = hand_made_similarity()
    pos, neg = select_pairs(sim, DISTANCE, delta=0.5, k=2)
    eye = torch.eye(8, dtype=torch.bool)
    assert not (pos & eye).any() and not (neg & eye).any()
    assert not (pos & neg).any()
    for i in range(8):
        cand_pos = (DISTANCE[i] <= 0.5) & ~eye[i]
        cand_neg = DISTANCE[i] > 0.5
        assert (pos[i] <= cand_pos).all() and (neg[i] <= cand_neg).all()
        assert pos[i].sum() == min(2, int(cand_pos.sum()))
        assert neg[i].sum() == min(2, int(cand_neg.sum()))
        if (cand_pos & ~pos[i]).any():
            assert sim[i][pos[i]].min() >= sim[i][cand_pos & ~pos[i]].max()
        if (cand_neg & ~neg[i]).any():
            assert sim[i][neg[i]].max() <= sim[i][cand_neg & ~neg[i]].min()


def test_pair_selection_respects_validity_and_keeps_the_diagonal_for_inter_modal_pairs():
    sim = hand_made_similarity()
    cols = torch.ones(8, dtype=torch.bool)
    cols[1] = False  # sample 1 lacks this modality
    pos, neg = select_pairs(sim, DISTANCE, 0.5, 2, valid_cols=cols)
    assert indices(pos[0]) == {3, 2}
    rows = torch.ones(8, dtype=torch.bool)
    rows[4] = False
    pos, neg = select_pairs(sim, DISTANCE, 0.5, 2, valid_rows=rows)
    assert not pos[4].any() and not neg[4].any()
    # inter-modal: the same sample in the other modality is the most natural positive
    pos, _ = select_pairs(sim, DISTANCE, 0.5, 2, exclude_diagonal=False)
    assert 0 in indices(pos[0])  # sim[0, 0] = 1.0 is the largest


def test_pair_selection_with_fewer_candidates_than_k():
    sim = hand_made_similarity()[:3, :3]
    distance = torch.tensor([[0.0, 0.1, 3.0], [0.1, 0.0, 3.0], [3.0, 3.0, 0.0]])
    pos, neg = select_pairs(sim, distance, 0.5, k=2)
    assert indices(pos[0]) == {1} and indices(neg[0]) == {2}
    assert indices(pos[2]) == set() and indices(neg[2]) == {0, 1}


def test_multi_positive_info_nce_matches_the_formula():
    sim = torch.tensor([[1.0, 0.6, -0.2, 0.3], [0.6, 1.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0], [0.2, 0.0, 0.0, 1.0]])
    pos = torch.zeros(4, 4, dtype=torch.bool)
    neg = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[0, 3] = True
    neg[0, 2] = True
    pos[1, 0] = True
    neg[1, 2] = neg[1, 3] = True
    pos[2, 3] = True  # row 2 has no negative: not usable; row 3 has nothing
    tau = 0.1
    e = lambda x: math.exp(x / tau)  # noqa: E731
    row0 = -math.log((e(0.6) + e(0.3)) / (e(0.6) + e(0.3) + e(-0.2)))
    row1 = -math.log(e(0.6) / (e(0.6) + e(0.1) + e(0.0)))
    got = multi_positive_info_nce(sim, pos, neg, tau)
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("hcrl_mfd")


def test_decoupling_runs_only_in_training(model):
    calls = {"redundant": 0, "decoder": 0, "core": 0}
    hooks = []
    for key in calls:
        for sub in getattr(model, key).values():
            hooks.append(sub.register_forward_hook(lambda *a, key=key: calls.__setitem__(key, calls[key] + 1)))
    batch = model.example_inputs(4)
    model.eval()
    with torch.no_grad():
        model(*batch.tensors())
    assert calls == {"redundant": 0, "decoder": 0, "core": 3}
    model.train()
    terms = model.loss(batch, torch.tensor([-1.0, -0.9, 1.0, 1.2]))
    model.eval()
    for h in hooks:
        h.remove()
    assert calls["redundant"] == 3 and calls["decoder"] == 3
    assert {"task", "unimodal", "reconstruction", "orthogonality", "contrastive_intra", "contrastive_inter",
            "total"} <= set(terms)


def test_absent_modality_uses_the_learned_embedding_not_zeros(model):
    with torch.no_grad():
        model.absent.copy_(torch.randn_like(model.absent))
    batch = model.example_inputs(3, seed=4)
    absent_audio = batch.replace(present=torch.tensor([[True, False, True]] * 3))
    zero_audio = batch.replace(audio=torch.zeros_like(batch.audio))
    model.eval()
    with torch.no_grad():
        out_absent = model(*absent_audio.tensors())
        out_zero = model(*zero_audio.tensors())
        expected_audio = model.unimodal_heads["audio"](model.absent[1:2]).squeeze(-1).clamp(-3.0, 3.0)
    # every row with audio absent gets the same audio score: the head applied to the absent embedding
    assert torch.allclose(out_absent.audio, expected_audio.expand(3), atol=1e-6)
    assert not torch.allclose(out_absent.fused, out_zero.fused)


def test_contrastive_terms_ignore_samples_without_the_modality(model):
    labels = torch.tensor([-2.0, -1.9, 0.0, 0.1, 2.0, 2.1])
    present = torch.ones(6, 3, dtype=torch.bool)
    present[[1, 4], 2] = False  # vision absent for two samples
    g = torch.Generator().manual_seed(1)
    features = {m: torch.randn(6, model.config.shared_dim, generator=g) for m in ("text", "audio", "vision")}
    reference = model.hierarchical_contrastive(features, labels, present)
    features["vision"][[1, 4]] = torch.randn(2, model.config.shared_dim, generator=g) * 10
    changed = model.hierarchical_contrastive(features, labels, present)
    for level in ("intra", "inter"):
        assert torch.isfinite(reference[level])
        assert torch.allclose(reference[level], changed[level])


def test_yaml_mirrors_the_paper_defaults():
    from_yaml = load_config("hcrl_mfd")
    assert dataclasses.asdict(from_yaml) == dataclasses.asdict(Config())
    assert (Config.audio_hidden, Config.vision_hidden, Config.top_k) == (64, 128, 2)  # d_A, d_V, k of the paper


def test_unimodal_loss_skips_samples_without_the_modality():
    """The 'absent audio' embedding feeds the fusion (so the task loss moves when it moves) but the
    unimodal loss (eq. 9) must not count the audio head of rows without audio."""
    model = build_model("hcrl_mfd", {"dropout": 0.0})
    batch = model.example_inputs(6, seed=8)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[[0, 3], 1] = False
    batch = batch.replace(present=present)
    labels = torch.tensor([-2.0, -1.8, 0.5, 0.7, 2.0, 2.2])
    model.train()
    before = {k: v.detach() for k, v in model.loss(batch, labels).items()}
    with torch.no_grad():
        model.absent[1] += 3.0
    after = {k: v.detach() for k, v in model.loss(batch, labels).items()}
    for term in ("unimodal", "contrastive_intra", "contrastive_inter", "reconstruction", "orthogonality"):
        assert torch.allclose(before[term], after[term], atol=1e-6), term
    assert not torch.allclose(before["task"], after["task"])
