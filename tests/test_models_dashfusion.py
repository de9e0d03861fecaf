"""DashFusion against its paper (Wen et al., TNNLS 2025): H of eq. 4, a bottleneck derived from H
(eq. 6) with p / 2^{l-1} tokens, the unimodal sequences as fusion streams (eq. 7-9), the §III-D
contrastive sampler and eq. 5, the product additions staying out of the paper's loss, and the
paper configs loading."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from moodlens.models import build_model, load_config
from moodlens.models.config import configs_root
from moodlens.models.dashfusion import (Config, HierarchicalBottleneckFusion, TemporalAlignment,
                                        contrastive_groups, nt_xent_groups)
from moodlens.core.errors import AssetError, ConfigError

PAPER_CONFIGS = ("dashfusion_paper_mosi.yaml", "dashfusion_paper_mosei.yaml", "dashfusion_paper_sims.yaml")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("dashfusion", {"dropout": 0.0}).eval()


def small_fusion(layers=2, tokens=8):
    torch.manual_seed(1)
    return HierarchicalBottleneckFusion(dim=16, heads=2, ff_dim=32, tokens=tokens, layers=layers, dropout=0.0).eval()


def fusion_inputs(b=2, lt=10, la=7, lv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, lt, 16, generator=g)
    streams = [torch.randn(b, n, 16, generator=g) for n in (lt, la, lv)]
    masks = [torch.ones(b, n, dtype=torch.bool) for n in (lt, la, lv)]
    return h, masks[0], streams, masks


def test_bottleneck_tokens_halve_every_layer(model):
    assert model.fusion.token_counts == [8, 4]                 # §IV-D MOSI/SIMS: p = 8, L = 2
    with torch.no_grad():
        assert model.bottleneck_token_counts(model.example_inputs(2)) == [8, 4]
    fusion = small_fusion(layers=4, tokens=16)
    h, h_mask, streams, masks = fusion_inputs()
    with torch.no_grad():
        fused, out_streams, history = fusion(h, h_mask, streams, masks, torch.ones(2, 3, dtype=torch.bool),
                                             return_history=True)
    assert [x.shape[1] for x in history] == [16, 8, 4, 2] and fused.shape == (2, 2, 16)
    assert [s.shape for s in out_streams] == [s.shape for s in streams]   # streams keep their own lengths
    with pytest.raises(ConfigError, match="bottleneck_tokens"):
        small_fusion(layers=3, tokens=6)


def test_layer1_bottleneck_is_derived_from_h_and_only_from_h():
    """Eq. 6: B^1 = Transformer-layer(H)[0:p]. Changing H changes B^1; changing a stream does not
    (it enters at eq. 7). A learned bottleneck parameter (the paper's 'w/o dual-stream alignment'
    ablation) fails the first assertion."""
    fusion = small_fusion()
    h, h_mask, streams, masks = fusion_inputs()
    present = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        _, _, ref = fusion(h, h_mask, streams, masks, present, return_history=True)
        _, _, moved_h = fusion(h + torch.randn_like(h), h_mask, streams, masks, present, return_history=True)
        other = [streams[0], streams[1] + torch.randn_like(streams[1]), streams[2]]
        _, _, moved_stream = fusion(h, h_mask, other, masks, present, return_history=True)
    assert (ref[0] - moved_h[0]).abs().amax(dim=(1, 2)).min() > 1e-3
    assert torch.allclose(ref[0], moved_stream[0], atol=1e-6)
    assert (ref[1] - moved_stream[1]).abs().max() > 1e-3        # layer 2's bottleneck has heard the streams


def test_bottleneck_exists_for_sentences_shorter_than_p_and_ignores_padding():
    fusion = small_fusion()
    h, h_mask, streams, masks = fusion_inputs(lt=3)
    present = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        fused, _, history = fusion(h, h_mask, streams, masks, present, return_history=True)
        assert history[0].shape == (2, 8, 16) and torch.isfinite(fused).all()
        # the same 3-token sentence padded to 12 with junk gives the same first p tokens
        padded = torch.cat([h, 50 * torch.randn(2, 9, 16)], 1)
        mask = torch.cat([h_mask, torch.zeros(2, 9, dtype=torch.bool)], 1)
        streams2 = [torch.cat([streams[0], torch.zeros(2, 9, 16)], 1), streams[1], streams[2]]
        masks2 = [mask, masks[1], masks[2]]
        fused2, _ = fusion(padded, mask, streams2, masks2, present)
    assert torch.allclose(fused, fused2, atol=1e-5)


def test_h_is_text_plus_two_text_queried_cross_attentions():
    """Eq. 4: H = X_t + CA(X_t, X_a) + CA(X_t, X_v); an absent modality's term is dropped."""
    torch.manual_seed(2)
    align = TemporalAlignment(16, 2, 0.0).eval()
    t, a, v = torch.randn(2, 6, 16), torch.randn(2, 9, 16), torch.randn(2, 4, 16)
    am, vm = torch.ones(2, 9, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)
    present = torch.tensor([[True, True, True], [True, False, True]])
    with torch.no_grad():
        h = align(t, a, am, v, vm, present)
        ca_a, ca_v = align.ca_audio(t, a, am), align.ca_vision(t, v, vm)
    assert torch.allclose(h[0], t[0] + ca_a[0] + ca_v[0], atol=1e-6)
    assert torch.allclose(h[1], t[1] + ca_v[1], atol=1e-6)


