"""DashFusion's own mechanisms: bottleneck tokens halved every fusion layer (eq. 6-8), absent
streams kept out of the shared bottleneck, hard-negative supervised contrast, auxiliary unimodal
heads, and the YAML mirroring the paper defaults."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from moodlens.models import build_model, load_config
from moodlens.models.dashfusion import Config, HierarchicalBottleneckFusion, supervised_contrastive_hard
from moodlens.core.errors import ConfigError



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("dashfusion").eval()


def test_bottleneck_tokens_halve_every_layer(model):
    assert model.fusion.token_counts == [8, 4, 2]
    with torch.no_grad():
        assert model.bottleneck_token_counts(model.example_inputs(2)) == [8, 4, 2, 1]


def test_bottleneck_schedule_follows_the_config():
    fusion = HierarchicalBottleneckFusion(dim=16, heads=2, tokens=16, layers=4, streams=3, dropout=0.0)
    assert fusion.token_counts == [16, 8, 4, 2]
    streams = [torch.randn(2, 5, 16) for _ in range(3)]
    masks = [torch.ones(2, 5, dtype=torch.bool)] * 3
    out_streams, bottleneck, history = fusion(streams, masks, torch.ones(2, 3, dtype=torch.bool),
                                              return_history=True)
    assert [h.shape[1] for h in history] == [16, 8, 4, 2, 1]
    assert bottleneck.shape == (2, 1, 16) and all(s.shape == (2, 5, 16) for s in out_streams)
    with pytest.raises(ConfigError, match="bottleneck_tokens"):
        HierarchicalBottleneckFusion(dim=16, heads=2, tokens=6, layers=3, streams=3, dropout=0.0)


def test_absent_stream_does_not_reach_the_bottleneck_or_other_streams():
    torch.manual_seed(1)
    fusion = HierarchicalBottleneckFusion(dim=16, heads=2, tokens=8, layers=3, streams=3, dropout=0.0).eval()
    streams = [torch.randn(2, 5, 16) for _ in range(3)]
    masks = [torch.ones(2, 5, dtype=torch.bool)] * 3
    present = torch.tensor([[True, False, True], [True, True, True]])
    with torch.no_grad():
        ref_streams, ref_bottleneck = fusion(streams, masks, present)
        # a random (not constant) change: LayerNorm cancels a constant shift of a stream, so "+ 5.0" can leave
        # the present row unmoved up to float noise, which made this test pass or fail by CPU
        moved = [streams[0], streams[1] + 3.0 * torch.randn(2, 5, 16), streams[2]]
        new_streams, new_bottleneck = fusion(moved, masks, present)
    # row 0 has stream 1 absent: nothing else moves; row 1 has it present: everything moves
    assert torch.allclose(ref_bottleneck[0], new_bottleneck[0])
    assert torch.allclose(ref_streams[0][0], new_streams[0][0]) and torch.allclose(ref_streams[2][0], new_streams[2][0])
    assert not torch.allclose(ref_bottleneck[1], new_bottleneck[1])


def test_hard_negative_supervised_contrast_matches_the_formula():
    # 2-d unit features at known angles: anchors 0,1 are class A; 2 (close to 0) and 3 (far) are class B.
    angles = torch.tensor([0.0, 0.5, 0.3, 3.0])
    features = torch.stack([angles.cos(), angles.sin()], 1)
    classes = torch.tensor([0, 0, 1, 1])
    valid = torch.tensor([True, True, True, True])
    tau = 0.5
    cos = lambda a, b: math.cos(a - b)  # noqa: E731
    e = lambda x: math.exp(x / tau)     # noqa: E731
    # with one hard negative, anchor 0 keeps sample 2 (cos .955) and drops sample 3 (cos -.99)
    row0 = -math.log(e(cos(0, .5)) / (e(cos(0, .5)) + e(cos(0, .3))))
    row1 = -math.log(e(cos(.5, 0)) / (e(cos(.5, 0)) + e(cos(.5, .3))))
    row2 = -math.log(e(cos(.3, 3.0)) / (e(cos(.3, 3.0)) + e(cos(.3, .5))))  # hardest: sample 1
    row3 = -math.log(e(cos(3.0, .3)) / (e(cos(3.0, .3)) + e(cos(3.0, .5))))
    got = supervised_contrastive_hard(features, classes, tau, hard_negatives=1, valid=valid)
    assert got.item() == pytest.approx((row0 + row1 + row2 + row3) / 4, rel=1e-4)
    # sample 2 invalid: anchor 0 falls back to its remaining negative, anchor 2 drops out
    valid2 = torch.tensor([True, True, False, True])
    r0 = -math.log(e(cos(0, .5)) / (e(cos(0, .5)) + e(cos(0, 3.0))))
    r1 = -math.log(e(cos(.5, 0)) / (e(cos(.5, 0)) + e(cos(.5, 3.0))))
    got = supervised_contrastive_hard(features, classes, tau, hard_negatives=1, valid=valid2)
    assert got.item() == pytest.approx((r0 + r1) / 2, rel=1e-4)  # anchor 3 has no positive left


def test_auxiliary_unimodal_heads_give_per_modality_scores(model):
    batch = model.example_inputs(3, seed=2)
    with torch.no_grad():
        out = model(*batch.tensors())
        text_only = model(*batch.replace(present=torch.tensor([[True, False, False]] * 3)).tensors())
    assert not torch.allclose(out.text, out.audio) and not torch.allclose(out.audio, out.vision)
    assert torch.allclose(out.text, text_only.text)            # text head sees text only
    assert torch.allclose(text_only.audio, text_only.audio[:1].expand(3))  # absent: learned constant
    model.train()
    terms = model.loss(batch, torch.tensor([-1.0, 0.5, 2.0]))
    model.eval()
    assert {"prediction", "semantic_alignment", "supervised_contrastive", "unimodal", "total"} <= set(terms)


def test_yaml_mirrors_the_paper_defaults():
    assert dataclasses.asdict(load_config("dashfusion")) == dataclasses.asdict(Config())
    c = Config()
    assert (c.hidden, c.bottleneck_tokens, c.contrastive_weight, c.temperature) == (128, 8, 0.2, 0.5)


def test_auxiliary_and_contrastive_terms_skip_samples_without_the_modality(model):
    """Moving the learned 'absent audio' embedding changes what an absent-audio row's audio head
    says, but no loss term may count that row's audio."""
    batch = model.example_inputs(6, seed=8)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[[0, 3], 1] = False
    batch = batch.replace(present=present)
    labels = torch.tensor([-2.0, -1.8, 0.5, 0.7, 2.0, 2.2])
    model.train()
    try:
        torch.manual_seed(0)
        before = {k: v.detach() for k, v in model.loss(batch, labels).items()}
        with torch.no_grad():
            model.absent_pooled[1] += 3.0
        torch.manual_seed(0)
        after = {k: v.detach() for k, v in model.loss(batch, labels).items()}
    finally:
        with torch.no_grad():
            model.absent_pooled[1] -= 3.0
        model.eval()
    for term in ("unimodal", "supervised_contrastive", "semantic_alignment", "prediction", "total"):
        assert torch.allclose(before[term], after[term], atol=1e-6), term
