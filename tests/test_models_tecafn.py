"""TeCaFN against its paper: the pipeline order Transformer -> LSTM -> Conv1D -> cross-attention (eq. 2-5,
8-12), the residual-to-LN(x) layers, the stage-1/2 mapping heads whose similarities drive hard-negative
mining (Algorithm 1, eq. 6-7, 15-16), the replacement gate at the paper's p (Table 2, §4.8), pairwise FC heads
(eq. 13-14), the lean inference path, per-head labels, the paper configs and the accuracy early stop (§4.4)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from moodlens.models import build_model, load_config
from moodlens.models.batch import MultimodalBatch
from moodlens.models.tecafn import GATE_CASES, Mapper, ResidualLNLayer, mine_hard_negatives

ROOT = Path(__file__).resolve().parents[1]
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
    c = model.config
    expected = (terms["task"] + c.gamma1 * (terms["contrastive_unimodal"] + terms["contrastive_fused"])
                + c.gamma2 * terms["pairwise"] + c.weight_unimodal * terms["unimodal"])        # eq. 19 (+ addition)
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)


# ---- replacement gate (Table 2, §4.8) ----------------------------------------------------------

def test_replacement_probability_is_the_papers():
    """§4.8 / Table 6: p = 0.7 on MOSI, 0.4 on MOSEI (the old default, 0.5, was the authors' code's)."""
    from moodlens.models.tecafn import Config

    assert Config.replace_prob == 0.7 and load_config("tecafn").replace_prob == 0.7
    from moodlens.train.trainer import load_train_config

    for dataset, p in (("mosi", 0.7), ("mosei", 0.4)):
        train = load_train_config(ROOT / "configs" / "train" / f"tecafn_paper_{dataset}.yaml")
        assert train.model_overrides["replace_prob"] == p


@pytest.mark.parametrize("p", [0.7, 0.4])
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


def test_gate_never_replaces_an_absent_modality_a_textless_sample_or_a_lone_sample():
    gate = build_model("tecafn", {**SMALL, "replace_prob": 1.0}, load_text_weights=False)
    present = torch.tensor([[True, False, True]] * 50)
    _, extras = gate.training_batch(tiny_batch(50, present), torch.zeros(50), torch.Generator().manual_seed(0))
    assert bool(extras["audio_paired"].all()) and not bool(extras["vision_paired"].any())
    no_text = torch.tensor([[False, True, True]] * 10)
    _, extras = gate.training_batch(tiny_batch(10, no_text), torch.zeros(10), torch.Generator().manual_seed(0))
    assert bool(extras["audio_paired"].all()) and bool(extras["vision_paired"].all())     # text-centred gate
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


# ---- mapping heads (§3.2.2, §3.2.4, Algorithm 1) -----------------------------------------------

class Fixed(nn.Module):
    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.rows = rows

    def forward(self, x, mask):
        return self.rows


def test_mapping_heads_are_depthwise_conv_pooling_and_projection(model):
    for name in ("map_text_audio", "map_audio", "map_text_vision", "map_vision", "map_fused_vision",
                 "map_fused_audio"):
        mapper = getattr(model, name)
        assert isinstance(mapper, Mapper)
        assert mapper.depthwise.groups == mapper.depthwise.in_channels == model.config.model_dim   # depth-wise
        assert mapper.proj.out_features == model.config.contrast_dim                               # W to d_c
    # pooling over real positions only: padding does not move the embedding
    mapper = model.map_text_audio
    x = torch.randn(1, 5, model.config.model_dim)
    mask = torch.tensor([[True, True, True, False, False]])
    junk = x.clone()
    junk[:, 3:] = 100.0
    assert torch.allclose(mapper(x, mask), mapper(junk, mask))


def test_hard_negatives_come_from_the_mapped_stage1_similarity():
    """S_{t,a} (eq. 7) is the cosine of q = f1(t) and k = f2(a): with f1, f2 fixed so that text i is most
    like audio perm[i], the replaced audio of sample i is sample perm[i]'s X_a. (The old code mined on the
    raw pooled features: it had no mappers.)"""
    torch.manual_seed(3)
    model = build_model("tecafn", {**SMALL, "dropout": 0.0, "hard_negatives": 1}).train()
    b = 5
    batch = model.example_inputs(b, seed=2)
    perm = torch.tensor([3, 4, 0, 1, 2])
    keys = torch.eye(b, model.config.contrast_dim)
    model.map_audio = Fixed(keys)
    model.map_text_audio = Fixed(keys[perm])
    captured = {}
    original = model.streams

    def spy(x_text, text_mask, x_audio, x_vision, present):
        captured["x_audio"] = x_audio
        return original(x_text, text_mask, x_audio, x_vision, present)

    model.streams = spy
    zeros = torch.zeros(b, dtype=torch.long)
    model.loss(batch, torch.zeros(b), audio_paired=torch.zeros(b, dtype=torch.bool),
               vision_paired=torch.ones(b, dtype=torch.bool), audio_pick=zeros, vision_pick=zeros)
    t = model.clean_inputs(*batch.tensors())
    x_audio = model.encode(*t)[1]
    assert torch.allclose(captured["x_audio"], x_audio[perm], atol=1e-6)


def test_pairwise_heads_are_one_fully_connected_layer(model):
    for head in (model.pair_audio, model.pair_vision):                                      # eq. 13: FC(Pool(h))
        assert isinstance(head, nn.Linear) and head.out_features == 2


# ---- pipeline (eq. 1-5, 8-12) ------------------------------------------------------------------

def test_the_lstm_feeds_the_cross_attention_on_the_inference_path():
    """Eq. 4-5: LSTM(Transformer(I_m)) -> Conv1D -> X_m, which the text queries. In the old code the LSTM fed
    only the auxiliary unimodal heads, so the fused score did not depend on it."""
    torch.manual_seed(0)
    model = build_model("tecafn", {**SMALL, "dropout": 0.0}).eval()
    assert model.remap_audio.conv.in_channels == model.config.lstm_hidden                   # Conv1D after the LSTM
    batch = model.example_inputs(3, seed=1)
    with torch.no_grad():
        before = model(*batch.tensors()).fused
        for p in model.audio_lstm.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        after = model(*batch.tensors()).fused
    assert not torch.allclose(before, after, atol=1e-5)


def test_layers_add_the_residual_to_the_normalised_input():
    """Eq. 2-3 / 11-12: x̂ = Att(LN(x)) + LN(x), x' = FFN(LN(x̂)) + LN(x̂)."""
    torch.manual_seed(0)
    layer = ResidualLNLayer(8, 2, 0.0).eval()
    x = torch.randn(2, 5, 8) * 3 + 1
    context = torch.randn(2, 4, 8)
    with torch.no_grad():
        h = layer.norm_attn(x)
        hat = layer.attn(h, context) + h
        expected = layer.ff(layer.norm_ff(hat)) + layer.norm_ff(hat)
        assert torch.allclose(layer(x, context=context), expected, atol=1e-6)
        h = layer.norm_attn(x)
        hat = layer.attn(h, h) + h
        assert torch.allclose(layer(x), layer.ff(layer.norm_ff(hat)) + layer.norm_ff(hat), atol=1e-6)


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
    names = ("pair_audio", "pair_vision", "map_text_audio", "map_audio", "map_text_vision", "map_vision",
             "map_fused_vision", "map_fused_audio")
    hooks = [getattr(model, name).register_forward_hook(lambda *a, name=name: called.append(name))
             for name in names]
    try:
        with torch.no_grad():
            out = model(*model.example_inputs(3).tensors())
    finally:
        for h in hooks:
            h.remove()
    assert called == []
    r = model.config.output_range
    assert all(t.shape == (3,) and bool((t.abs() <= r).all()) for t in out)


