"""HCRL-MFD against its paper: additive L_R (eq. 6), L_O (eq. 7), L_U as the mean of three MSEs (eq. 9),
top-k/bottom-k pair selection (eq. 11-20) with same-sample cross-modal pairs always positive (eq. 19), the
unified contrastive loss (eq. 21), the total of eq. 25, decoupling kept out of the inference path (§4.8),
per-head labels, the absent-modality embedding, and the paper configs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from moodlens.models import build_model, load_config
from moodlens.models.hcrl_mfd import (MODALITIES, Config, hierarchical_pairs, orthogonality_loss,
                                      reconstruction_loss, select_pairs, unified_contrastive_loss)

ROOT = Path(__file__).resolve().parents[1]

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


# ---- pair selection (eq. 11-20) ----------------------------------------------------------------

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


def test_pair_selection_respects_validity():
    sim = hand_made_similarity()
    cols = torch.ones(8, dtype=torch.bool)
    cols[1] = False  # sample 1 lacks this modality
    pos, neg = select_pairs(sim, DISTANCE, 0.5, 2, valid_cols=cols)
    assert indices(pos[0]) == {3, 2}
    rows = torch.ones(8, dtype=torch.bool)
    rows[4] = False
    pos, neg = select_pairs(sim, DISTANCE, 0.5, 2, valid_rows=rows)
    assert not pos[4].any() and not neg[4].any()


def test_pair_selection_with_fewer_candidates_than_k():
    sim = hand_made_similarity()[:3, :3]
    distance = torch.tensor([[0.0, 0.1, 3.0], [0.1, 0.0, 3.0], [3.0, 3.0, 0.0]])
    pos, neg = select_pairs(sim, distance, 0.5, k=2)
    assert indices(pos[0]) == {1} and indices(neg[0]) == {2}
    assert indices(pos[2]) == set() and indices(neg[2]) == {0, 1}


def unified_inputs(b: int = 6, seed: int = 0):
    """3B features (modality-major blocks in T, V, A order) whose same-sample cross-modal cosine is the
    LOWEST of every row: on the old code's rule (the diagonal only a top-k candidate) they lost."""
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(3 * b, 16, generator=g), dim=-1)
    sim = z @ z.T
    for m1 in range(3):
        for m2 in range(3):
            if m1 != m2:
                for a in range(b):
                    sim[m1 * b + a, m2 * b + a] = -1.0
    labels = torch.tensor([-2.0, -1.9, 0.0, 0.2, 2.0, 2.2])[:b].repeat(3)
    return sim, labels


def test_same_sample_cross_modal_pairs_are_always_positives():
    """Eq. 19: P_inter^a ∪ {(T^a,V^a), (T^a,A^a), (V^a,A^a)}: positives whatever their similarity."""
    b = 6
    sim, labels = unified_inputs(b)
    everything = torch.ones(3 * b, dtype=torch.bool)
    pos, neg = hierarchical_pairs(sim, labels, everything, everything, delta=0.5, k=2)
    for m1 in range(3):
        for m2 in range(3):
            for a in range(b):
                i, j = m1 * b + a, m2 * b + a
                if m1 != m2:
                    assert pos[i, j], f"(modality {m1}, sample {a}) -> modality {m2} same sample is not positive"
                    assert not neg[i, j]
                else:
                    assert not pos[i, j] and not neg[i, j]   # no self-pairs
    # ... even when the per-head labels of the two modalities differ by more than δ
    labels_far = labels.clone()
    labels_far[b:2 * b] += 3.0
    pos, _ = hierarchical_pairs(sim, labels_far, everything, everything, delta=0.5, k=2)
    assert pos[0, b] and pos[b, 0]
    # ... but not when one of the two modalities is absent for that sample
    present = everything.clone()
    present[b + 2] = False        # vision of sample 2
    pos, neg = hierarchical_pairs(sim, labels, everything, present, delta=0.5, k=2)
    assert not pos[2, b + 2] and not pos[b + 2].any() and not neg[b + 2].any() and not pos[:, b + 2].any()