def test_raw_audio_and_vision_sequences_reach_the_fusion(model):
    """The streams of eq. 7-9 are X_t, X_a, X_v at their own lengths (audio/vision with their CLS
    token), not text-length aligned sequences; shuffling audio frames changes the fused output."""
    batch = model.example_inputs(2, text_len=9, audio_len=31, vision_len=13, seed=4)
    seen = {}
    hook = model.fusion.register_forward_hook(
        lambda mod, args, out: seen.update(lengths=[s.shape[1] for s in args[2]]))
    try:
        with torch.no_grad():
            ref = model(*batch.tensors()).fused
    finally:
        hook.remove()
    assert seen["lengths"] == [9, 32, 14]
    full = batch.replace(audio_mask=torch.ones_like(batch.audio_mask))
    perm = torch.randperm(31, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(*full.tensors()).fused
        b = model(*full.replace(audio=full.audio[:, perm]).tensors()).fused
    assert (a - b).abs().max() > 1e-4 and (ref - a).abs().max() > 0


def test_absent_stream_reaches_neither_the_bottleneck_nor_the_other_streams():
    """Addition (absence awareness): an absent stream's Multi-CA term is dropped, so a *random*
    change of that stream leaves the row's bottleneck and other streams exactly as they were,
    while the same change in a row where it is present moves the bottleneck."""
    fusion = small_fusion()
    h, h_mask, streams, masks = fusion_inputs(seed=3)
    present = torch.tensor([[True, False, True], [True, True, True]])
    with torch.no_grad():
        ref_fused, ref_streams = fusion(h, h_mask, streams, masks, present)
        moved = [streams[0], streams[1] + 3.0 * torch.randn_like(streams[1]), streams[2]]
        new_fused, new_streams = fusion(h, h_mask, moved, masks, present)
    assert torch.equal(ref_fused[0], new_fused[0])
    assert torch.equal(ref_streams[0][0], new_streams[0][0]) and torch.equal(ref_streams[2][0], new_streams[2][0])
    assert (ref_fused[1] - new_fused[1]).abs().max() > 1e-3
    assert (ref_streams[0][1] - new_streams[0][1]).abs().max() > 1e-3


def test_sampler_picks_two_similar_positives_two_similar_and_two_dissimilar_negatives():
    # anchor 0 (class 0): same class 1, 2, 3 with similarity .9, .8, .1; other class 4..8
    sim = torch.zeros(9, 9)
    sim[0, 1:] = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.6, 0.0, -0.5, -0.9])
    sim = sim + sim.T
    classes = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3])
    pos, neg = contrastive_groups(sim, classes, torch.ones(9, dtype=torch.bool))
    assert pos[0].nonzero().flatten().tolist() == [1, 2]
    assert neg[0].nonzero().flatten().tolist() == [4, 5, 7, 8]
    # an invalid (absent / unlabelled) candidate is never drawn, an invalid anchor draws nothing
    valid = torch.ones(9, dtype=torch.bool)
    valid[1] = valid[3] = False
    pos, neg = contrastive_groups(sim, classes, valid)
    assert pos[0].nonzero().flatten().tolist() == [2] and not pos[3].any() and not neg[3].any()