# ---- labels ------------------------------------------------------------------------------------

def test_per_head_labels_and_the_paper_weight_of_the_unimodal_heads():
    torch.manual_seed(0)
    model = build_model("tecafn", {**SMALL, "dropout": 0.0}).train()
    batch = model.example_inputs(4, seed=5)
    paired = {"audio_paired": torch.ones(4, dtype=torch.bool), "vision_paired": torch.ones(4, dtype=torch.bool),
              "audio_pick": torch.zeros(4, dtype=torch.long), "vision_pick": torch.zeros(4, dtype=torch.long)}
    plain = model.loss(batch, LABELS, **paired)
    columns = model.loss(batch, LABELS[:, None].expand(4, 4).clone(), **paired)
    for term in plain:
        assert plain[term].item() == pytest.approx(columns[term].item(), rel=1e-6), term
    nan = float("nan")
    text_only_labels = torch.tensor([[nan, 1.0, nan, nan]] * 4)
    terms = model.loss(batch, text_only_labels, **paired)
    assert terms["task"].item() == 0.0 and terms["unimodal"].item() > 0                      # only the text head
    with torch.no_grad():
        t = model.clean_inputs(*batch.tensors())
        x_text, _, _, lstm_a, lstm_v = model.encode(*t)
        text_pred = model.unimodal(x_text, t[1], lstm_a, lstm_v, t[6])[0]
    assert terms["unimodal"].item() == pytest.approx((text_pred - 1.0).abs().mean().item(), rel=1e-5)
    from moodlens.train.trainer import load_train_config

    for dataset in ("mosi", "mosei"):
        train = load_train_config(ROOT / "configs" / "train" / f"tecafn_paper_{dataset}.yaml")
        assert train.model_overrides["weight_unimodal"] == 0.0                               # addition off