def test_unified_selection_is_top_k_bottom_k_per_block_among_other_samples():
    b, k = 6, 2
    sim, labels = unified_inputs(b, seed=3)
    everything = torch.ones(3 * b, dtype=torch.bool)
    pos, neg = hierarchical_pairs(sim, labels, everything, everything, delta=0.5, k=k)
    for i in range(3 * b):
        a = i % b
        for m2 in range(3):
            cols = torch.arange(m2 * b, (m2 + 1) * b)
            others = cols[cols % b != a]
            cand_pos = others[(labels[others] - labels[i]).abs() <= 0.5]
            cand_neg = others[(labels[others] - labels[i]).abs() > 0.5]
            chosen_pos = others[pos[i, others]]
            chosen_neg = others[neg[i, others]]
            assert len(chosen_pos) == min(k, len(cand_pos)) and len(chosen_neg) == min(k, len(cand_neg))
            assert set(chosen_pos.tolist()) <= set(cand_pos.tolist())
            assert set(chosen_neg.tolist()) <= set(cand_neg.tolist())
            rest_pos = [j for j in cand_pos.tolist() if j not in chosen_pos.tolist()]
            if rest_pos and len(chosen_pos):
                assert sim[i, chosen_pos].min() >= sim[i, rest_pos].max()
            rest_neg = [j for j in cand_neg.tolist() if j not in chosen_neg.tolist()]
            if rest_neg and len(chosen_neg):
                assert sim[i, chosen_neg].max() <= sim[i, rest_neg].min()


def test_contrast_levels_keep_only_their_blocks():
    b = 6
    sim, labels = unified_inputs(b, seed=4)
    everything = torch.ones(3 * b, dtype=torch.bool)
    modality = torch.arange(3).repeat_interleave(b)
    same = modality[:, None] == modality[None, :]
    both = hierarchical_pairs(sim, labels, everything, everything, 0.5, 2, "both")
    intra = hierarchical_pairs(sim, labels, everything, everything, 0.5, 2, "intra")
    inter = hierarchical_pairs(sim, labels, everything, everything, 0.5, 2, "inter")
    for full, only_intra, only_inter in zip(both, intra, inter):
        assert torch.equal(only_intra, full & same) and torch.equal(only_inter, full & ~same)
    with pytest.raises(ValueError, match="contrast_levels"):
        hierarchical_pairs(sim, labels, everything, everything, 0.5, 2, "cross")


def test_unified_contrastive_loss_matches_eq_21():
    """One -log(exp(s_αβ/τ) / Σ_{P∪N} exp(s_αγ/τ)) per positive pair, averaged per anchor, then over anchors."""
    sim = torch.tensor([[1.0, 0.6, -0.2, 0.3], [0.6, 1.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0], [0.2, 0.0, 0.0, 1.0]])
    pos = torch.zeros(4, 4, dtype=torch.bool)
    neg = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[0, 3] = True
    neg[0, 2] = True
    pos[1, 0] = True
    neg[1, 2] = neg[1, 3] = True
    neg[2, 3] = True  # row 2 has no positive: no term; row 3 has nothing
    tau = 0.1
    e = lambda x: math.exp(x / tau)  # noqa: E731
    denominator0 = e(0.6) + e(0.3) + e(-0.2)
    row0 = (-math.log(e(0.6) / denominator0) - math.log(e(0.3) / denominator0)) / 2
    row1 = -math.log(e(0.6) / (e(0.6) + e(0.1) + e(0.0)))
    got = unified_contrastive_loss(sim, pos, neg, tau)
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


# ---- decoupling losses (eq. 6-7) ---------------------------------------------------------------

def test_reconstruction_is_additive_and_matches_eq_6():
    g = torch.Generator().manual_seed(2)
    h0 = torch.randn(3, 5, 4, generator=g)
    core = torch.randn(3, 5, 4, generator=g)
    frames = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    half = h0 * 0.5                                                             # exact in floating point
    assert reconstruction_loss(h0, half, half, frames).item() == 0.0            # H^C + H^R = H^0 exactly
    assert reconstruction_loss(h0, core, h0 - core, frames).item() < 1e-12
    redundant = torch.randn(3, 5, 4, generator=g)
    err = (h0 - core - redundant).pow(2).mean(-1)
    expected = (err[0, :3].mean() + err[1].mean()) / 2                          # sample 2 has no real frame
    assert reconstruction_loss(h0, core, redundant, frames).item() == pytest.approx(expected.item(), rel=1e-6)


