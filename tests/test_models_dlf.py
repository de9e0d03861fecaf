"""DLF against its paper (Wang et al., AAAI 2025): Transformer encoders that model time (eq. 1-2),
three LFA branches whose outputs feed the specific predictors (eq. 10-12), the triplet modality
rule (eq. 7), every loss term, per-head labels, and the paper configs loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from moodlens.models import build_model, load_config
from moodlens.models.config import configs_root
from moodlens.models.dlf import Config, triplet_margin_cosine
from moodlens.core.errors import AssetError

LABELS = torch.tensor([2.0, -1.5, 0.5, -0.5])
PAPER_CONFIGS = ("dlf_paper_mosi.yaml", "dlf_paper_mosei.yaml")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("dlf", {"dropout": 0.0})


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
    # eq. 15 with the authors' λ_k and β_l
    want = (terms["task_final"] + terms["task_shared"] + 3 * terms["task_text"] + terms["task_audio"]
            + terms["task_vision"] + 0.1 * (terms["reconstruction"] + terms["specific"])
            + 0.01 * (terms["margin"] + terms["orthogonality"]))
    assert torch.allclose(terms["total"], want)


def test_text_only_batch_keeps_every_term_finite(model):
    model.train()
    batch = model.example_inputs(4)
    batch = batch.replace(present=torch.tensor([[True, False, False]] * 4))
    terms = model.loss(batch, LABELS)
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["task_audio"].item() == 0.0 and terms["task_vision"].item() == 0.0
    terms["total"].backward()


@pytest.mark.parametrize("which", ["shared", "specific"])
def test_encoders_model_time(model, which):
    """Eq. 1-2 are cascaded Transformer layers with positions: shuffling the frames changes more
    than their order (a per-frame map, the old 1x1 convolution, only permutes its output)."""
    model.eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, model.config.hidden_dim, generator=g)
    mask = torch.ones(2, 12, dtype=torch.bool)
    perm = torch.randperm(12, generator=g)
    encoder = model.shared_encoder if which == "shared" else model.specific_encoder["audio"]
    with torch.no_grad():
        out = encoder(x, mask)
        shuffled = encoder(x[:, perm], mask)
        # frame t's output depends on the other frames: change one frame, every output moves
        moved = x.clone()
        moved[:, 0] += 1.0
        out_moved = encoder(moved, mask)
    assert (out[:, perm] - shuffled).abs().max() > 1e-3
    assert (out[:, 5:] - out_moved[:, 5:]).abs().amax(dim=-1).min() > 1e-5


def test_attractor_branches_feed_the_specific_heads():
    """Three LFA branches with language as the query (eq. 10); each branch's output, not the
    pre-LFA specific features, feeds its own specific predictor."""
    torch.manual_seed(0)
    model = build_model("dlf", {"dropout": 0.0}).eval()
    batch = model.example_inputs(2, text_len=7, audio_len=40, vision_len=11)
    shapes = {}
    hooks = [model.attractor[m].register_forward_hook(
        lambda mod, inp, out, m=m: shapes.__setitem__(m, tuple(out.shape))) for m in ("text", "audio", "vision")]
    try:
        with torch.no_grad():
            out = model(*batch.tensors())
    finally:
        for h in hooks:
            h.remove()
    assert shapes == {m: (2, 7, model.config.hidden_dim) for m in ("text", "audio", "vision")}
    # changing the vision branch (after the specific encoders) moves the vision prediction and the
    # fused one, and leaves the text and audio predictions exactly as they were
    with torch.no_grad():
        for p in model.attractor_memory["vision"].parameters():
            p.add_(0.5 * torch.randn_like(p))
        moved = model(*batch.tensors())
    assert (moved.vision - out.vision).abs().max() > 1e-4 and (moved.fused - out.fused).abs().max() > 1e-5
    assert torch.equal(moved.text, out.text) and torch.equal(moved.audio, out.audio)


def test_triplet_rule_positives_across_modalities_negatives_within():
    """Eq. 7: P = same sentiment in a different modality, N = different sentiment in the same
    modality. Rows: (class, modality) = a(+,0) b(+,1) c(-,0) d(+,0) e(-,1)."""
    mu = 0.3
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    classes = torch.tensor([1, 1, -1, 1, -1])
    modality = torch.tensor([0, 1, 0, 0, 1])
    valid = torch.ones(5, dtype=torch.bool)
    # a, b, d identical; c, e orthogonal to them: every valid triplet beats the margin
    feats = torch.stack([e0, e0, e1, e0, e1])
    assert float(triplet_margin_cosine(feats, classes, modality, mu, valid)) == pytest.approx(0.0)
    # d (same class, same modality as a) is no positive of a: moving d far away costs nothing
    # under the paper's rule, while any-modality positives would be charged for it
    feats2 = torch.stack([e0, e0, e1, -e0, e1])
    # triplets: (a,b,c) (b,a,e)? a's modality differs from e's -> no; list them by the rule:
    #   S=a: P in {b}, N in {c};  S=b: P in {a, d}, N in {e};  S=d: P in {b}, N in {c}
    #   S=c: P in {e}, N in {a, d};  S=e: P in {c}, N in {b}
    sim = lambda u, v: float(torch.nn.functional.cosine_similarity(u, v, dim=0))  # noqa: E731
    f = dict(zip("abcde", feats2))
    triplets = [("a", "b", "c"), ("b", "a", "e"), ("b", "d", "e"), ("d", "b", "c"),
                ("c", "e", "a"), ("c", "e", "d"), ("e", "c", "b")]
    want = sum(max(0.0, mu - sim(f[s], f[p]) + sim(f[s], f[n])) for s, p, n in triplets) / len(triplets)
    assert float(triplet_margin_cosine(feats2, classes, modality, mu, valid)) == pytest.approx(want, abs=1e-6)
    # an invalid (absent) row leaves no triplet that uses it
    valid[1] = valid[4] = False                        # no modality-1 rows left: no positives at all
    assert float(triplet_margin_cosine(feats2, classes, modality, mu, valid)) == 0.0


def test_per_head_labels_mask_unknown_terms(model):
    model.train()
    batch = model.example_inputs(4, seed=2)
    labels = torch.tensor([[1.0, 1.0, float("nan"), 0.5], [-1.0, float("nan"), -1.0, -1.0],
                           [float("nan"), 0.5, 0.5, 0.5], [2.0, 2.0, 2.0, float("nan")]])
    terms = model.loss(batch, labels)
    assert all(torch.isfinite(v) for v in terms.values())
    model.eval()
    with torch.no_grad():
        cleaned = model.clean_inputs(*batch.tensors())
        _, shared, specific = model.disentangle(*cleaned[:-1])
        masks = {"text": cleaned[1], "audio": cleaned[3], "vision": cleaned[5]}
        pred = model.predict(shared, specific, masks, cleaned[-1])
    assert terms["task_final"].item() == pytest.approx(
        (pred["final"][[0, 1, 3]] - labels[[0, 1, 3], 0]).abs().mean().item(), rel=1e-4)
    assert terms["task_audio"].item() == pytest.approx(
        (pred["audio"][[1, 2, 3]] - labels[[1, 2, 3], 2]).abs().mean().item(), rel=1e-4)


def test_outputs_are_linear_heads_clamped_at_inference(model):
    model.eval()
    batch = model.example_inputs(3, seed=4)
    with torch.no_grad():
        cleaned = model.clean_inputs(*batch.tensors())
        _, shared, specific = model.disentangle(*cleaned[:-1])
        masks = {"text": cleaned[1], "audio": cleaned[3], "vision": cleaned[5]}
        raw = model.predict(shared, specific, masks, cleaned[-1])
        out = model(*batch.tensors())
    assert torch.allclose(out.fused, raw["final"].clamp(-3, 3))


def test_yaml_mirrors_the_defaults():
    assert dataclasses.asdict(load_config("dlf")) == dataclasses.asdict(Config())


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_parses_into_valid_model_and_train_configs(name):
    from moodlens.train.trainer import load_train_config

    train = load_train_config(configs_root() / "train" / name)
    assert train.model == "dlf"
    config = load_config("dlf", train.model_overrides)
    assert Path(config.text_encoder).name == "bert-base-uncased" and config.text_encoder_trainable_layers == -1
    assert (train.batch_size, train.learning_rate, train.early_stop) == (16, 1e-4, 10)   # the paper's three values
    assert config.conv_kernel == (3 if "mosei" in name else 5)
    m = build_model("dlf", {**train.model_overrides, "text_encoder": None}, load_text_weights=False)
    assert len(m.shared_encoder.layers) == config.layers
    if not Path(config.text_encoder).exists():
        with pytest.raises(AssetError, match="bert-base-uncased"):
            build_model("dlf", train.model_overrides, load_text_weights=False)