# ---- paper configs and the accuracy early stop (§4.4) ------------------------------------------

@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_paper_config_parses_into_valid_train_and_model_configs(dataset):
    from moodlens.train.trainer import load_train_config

    train = load_train_config(ROOT / "configs" / "train" / f"tecafn_paper_{dataset}.yaml")
    assert train.model == "tecafn"
    assert (train.early_stop, train.early_stop_metric) == (10, "Non0_acc_2")
    assert train.learning_rate in (1e-3, 2e-3, 3e-3) and train.batch_size in (32, 64, 128)      # §4.4 grids
    assert train.grad_clip in (1, 2, 4, 8)
    overrides = dict(train.model_overrides)
    assert overrides["text_encoder"] == "bert-base-uncased" and overrides["text_encoder_trainable_layers"] == -1
    config = load_config("tecafn", overrides)
    assert config.hard_negatives == 3 and config.gamma1 in (0.1, 0.2, 0.4) and config.gamma2 in (0.1, 0.2, 0.4)
    assert config.lstm_hidden in (16, 32, 64)
    model = build_model("tecafn", {**overrides, "text_encoder": None}, load_text_weights=False)
    assert model.config.replace_prob == overrides["replace_prob"]


def tiny_trainer_config(**kw):
    from moodlens.train.trainer import TrainConfig

    tiny = {"model_dim": 8, "heads": 2, "self_layers": 1, "cross_layers": 1, "lstm_hidden": 4, "lstm_steps": 4,
            "fusion_hidden": 8, "contrast_dim": 8, "audio_dim": 6, "vision_dim": 5}
    base = dict(model="tecafn", model_overrides=tiny, epochs=4, batch_size=8, learning_rate=1e-2, seeds=[3],
                early_stop=10, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def tiny_data():
    from moodlens.train.data import DataOptions, make_synthetic

    return make_synthetic(DataOptions(synthetic_sizes=(48, 32, 16), audio_dim=6, vision_dim=5,
                                      synthetic_text_len=8, synthetic_audio_len=8, synthetic_vision_len=6))


def test_early_stop_on_accuracy_picks_the_best_accuracy_epoch(tmp_path):
    from moodlens.train.trainer import Trainer

    summary = Trainer(tiny_trainer_config(early_stop_metric="Non0_acc_2"), tiny_data(), tmp_path,
                      show_progress=False).run()
    rows = list(csv.DictReader((tmp_path / "seed_3" / "log.csv").open()))
    accuracy = [float(r["valid_Non0_acc_2"]) for r in rows]
    best = max(range(len(rows)), key=lambda i: (accuracy[i], -i))      # first epoch with the highest accuracy
    assert summary["per_seed"]["3"]["best_epoch"] == best + 1
    assert [int(r["improved"]) for r in rows][best] == 1


def test_unknown_early_stop_metric_is_refused_in_one_sentence(tmp_path):
    from moodlens.core.errors import ConfigError
    from moodlens.train.trainer import Trainer

    with pytest.raises(ConfigError, match="early_stop_metric 'accuracy' is not a validation metric of mosi"):
        Trainer(tiny_trainer_config(early_stop_metric="accuracy"), tiny_data(), tmp_path, show_progress=False)


def test_text_only_input_reaches_the_fused_score(model):
    """Audio and vision absent (MOSI transcripts, a live session without camera and microphone): their
    CoAt terms are dropped and the streams carry the text, so the fused score follows the text. A learned
    stand-in for the whole stream (the earlier code) made it one constant for every text-only input."""
    batch = model.example_inputs(4, seed=5)
    text_only = batch.replace(present=torch.tensor([[True, False, False]] * 4))
    was = model.training
    model.eval()                                                # inference: no dropout
    with torch.no_grad():
        fused = model(*text_only.tensors()).fused
        other = text_only.replace(text_ids=torch.roll(text_only.text_ids, 1, 0), text_mask=torch.roll(text_only.text_mask, 1, 0))
        moved = model(*other.tensors()).fused
        noisy = text_only.replace(audio=torch.randn_like(text_only.audio), vision=torch.randn_like(text_only.vision))
        same = model(*noisy.tensors()).fused
    model.train(was)
    assert fused.std() > 1e-4                                   # not one constant for every sentence
    assert torch.allclose(moved, torch.roll(fused, 1, 0), atol=1e-5)
    assert torch.allclose(same, fused, atol=1e-6)               # the absent modalities still change nothing