def test_nt_xent_groups_is_eq_5():
    angles = torch.tensor([0.0, 0.4, 1.0, 2.5])
    f = torch.stack([angles.cos(), angles.sin()], 1)
    positive = torch.zeros(4, 4, dtype=torch.bool)
    negative = torch.zeros(4, 4, dtype=torch.bool)
    positive[0, 1] = positive[0, 2] = True
    negative[0, 3] = True
    tau = 0.5
    s = [math.cos(0.0 - a) / tau for a in (0.4, 1.0, 2.5)]
    denominator = sum(math.exp(x) for x in s)
    want = -math.log(math.exp(s[0]) / denominator) - math.log(math.exp(s[1]) / denominator)
    got = nt_xent_groups(f, f, positive, negative, tau)
    assert got[0].item() == pytest.approx(want, rel=1e-5) and got[1:].abs().max() == 0


def test_paper_loss_is_pred_plus_lambda_con_and_heads_stay_out_of_it(model):
    """Eq. 12 with the addition's weight at 0 (paper configs): total = L_pred + λ L_con, and the
    auxiliary heads change neither the fused output nor the loss."""
    m = build_model("dashfusion", {"dropout": 0.0, "unimodal_weight": 0.0}).train()
    batch = m.example_inputs(6, seed=5)
    labels = torch.tensor([-2.0, -1.8, 0.4, 0.6, 2.0, 2.2])
    terms = m.loss(batch, labels)
    want = terms["prediction"] + 0.2 * (terms["semantic_alignment"] + terms["supervised_contrastive"])
    assert torch.allclose(terms["total"], want)
    with torch.no_grad():
        fused = m.eval()(*batch.tensors()).fused
        for p in m.unimodal_heads.parameters():
            p.add_(torch.randn_like(p))
        assert torch.equal(fused, m(*batch.tensors()).fused)
    assert torch.allclose(m.train().loss(batch, labels)["total"], terms["total"])


def test_per_head_labels_mask_unknown_terms(model):
    m = build_model("dashfusion", {"dropout": 0.0}).train()
    batch = m.example_inputs(4, seed=6)
    labels = torch.tensor([[1.0, 1.0, float("nan"), 1.0], [-1.0, -1.0, float("nan"), -1.0],
                           [float("nan"), 0.5, 0.5, 0.5], [2.0, 2.0, float("nan"), 2.0]])
    terms = m.loss(batch, labels)
    assert all(torch.isfinite(v) for v in terms.values())
    with torch.no_grad():
        out = m.eval()(*batch.tensors())
    m.train()
    want = ((out.fused[[0, 1, 3]] - labels[[0, 1, 3], 0]) ** 2).mean()
    assert terms["prediction"].item() == pytest.approx(want.item(), rel=1e-4)
    audio_term = ((out.audio[2] - 0.5) ** 2).item()
    text_term = ((out.text - labels[:, 1]) ** 2).mean().item()
    vision_term = ((out.vision - labels[:, 3]) ** 2).mean().item()
    assert terms["unimodal"].item() == pytest.approx(audio_term + text_term + vision_term, rel=1e-4)


def test_yaml_mirrors_the_paper_defaults():
    assert dataclasses.asdict(load_config("dashfusion")) == dataclasses.asdict(Config())
    c = Config()
    assert (c.hidden, c.bottleneck_tokens, c.fusion_layers, c.encoder_layers, c.contrastive_weight,
            c.temperature) == (128, 8, 2, 1, 0.2, 0.5)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_parses_into_valid_model_and_train_configs(name):
    from moodlens.train.trainer import load_train_config

    train = load_train_config(configs_root() / "train" / name)
    assert train.model == "dashfusion"
    config = load_config("dashfusion", train.model_overrides)
    assert config.unimodal_weight == 0.0 and config.text_encoder_trainable_layers == -1
    assert config.contrastive_sampler == "dataset"          # §III-D: partners over the training set D
    assert Path(config.text_encoder).name.startswith("bert-base-")
    mosei = "mosei" in name
    assert (config.fusion_layers, config.encoder_layers) == ((3, 3) if mosei else (2, 1))
    assert (train.epochs, train.batch_size, train.learning_rate) == ((25, 8, 2e-5) if mosei else (100, 16, 5e-5))
    # the architecture builds with the paper's values (the text encoder swapped for the bundled one)
    m = build_model("dashfusion", {**train.model_overrides, "text_encoder": None}, load_text_weights=False)
    assert m.fusion.token_counts == ([8, 4, 2] if mosei else [8, 4])
    # without bert-base-uncased on disk, building names the missing path in one sentence
    if not Path(config.text_encoder).exists():
        with pytest.raises(AssetError, match="bert-base-"):
            build_model("dashfusion", train.model_overrides, load_text_weights=False)


