"""DAR against its paper (../shared/papers/dar.md): the complete-input branch in training only, the
boot head (eq. 22-23), L_recon against the complete-input features (eq. 17), the restoration loss
(eq. 10-11), the gate over reconstructed and original features (eq. 15-16), the loss composition
(eq. 2, 24), random erasure (§3.3, §4.2) and the alternately-trained CLUB estimator (eq. 9)."""

from __future__ import annotations

import math

import pytest
import torch

from moodlens.models import build_model
from moodlens.models.batch import MODALITIES
from moodlens.models.dar import UNK_TOKEN_ID, club_upper_bound, info_nce, random_erasure

LABELS = torch.tensor([2.0, -1.5, 0.5, -0.5])
PAPER = {"weight_unimodal": 0.0, "club_softplus": False, "dropout": 0.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("dar")


@pytest.fixture(scope="module")
def paper_model():
    """Paper loss settings (no unimodal term, no softplus) and no dropout, so two passes agree."""
    torch.manual_seed(0)
    return build_model("dar", PAPER).train()


def erased_and_clean(model, n=4, seed=0, **lengths):
    batch = model.example_inputs(n, seed=seed, **lengths)
    erased, extras = model.training_batch(batch, LABELS[:n], torch.Generator().manual_seed(seed))
    return erased, extras["clean_batch"]


def record_calls(modules):
    """Register forward hooks; returns (calls list of (name, inputs, output), remove())."""
    calls = []
    hooks = [mod.register_forward_hook(lambda mod, args, out, name=name: calls.append((name, args, out)))
             for name, mod in modules.items()]
    return calls, lambda: [h.remove() for h in hooks]


# ---- loss terms ----------------------------------------------------------------------------------

def test_every_loss_term_is_finite_and_has_gradients_but_not_into_club(model):
    model.train()
    erased, clean = erased_and_clean(model)
    terms = model.loss(erased, LABELS, clean_batch=clean)
    assert set(terms) == {"task", "boot", "sim_common", "sim_specific", "diff", "restore", "decouple", "recon",
                          "unimodal", "total"}
    club_ids = {id(p) for p in model.auxiliary_parameters()}
    main = [p for p in model.parameters() if p.requires_grad and id(p) not in club_ids]
    for name, value in terms.items():
        assert torch.isfinite(value), name
        grads = torch.autograd.grad(value, main, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} has no gradient"
    model.zero_grad(set_to_none=True)
    terms["total"].backward()
    assert all(p.grad is None for p in model.auxiliary_parameters())


def test_total_is_eq_24_with_eq_2_inside(paper_model):
    """L_total = L_task + α[λ(L_sim + L_diff) + L_re] + β L_recon, L_task = Loss(y, ŷ) + Loss(y, ŷ_boot)."""
    c = paper_model.config
    assert (c.lambda_decouple, c.alpha, c.beta) == (0.7, 0.1, 0.1)
    erased, clean = erased_and_clean(paper_model)
    t = paper_model.loss(erased, LABELS, clean_batch=clean)
    sim = t["sim_common"] + t["sim_specific"]                                               # eq. 7
    decouple = 0.7 * (sim + t["diff"]) + t["restore"]                                       # eq. 2
    assert torch.allclose(t["decouple"], decouple)
    assert torch.allclose(t["total"], t["task"] + t["boot"] + 0.1 * decouple + 0.1 * t["recon"])  # eq. 23-24
    assert t["unimodal"].item() > 0  # computed, but weight 0 in paper configs: it does not enter the total


def test_per_head_labels_mask_unknown_terms(paper_model):
    """(B,) or (B, 4) labels; a NaN label is masked out of its term, never zero-filled."""
    model = paper_model
    erased, clean = erased_and_clean(model)
    nan = float("nan")
    labels = torch.tensor([[2.0, 2.0, nan, 1.0], [nan, -1.0, -1.0, -1.0],
                           [0.5, nan, 0.5, 0.5], [-0.5, -0.5, -0.5, nan]])
    terms = model.loss(erased, labels, clean_batch=clean)
    assert all(torch.isfinite(v) for v in terms.values())
    with torch.no_grad():
        fused = model(*erased.tensors()).fused          # dropout 0: the same prediction as in `loss`
    known = torch.tensor([0, 2, 3])
    assert torch.allclose(terms["task"], (fused[known] - labels[known, 0]).abs().mean(), atol=1e-6)
    flat = model.loss(erased, labels[:, 0].nan_to_num(0.0), clean_batch=clean)
    assert not torch.allclose(flat["task"], terms["task"])   # a zero-filled NaN would count


# ---- the complete-input branch, training only -----------------------------------------------------

def test_complete_input_is_encoded_in_training_and_not_at_inference(paper_model):
    model = paper_model
    erased, clean = erased_and_clean(model, n=4, audio_len=30)
    calls, remove = record_calls({"align_audio": model.align["audio"]})
    try:
        model.loss(erased, LABELS, clean_batch=clean)
        seen = [args[0] for _, args, _ in calls]
        complete_audio = model.clean_inputs(*clean.tensors())[2]    # padding zeroed, as the model sees it
        incomplete_audio = model.clean_inputs(*erased.tensors())[2]
        assert len(seen) == 2 and not torch.equal(complete_audio, incomplete_audio)
        assert any(torch.equal(x, complete_audio) for x in seen), "the complete audio was never encoded"
        assert any(torch.equal(x, incomplete_audio) for x in seen)
        calls.clear()
        model.eval()
        with torch.no_grad():
            model(*clean.tensors())
        assert len(calls) == 1  # inference encodes its one input, nothing else
    finally:
        remove()
        model.train()


def test_training_only_modules_never_run_at_inference(model):
    model.eval()
    training_only = {f"{kind}_{m}": getattr(model, kind)[m] for kind in ("decoder", "restore_decoder", "club")
                     for m in MODALITIES}
    training_only["boot_head"] = model.boot_head
    calls, remove = record_calls(training_only)
    try:
        with torch.no_grad():
            model(*model.example_inputs(2).tensors())
    finally:
        remove()
    assert calls == []


def test_boot_head_is_trained_on_complete_input_common_features(paper_model):
    model = paper_model
    erased, clean = erased_and_clean(model)
    terms = model.loss(erased, LABELS, clean_batch=clean)
    grads = torch.autograd.grad(terms["total"], list(model.boot_head.parameters()))
    assert all(g.abs().sum() > 0 for g in grads), "the boot head gets no gradient from L_total"
    # its input is the complete input's common features: a different complete input moves L_boot only
    other = clean.replace(audio=clean.audio + torch.randn_like(clean.audio))
    moved = model.loss(erased, LABELS, clean_batch=other)
    assert not torch.allclose(moved["boot"], terms["boot"])
    assert torch.allclose(moved["task"], terms["task"])


def test_recon_compares_to_complete_input_features(paper_model):
    """Eq. 17: same incomplete input, different complete input -> L_recon changes, L_task and L_re do not."""
    model = paper_model
    erased, clean = erased_and_clean(model)
    base = model.loss(erased, LABELS, clean_batch=clean)
    other = clean.replace(vision=clean.vision * -1.0)
    moved = model.loss(erased, LABELS, clean_batch=other)
    assert not torch.allclose(moved["recon"], base["recon"])
    for unchanged in ("task", "restore", "sim_common", "sim_specific"):
        assert torch.allclose(moved[unchanged], base[unchanged]), unchanged
    # and L_recon is 0 exactly where the reconstruction equals the complete features: with the
    # complete input equal to the incomplete one it is still > 0 (Ĥ != H), so it is a real target
    assert base["recon"].item() > 0


def test_restoration_loss_targets_the_aligned_incomplete_input(paper_model):
    """Eq. 10: D_m(Concat(other H̃^com, own H̃^spec)) vs Ũ¹_m; gradients reach D_m and the encoders."""
    model = paper_model
    erased, clean = erased_and_clean(model)
    terms = model.loss(erased, LABELS, clean_batch=clean)
    assert terms["restore"].item() > 0
    for part in (model.restore_decoder["text"], model.specific_encoder["text"], model.common_encoder["audio"]):
        grads = torch.autograd.grad(terms["restore"], list(part.parameters()), retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    calls, remove = record_calls({"restore_text": model.restore_decoder["text"],
                                  "common_audio": model.common_encoder["audio"],
                                  "common_vision": model.common_encoder["vision"],
                                  "spec_text": model.specific_encoder["text"]})
    try:
        model.loss(erased, LABELS, clean_batch=clean)
    finally:
        remove()
    outputs = {}
    for name, args, out in calls:
        outputs.setdefault(name, []).append(args[0] if name == "restore_text" else out)
    # first encoder call is the incomplete input's; the decoder input is their concatenation
    expected = torch.cat([outputs["common_audio"][0], outputs["common_vision"][0], outputs["spec_text"][0]], -1)
    assert torch.equal(outputs["restore_text"][0], expected)


def test_gate_mixes_reconstructed_with_original_features(model):
    """Eq. 15-16: the gate sees [Ĥ, H̃] and the fusion gets g ⊙ Ĥ + (1 - g) ⊙ H̃, for com and for spec."""
    model.eval()
    batch = model.example_inputs(3, seed=4)
    watched = {}
    for m in MODALITIES:
        watched.update({f"rec_common_{m}": model.common_reconstructor[m], f"enc_common_{m}": model.common_encoder[m],
                        f"gate_common_{m}": model.common_gate[m], f"fusion_{m}": model.common_fusion[m],
                        f"rec_spec_{m}": model.specific_corrector[m], f"enc_spec_{m}": model.specific_encoder[m],
                        f"gate_spec_{m}": model.specific_gate[m]})
    calls, remove = record_calls(watched)
    try:
        with torch.no_grad():
            model(*batch.tensors())
    finally:
        remove()
    got = {name: (args[0], out) for name, args, out in calls}
    for m in MODALITIES:
        for kind in ("common", "spec"):
            rec, orig = got[f"rec_{kind}_{m}"][1], got[f"enc_{kind}_{m}"][1]
            gate_in, gate_out = got[f"gate_{kind}_{m}"]
            assert torch.equal(gate_in, torch.cat([rec, orig], -1)), (m, kind)
        g = torch.sigmoid(got[f"gate_common_{m}"][1])
        rec, orig = got[f"rec_common_{m}"][1], got[f"enc_common_{m}"][1]
        assert torch.allclose(got[f"fusion_{m}"][0], g * rec + (1 - g) * orig, atol=1e-6), m


def test_common_reconstruction_reads_every_modality(model):
    """Eq. 12: Ĥ_text^com depends on the audio and vision common features too."""
    model.eval()
    batch = model.example_inputs(2, seed=6)
    calls, remove = record_calls({"rec": model.common_reconstructor["text"]})
    try:
        with torch.no_grad():
            model(*batch.tensors())
            model(*batch.replace(vision=batch.vision + torch.randn_like(batch.vision)).tensors())
    finally:
        remove()
    assert calls[0][1][0].shape[-1] == 3 * model.config.hidden_dim
    assert not torch.allclose(calls[0][2], calls[1][2])


# ---- InfoNCE (eq. 6) and CLUB (eq. 9) ------------------------------------------------------------

def test_info_nce_is_eq_6_with_negatives_only_in_the_denominator():
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    positive = torch.tensor([[0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    negative = torch.tensor([[0, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    tau = 0.5
    # one pair (0, 1), one negative (0, 2): -log[exp(0.8 / τ) / exp(0 / τ)]
    assert math.isclose(info_nce(z, positive, negative, tau).item(), -(0.8 / tau), rel_tol=1e-5)


def test_club_upper_bound_separates_dependent_from_independent_pairs():
    torch.manual_seed(0)
    b, k, d = 16, 4, 8
    target = torch.randn(b, k, d)
    valid = torch.ones(b, dtype=torch.bool)
    logvar = torch.zeros(b, k, d)
    dependent = club_upper_bound(target.clone(), logvar, target, valid)   # q predicts the target exactly
    unrelated = club_upper_bound(torch.randn(b, k, d), logvar, target, valid)
    assert dependent.item() > 1.0 and abs(unrelated.item()) < dependent.item() / 4


def test_club_estimator_predicts_common_from_specific(model):
    """Eq. 9: q_θ(H̃^com | H̃^spec): the estimator reads the independent features."""
    model.train()
    erased, clean = erased_and_clean(model)
    calls, remove = record_calls({"club": model.club["audio"].lstm, "spec": model.specific_encoder["audio"]})
    try:
        model.auxiliary_loss(erased, LABELS)
    finally:
        remove()
    got = {name: (args[0], out) for name, args, out in calls}
    assert torch.equal(got["club"][0], got["spec"][1])


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
        assert all(p.grad is None for p in model.common_encoder.parameters())
        optimizer.step()
    assert loss.item() < first - 0.1 * abs(first)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.common_encoder.parameters()))


def test_trainer_fits_club_on_the_erased_batch(tmp_path):
    """Row 11 of the review: the estimator's step sees the batch the main step sees (the erased one)."""
    from moodlens.train.data import load_dataset
    from moodlens.train.trainer import Trainer, load_train_config

    data = load_dataset("synthetic", synthetic_sizes=(8, 4, 4))
    config = load_train_config(model="dar", overrides={"epochs": 1, "batch_size": 8, "seeds": [1]})
    trainer = Trainer(config, data, tmp_path, show_progress=False)
    torch.manual_seed(0)
    model = trainer.build_model()
    seen = {}
    real_aux, real_loss = model.auxiliary_loss, model.loss
    model.auxiliary_loss = lambda batch, labels: (seen.setdefault("aux", batch), real_aux(batch, labels))[1]
    model.loss = lambda batch, labels, **kw: (seen.setdefault("main", batch), real_loss(batch, labels, **kw))[1]
    optimizer, aux = trainer.optimizers(model)
    from rich.progress import Progress

    with Progress(disable=True) as progress:
        trainer.train_epoch(model, optimizer, aux, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1),
                            progress, "epoch")
    assert seen["aux"] is seen["main"]
    assert bool((seen["main"].text_ids == UNK_TOKEN_ID).any())


# ---- erasure (§3.3, §4.2) ------------------------------------------------------------------------

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
    erasable_text = batch.text_mask & (ids != 101) & (ids != 102) & present[:, :1]
    assert torch.equal(where["text"].sum(1), torch.round(erasable_text.sum(1) * ratio).long())
    assert bool((erased.text_ids[where["text"]] == UNK_TOKEN_ID).all())
    assert torch.equal(erased.text_ids[~where["text"]], ids[~where["text"]])
    assert not bool((where["text"] & ~erasable_text).any())
    for m, i in (("audio", 1), ("vision", 2)):
        mask = getattr(batch, f"{m}_mask") & present[:, i:i + 1]
        assert torch.equal(where[m].sum(1), torch.round(mask.sum(1) * ratio).long()), m
        assert not bool((where[m] & ~mask).any()), m
        assert bool((getattr(erased, m)[where[m]] == 0).all()), m
        assert torch.equal(getattr(erased, m)[~where[m]], getattr(batch, m)[~where[m]]), m
    assert torch.equal(erased.audio_mask, batch.audio_mask)  # erased frames stay visible as zeros
    _, other = random_erasure(batch, ratio, UNK_TOKEN_ID, torch.Generator().manual_seed(2))
    assert not torch.equal(other["audio"], where["audio"])


def test_training_batch_erases_at_the_paper_rate_and_keeps_the_complete_batch(model):
    assert model.config.missing_rate == 0.3  # k on MOSI (§4.2)
    batch = model.example_inputs(4, audio_len=30)
    erased, extras = model.training_batch(batch, LABELS, torch.Generator().manual_seed(0))
    assert extras["clean_batch"] is batch
    zeroed = (erased.audio == 0).all(-1) & batch.audio_mask
    expected = torch.round(batch.audio_mask.sum(1) * 0.3).long()
    assert torch.equal(zeroed.sum(1), expected)


# ---- shapes and presence -------------------------------------------------------------------------

def test_text_only_batch_keeps_every_term_finite(model):
    model.train()
    batch = model.example_inputs(4).replace(present=torch.tensor([[True, False, False]] * 4))
    erased, extras = model.training_batch(batch, LABELS, torch.Generator().manual_seed(0))
    terms = model.loss(erased, LABELS, **extras)
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["sim_common"].item() == 0.0  # no second modality: no cross-modal pair
    terms["total"].backward()


def test_alignment_gives_the_unified_length_and_width_for_any_input_length(model):
    model.eval()
    t, d = model.config.common_length, model.config.hidden_dim
    for lt, la, lv in [(5, 7, 3), (30, 200, 45)]:
        batch = model.example_inputs(2, text_len=lt, audio_len=la, vision_len=lv)
        cleaned = model.clean_inputs(*batch.tensors())
        with torch.no_grad():
            aligned, common, specific = model.decouple(*cleaned[:6])
        for m in MODALITIES:
            assert aligned[m].shape == common[m].shape == specific[m].shape == (2, t, d), (m, lt, la, lv)


def test_training_text_cache_and_inference_see_the_same_text_features(model):
    """The trainer's frozen-text cache leaves padded positions zero; the alignment convolution reads
    neighbours, so the model zeroes them itself and cached (training) and plain (inference) scores agree."""
    from moodlens.train.trainer import FrozenTextCache

    model.eval()
    batch = model.example_inputs(3, seed=8)
    with torch.no_grad():
        plain = model(*batch.tensors()).fused
        with FrozenTextCache(model.text_encoder):
            cached = model(*batch.tensors()).fused
    assert torch.allclose(plain, cached, atol=1e-5)