class Scaled(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x, mask):
        return self.factor * x


def test_model_reconstruction_term_is_zero_when_core_plus_redundant_is_h0():
    """The old code reconstructed H^0 from [H^C; H^R] through a learned decoder: not 0 here."""
    torch.manual_seed(0)
    model = build_model("hcrl_mfd", {"dropout": 0.0}).train()
    for m in MODALITIES:
        model.core[m] = Scaled(0.3)
        model.redundant[m] = Scaled(0.7)
    batch = model.example_inputs(6, seed=1)
    terms = model.loss(batch, torch.tensor([-2.0, -1.9, 0.0, 0.1, 2.0, 2.1]))
    assert terms["reconstruction"].item() < 1e-10
    assert not hasattr(model, "decoder")
    model.redundant["audio"] = Scaled(0.5)     # now audio misses 0.2 H^0: L_R = mean over 3 of 0.04 E[H_A^0²]
    terms = model.loss(batch, torch.tensor([-2.0, -1.9, 0.0, 0.1, 2.0, 2.1]))
    assert terms["reconstruction"].item() > 1e-4


def test_orthogonality_is_zero_for_orthogonal_subspaces_and_matches_eq_7():
    g = torch.Generator().manual_seed(5)
    frames = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    # columns (each feature over the frames) of H^C orthogonal to those of H^R: (H^C)^T H^R = 0
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    c0, r0 = 3.0 * hadamard[:, :2], -2.0 * hadamard[:, 2:]
    every = torch.ones(1, 4, dtype=torch.bool)
    assert orthogonality_loss(c0[None], r0[None], every).item() == pytest.approx(0.0, abs=1e-12)
    assert orthogonality_loss(c0[None], c0[None] + r0[None], every).item() > 0.1
    core = torch.randn(2, 4, 6, generator=g)
    redundant = torch.randn(2, 4, 6, generator=g)
    expected = []
    for i, n in enumerate((4, 2)):
        c = torch.nn.functional.normalize(core[i, :n], dim=-1)
        r = torch.nn.functional.normalize(redundant[i, :n], dim=-1)
        expected.append((c.T @ r).pow(2).sum() / n ** 2)        # ||C^T R||_F^2 / L^2
    got = orthogonality_loss(core, redundant, frames)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    # both forms (L x L Gram and d x d) agree: more frames than width
    long = torch.randn(1, 9, 3, generator=g), torch.randn(1, 9, 3, generator=g)
    c, r = (torch.nn.functional.normalize(x[0], dim=-1) for x in long)
    assert orthogonality_loss(*long, torch.ones(1, 9, dtype=torch.bool)).item() == pytest.approx(
        ((c.T @ r).pow(2).sum() / 81).item(), rel=1e-5)


# ---- the model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("hcrl_mfd")


def raw_scores(model, batch):
    """Unclamped training-path scores (dropout 0), as `loss` sees them."""
    t = model.clean_inputs(*batch.tensors())
    hidden = model.encode_unimodal(*t[:6])
    masks = {"text": t[1], "audio": t[3], "vision": t[5]}
    core = {m: model.core[m](hidden[m], masks[m]) for m in MODALITIES}
    return model.predict(model.pool(core, masks, t[6]))


def test_unimodal_loss_is_the_mean_of_three_mses_and_total_follows_eq_25():
    """Eq. 9: L_U = 1/3 Σ_m MSE(ŷ_m, y) (the old code summed three L1 errors); eq. 25: L_D + L_CL + L_P."""
    torch.manual_seed(1)
    model = build_model("hcrl_mfd", {"dropout": 0.0}).train()
    batch = model.example_inputs(6, seed=2)
    labels = torch.tensor([-2.0, -1.9, 0.0, 0.1, 2.0, 2.1])
    terms = model.loss(batch, labels)
    with torch.no_grad():
        out = raw_scores(model, batch)
    expected = sum((getattr(out, m) - labels).pow(2).mean() for m in ("text", "audio", "vision")) / 3
    assert terms["unimodal"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["task"].item() == pytest.approx((out.fused - labels).abs().mean().item(), rel=1e-5)   # eq. 24
    c = model.config
    assert c.weight_contrastive == 1.0                                                           # eq. 25
    total = (c.weight_unimodal * terms["unimodal"] + c.weight_reconstruction * terms["reconstruction"]
             + c.weight_orthogonality * terms["orthogonality"] + terms["contrastive"] + terms["task"])
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)