def test_auxiliary_unimodal_heads_give_per_modality_scores(model):
    """Addition: each auxiliary head reads its own modality only; an absent one gives a constant."""
    batch = model.example_inputs(3, seed=2)
    with torch.no_grad():
        out = model(*batch.tensors())
        text_only = model(*batch.replace(present=torch.tensor([[True, False, False]] * 3)).tensors())
    assert not torch.allclose(out.text, out.audio) and not torch.allclose(out.audio, out.vision)
    assert torch.allclose(out.text, text_only.text)
    assert torch.allclose(text_only.audio, text_only.audio[:1].expand(3))


def test_loss_terms_never_count_an_absent_modality():
    """Moving the learned 'absent audio' stand-in changes what an absent-audio row's audio head
    says, but no loss term may count that row's audio (nor let it steer the sampler)."""
    torch.manual_seed(0)
    m = build_model("dashfusion", {"dropout": 0.0}).train()
    batch = m.example_inputs(8, seed=8)
    present = torch.ones(8, 3, dtype=torch.bool)
    present[[0, 3, 6], 1] = False
    batch = batch.replace(present=present)
    labels = torch.tensor([-2.0, -1.8, 0.5, 0.7, 2.0, 2.2, -2.1, 0.4])
    before = {k: v.detach() for k, v in m.loss(batch, labels).items()}
    with torch.no_grad():
        m.absent_pooled[1] += 3.0 * torch.randn_like(m.absent_pooled[1])
    after = {k: v.detach() for k, v in m.loss(batch, labels).items()}
    for term in ("unimodal", "supervised_contrastive", "semantic_alignment", "prediction", "total"):
        assert torch.allclose(before[term], after[term], atol=1e-6), term


# ---- §III-D over the whole training set (contrastive_sampler: dataset) ---------------------------

def test_dataset_sampler_draws_over_the_whole_training_set():
    """Positives: same class among the 10 most similar samples of D; negatives: other class, 2 among
    the 10 most similar and 2 among the 10 least similar. The candidates come from all of D, not a batch."""
    from moodlens.models.dashfusion import DatasetSampler

    g = torch.Generator().manual_seed(0)
    n = 60
    features = torch.randn(n, 8, generator=g)
    classes = torch.randint(-3, 4, (n,), generator=g).float()
    valid = torch.ones(n, dtype=torch.bool)
    valid[5] = False                                            # an unknown label: never an anchor or partner
    sampler = DatasetSampler(features, classes, valid, top_k=10, chunk=16)   # chunks: rows built in pieces
    z = torch.nn.functional.normalize(features, dim=-1)
    sim = z @ z.T
    index = torch.arange(n)
    picked, ok = sampler.draw(index, (2, 2, 2), torch.Generator().manual_seed(1))
    assert picked.shape == ok.shape == (n, 6)
    for i in range(n):
        if i == 5:
            assert not ok[i].any()
            continue
        others = [j for j in range(n) if j != i and valid[j]]
        same = sorted((j for j in others if classes[j] == classes[i]), key=lambda j: -sim[i, j])[:10]
        diff = sorted((j for j in others if classes[j] != classes[i]), key=lambda j: -sim[i, j])
        for slot in range(6):
            if not ok[i, slot]:
                continue
            j = int(picked[i, slot])
            assert j != i and j != 5
            if slot < 2:
                assert j in same
            elif slot < 4:
                assert j in diff[:10]
            else:
                assert j in diff[-10:]
        assert len(set(picked[i, ok[i]].tolist())) == int(ok[i].sum())       # distinct partners
        assert ok[i, :2].sum() == min(2, len(same))
    # random among the top 10 (not always the most similar), reproducible with a seed
    again, _ = sampler.draw(index, (2, 2, 2), torch.Generator().manual_seed(1))
    other, _ = sampler.draw(index, (2, 2, 2), torch.Generator().manual_seed(2))
    assert torch.equal(picked, again) and not torch.equal(picked, other)
    # a class of one sample has no positive: its positive slots are empty, not filled with others
    lone = classes.clone()
    lone[0] = 99.0
    _, lone_ok = DatasetSampler(features, lone, valid).draw(torch.tensor([0]))
    assert not lone_ok[0, :2].any() and lone_ok[0, 2:].all()