def test_per_head_labels_supervise_each_head_with_its_own_column():
    """(B, 4) labels fused/text/audio/vision, NaN = unknown: L_U takes each head's column over its known
    rows, L_P the fused column; a (B,) label equals four identical columns."""
    torch.manual_seed(1)
    model = build_model("hcrl_mfd", {"dropout": 0.0}).train()
    batch = model.example_inputs(6, seed=2)
    nan = float("nan")
    y = torch.tensor([-2.0, -1.9, 0.0, 0.1, 2.0, 2.1])
    columns = torch.stack([y, y, y, y], 1)
    same = model.loss(batch, columns)
    plain = model.loss(batch, y)
    for term in ("task", "unimodal", "contrastive", "total"):
        assert same[term].item() == pytest.approx(plain[term].item(), rel=1e-6), term
    labels = torch.tensor([[nan, 1.0, nan, nan], [nan, -1.0, nan, nan], [nan, nan, 2.0, nan],
                           [nan, nan, -2.0, nan], [nan, nan, nan, 0.5], [0.3, nan, nan, -0.5]])
    terms = model.loss(batch, labels)
    with torch.no_grad():
        out = raw_scores(model, batch)
    mse = {"text": ((out.text[:2] - labels[:2, 1]) ** 2).mean(),
           "audio": ((out.audio[2:4] - labels[2:4, 2]) ** 2).mean(),
           "vision": ((out.vision[4:] - labels[4:, 3]) ** 2).mean()}
    assert terms["unimodal"].item() == pytest.approx(sum(mse.values()).item() / 3, rel=1e-5)
    assert terms["task"].item() == pytest.approx((out.fused[5] - 0.3).abs().item(), rel=1e-5)
    # text labels only (the default weights' MOSI data): L_U is the text MSE alone, the fused loss 0
    text_only = torch.full((6, 4), nan)
    text_only[:, 1] = y
    terms = model.loss(batch.replace(present=torch.tensor([[True, False, False]] * 6)), text_only)
    assert torch.isfinite(terms["total"])
    assert terms["task"].item() == 0.0 and terms["unimodal"].item() > 0


def test_decoupling_runs_only_in_training(model):
    calls = {"redundant": 0, "to_shared": 0, "core": 0}
    hooks = []
    for key in calls:
        for sub in getattr(model, key).values():
            hooks.append(sub.register_forward_hook(lambda *a, key=key: calls.__setitem__(key, calls[key] + 1)))
    batch = model.example_inputs(4)
    model.eval()
    with torch.no_grad():
        model(*batch.tensors())
    assert calls == {"redundant": 0, "to_shared": 0, "core": 3}
    model.train()
    terms = model.loss(batch, torch.tensor([-1.0, -0.9, 1.0, 1.2]))
    model.eval()
    for h in hooks:
        h.remove()
    assert calls["redundant"] == 3 and calls["to_shared"] == 3
    assert {"task", "unimodal", "reconstruction", "orthogonality", "contrastive", "total"} == set(terms)


def test_fusion_concatenates_the_native_width_core_features_in_t_v_a_order():
    model = build_model("hcrl_mfd", {"text_hidden": 0})
    c = model.config
    assert model.widths == {"text": c.text_dim, "vision": 128, "audio": 64}      # d_T = encoder width, d_V, d_A
    assert isinstance(model.text_proj, nn.Identity)
    assert model.fusion.net[0].in_features == c.text_dim + 128 + 64                # eq. 22
    assert MODALITIES == ("text", "vision", "audio")