def test_dataset_contrastive_loss_is_eq_5_over_the_drawn_partners():
    """ℓ^i of eq. 5 with the anchor's own 6 partners (2 positives, 4 negatives) per group X̄_t, X̄_v,
    X̄_a, H̄; the text anchor also pulls its own sample's X̄_a and X̄_v (semantic alignment)."""
    torch.manual_seed(0)
    m = build_model("dashfusion", {"dropout": 0.0}).eval()
    batch = m.example_inputs(2, seed=1)
    partners = m.example_inputs(12, seed=2)
    ok = torch.ones(2, 6, dtype=torch.bool)
    ok[1, 1] = False                                            # an empty slot is left out
    known = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        cleaned = m.clean_inputs(*batch.tensors())
        enc = m.encode(*cleaned)
        semantic, supervised = m.dataset_contrastive_loss(enc, known, cleaned[-1], partners, ok)
        p = m.encode(*m.clean_inputs(*partners.tensors()), fuse=False)
    tau = m.config.temperature
    cos = torch.nn.functional.cosine_similarity
    groups = [(enc["pooled"][0], p["pooled"][0]), (enc["pooled"][2], p["pooled"][2]),
              (enc["pooled"][1], p["pooled"][1]), (enc["h_pooled"], p["h_pooled"])]
    want_sem, want_sup = 0.0, 0.0
    for i in range(2):
        for g, (anchor, cand) in enumerate(groups):
            slots = [k for k in range(6) if ok[i, k]]
            s = {k: float(cos(anchor[i], cand[6 * i + k], dim=0)) / tau for k in slots}
            extra = {}
            if g == 0:
                extra = {"a": float(cos(anchor[i], enc["pooled"][1][i], dim=0)) / tau,
                         "v": float(cos(anchor[i], enc["pooled"][2][i], dim=0)) / tau}
            log_z = math.log(sum(math.exp(x) for x in [*s.values(), *extra.values()]))
            want_sup += sum(log_z - s[k] for k in slots if k < 2)
            want_sem += sum(log_z - x for x in extra.values())
    assert float(supervised) == pytest.approx(want_sup / 2, rel=1e-5)
    assert float(semantic) == pytest.approx(want_sem / 2, rel=1e-5)
    # the partners are encoded with gradient (as the authors' sample2), so they shape the encoders
    m.train()
    audio = partners.audio.clone().requires_grad_(True)
    _, sup = m.dataset_contrastive_loss(m.encode(*m.clean_inputs(*batch.tensors())), known,
                                        batch.present, partners.replace(audio=audio), ok)
    sup.backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0


def test_trainer_feeds_dataset_partners_and_refreshes_every_two_epochs(tmp_path, monkeypatch):
    from moodlens.models import dashfusion
    from moodlens.train.data import DataOptions, make_synthetic
    from moodlens.train.trainer import Trainer, TrainConfig

    data = make_synthetic(DataOptions(synthetic_sizes=(48, 16, 16), audio_dim=6, vision_dim=5, synthetic_text_len=8,
                                      synthetic_audio_len=8, synthetic_vision_len=6))
    seen = {"refresh": [], "partners": 0}
    refresh, loss = dashfusion.Model.refresh_sampler, dashfusion.Model.loss

    def counting_refresh(self, batches):
        seen["refresh"].append(refresh(self, batches))
        return seen["refresh"][-1]

    def checking_loss(self, batch, labels, partners=None, partner_ok=None, **extras):
        assert partners is not None and partners.batch_size == 6 * batch.batch_size
        assert partner_ok.shape == (batch.batch_size, 6)
        seen["partners"] += 1
        return loss(self, batch, labels, partners=partners, partner_ok=partner_ok, **extras)

    monkeypatch.setattr(dashfusion.Model, "refresh_sampler", counting_refresh)
    monkeypatch.setattr(dashfusion.Model, "loss", checking_loss)
    overrides = {"hidden": 16, "heads": 2, "ff_dim": 32, "audio_dim": 6, "vision_dim": 5,
                 "contrastive_sampler": "dataset", "unimodal_weight": 0.0}
    config = TrainConfig(model="dashfusion", model_overrides=overrides, epochs=3, batch_size=16,
                         learning_rate=1e-3, seeds=[3], early_stop=5, num_threads=1)
    summary = Trainer(config, data, tmp_path, show_progress=False).run()
    assert seen["refresh"] == [True, False, True]              # epochs 1 and 3 (the authors' every 2)
    assert seen["partners"] == 9 and math.isfinite(summary["MAE"])


def test_unknown_sampler_is_one_sentence():
    with pytest.raises(ConfigError, match="contrastive_sampler"):
        build_model("dashfusion", {"contrastive_sampler": "memory"})