def test_absent_modality_uses_the_learned_embedding_not_zeros(model):
    with torch.no_grad():
        for p in model.absent.values():
            p.copy_(torch.randn_like(p))
    batch = model.example_inputs(3, seed=4)
    absent_audio = batch.replace(present=torch.tensor([[True, False, True]] * 3))
    zero_audio = batch.replace(audio=torch.zeros_like(batch.audio))
    model.eval()
    with torch.no_grad():
        out_absent = model(*absent_audio.tensors())
        out_zero = model(*zero_audio.tensors())
        expected_audio = model.unimodal_heads["audio"](model.absent["audio"][None]).squeeze(-1).clamp(-3.0, 3.0)
    # every row with audio absent gets the same audio score: the head applied to the absent embedding
    assert torch.allclose(out_absent.audio, expected_audio.expand(3), atol=1e-6)
    assert not torch.allclose(out_absent.fused, out_zero.fused)


def test_contrastive_term_ignores_samples_without_the_modality(model):
    labels = torch.tensor([-2.0, -1.9, 0.0, 0.1, 2.0, 2.1])
    present = torch.ones(6, 3, dtype=torch.bool)
    present[[1, 4], 2] = False  # vision absent for two samples
    g = torch.Generator().manual_seed(1)
    pooled = {m: torch.randn(6, model.widths[m], generator=g) for m in MODALITIES}
    reference = model.hierarchical_contrastive(pooled, labels, present)
    pooled["vision"][[1, 4]] = torch.randn(2, model.widths["vision"], generator=g) * 10
    changed = model.hierarchical_contrastive(pooled, labels, present)
    assert torch.isfinite(reference)
    assert torch.allclose(reference, changed)


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
        model.absent["audio"] += 3.0
    after = {k: v.detach() for k, v in model.loss(batch, labels).items()}
    for term in ("unimodal", "contrastive", "reconstruction", "orthogonality"):
        assert torch.allclose(before[term], after[term], atol=1e-6), term
    assert not torch.allclose(before["task"], after["task"])


def test_yaml_mirrors_the_config_defaults():
    from_yaml = load_config("hcrl_mfd")
    assert dataclasses.asdict(from_yaml) == dataclasses.asdict(Config())
    assert (Config.audio_hidden, Config.vision_hidden, Config.top_k) == (64, 128, 2)  # d_A, d_V, k of the paper
    assert Config.weight_contrastive == 1.0                                            # eq. 25


def test_unknown_contrast_level_is_refused_in_one_sentence():
    from moodlens.core.errors import ConfigError

    with pytest.raises(ConfigError, match="contrast_levels must be one of both, intra, inter"):
        build_model("hcrl_mfd", {"contrast_levels": "cross"}, load_text_weights=False)


# ---- paper configs -----------------------------------------------------------------------------

PAPER = {"mosi": {"batch_size": 32, "epochs": 30}, "mosei": {"batch_size": 64, "epochs": 50}}   # §4.4


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_paper_config_parses_into_valid_train_and_model_configs(dataset):
    from moodlens.train.trainer import load_train_config

    path = ROOT / "configs" / "train" / f"hcrl_mfd_paper_{dataset}.yaml"
    train = load_train_config(path)
    assert train.model == "hcrl_mfd"
    assert (train.batch_size, train.epochs) == (PAPER[dataset]["batch_size"], PAPER[dataset]["epochs"])
    assert train.text_learning_rate == 1e-5                                          # BERT lr (§4.4)
    overrides = dict(train.model_overrides)
    assert overrides["text_encoder"] == "bert-base-uncased"                          # a path the user provides
    assert overrides["text_encoder_trainable_layers"] == -1                          # BERT fine-tuned
    config = load_config("hcrl_mfd", overrides)
    assert (config.text_hidden, config.vision_hidden, config.audio_hidden, config.top_k) == (0, 128, 64, 2)
    assert config.weight_contrastive == 1.0 and config.contrast_levels == "both"
    # the model builds from it (shapes only; BERT weights are not needed for that)
    arch = {**overrides, "text_encoder": None, "text_dim": 768}
    model = build_model("hcrl_mfd", arch, load_text_weights=False)
    assert model.fusion.net[0].in_features == model.config.text_dim + 128 + 64


def test_paper_config_names_the_missing_bert_in_one_sentence(tmp_path):
    from moodlens.core.errors import MoodlensError

    with pytest.raises(MoodlensError) as err:
        build_model("hcrl_mfd", {"text_encoder": str(tmp_path / "bert-base-uncased")})
    message = str(err.value)
    assert "bert-base-uncased" in message and "\n" not in message
