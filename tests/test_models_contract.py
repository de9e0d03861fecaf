"""The contract every model in MODEL_NAMES keeps (models/batch.py, models/base.py):
finite losses with gradients, absent modalities that cannot influence any output, torch.export and
ONNX (dynamo) export matching eager in ONNX Runtime at other shapes, and a graph that can learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.export import Dim

from moodlens.models import MODEL_NAMES, MultimodalBatch, SentimentOutput, build_model

OUTPUT_NAMES = ["score_" + f for f in SentimentOutput._fields]  # differ from the input names on purpose



def fresh_model(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, overrides or None)


@pytest.fixture(scope="module")
def shared_model():
    """shared_model(name): one eval-mode model per name for the read-only checks of this module
    (building loads the text encoder); freed when the module ends."""
    models: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in models:
            models[name] = fresh_model(name).eval()
        return models[name]

    return get


def mixed_presence(model, batch_size: int = 6, seed: int = 0, **lengths) -> MultimodalBatch:
    """A batch whose rows cover: all present, audio absent, vision absent, text absent, text only, none."""
    batch = model.example_inputs(batch_size, seed=seed, **lengths)
    patterns = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    return batch.replace(present=patterns[torch.arange(batch_size) % len(patterns)])


def spread_labels(n: int) -> torch.Tensor:
    # Pairs of close labels so label-threshold / same-class pair selection always finds pairs.
    base = torch.tensor([-2.0, -1.9, 0.4, 0.5, 2.0, 2.1, -0.8, -0.7])
    return base[torch.arange(n) % len(base)]


def scramble_absent(batch: MultimodalBatch, seed: int, use_nan: bool) -> MultimodalBatch:
    """Overwrite every absent modality's tensors (values, masks, token ids) with junk."""
    g = torch.Generator().manual_seed(seed)
    present = batch.present
    fields = {}
    for i, (value, mask) in enumerate((("text_ids", "text_mask"), ("audio", "audio_mask"), ("vision", "vision_mask"))):
        off = ~present[:, i]
        x, m = getattr(batch, value), getattr(batch, mask)
        if value == "text_ids":
            junk = torch.randint(1000, 20000, x.shape, generator=g)
        else:
            junk = torch.full_like(x, float("nan")) if use_nan else torch.randn(x.shape, generator=g) * 50
        junk_mask = torch.rand(m.shape, generator=g) > 0.5
        fields[value] = torch.where(off.view(-1, *[1] * (x.dim() - 1)), junk, x)
        fields[mask] = torch.where(off.unsqueeze(1), junk_mask, m)
    return batch.replace(**fields)


def run_loss(model, batch, labels):
    batch, extras = model.training_batch(batch, labels, torch.Generator().manual_seed(0))
    return model.loss(batch, labels, **extras)


def main_parameters(model):
    auxiliary = {id(p) for p in model.auxiliary_parameters()}
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in auxiliary]


# ---- losses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_loss_term_is_finite_and_trains_parameters(name):
    model = fresh_model(name).train()
    batch = mixed_presence(model, 8, text_len=10, audio_len=30, vision_len=12)
    labels = spread_labels(8)
    called = set()
    hooks = [m.register_forward_hook(lambda mod, args, out: called.add(id(mod))) for m in model.modules()]
    terms = run_loss(model, batch, labels)
    for hook in hooks:
        hook.remove()
    assert "total" in terms and len(terms) >= 2
    params = main_parameters(model)
    for term_name, term in terms.items():
        assert term.dim() == 0, f"{name}: loss term '{term_name}' is not a scalar"
        assert torch.isfinite(term), f"{name}: loss term '{term_name}' is {term.item()}"
        assert term.requires_grad, f"{name}: loss term '{term_name}' carries no gradient"
        grads = torch.autograd.grad(term, [p for _, p in params], retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), \
            f"{name}: loss term '{term_name}' moves no parameter"
    terms["total"].backward()
    # every parameter of a module the loss ran (or of the model itself) must get a finite gradient
    used = {id(p) for m in model.modules() if id(m) in called or m is model for p in m.parameters(recurse=False)}
    dead = [n for n, p in params if id(p) in used and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not dead, f"{name}: trainable parameters without a finite gradient from 'total': {dead[:5]}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_text_only_training_batch_gives_finite_loss(name):
    model = fresh_model(name).train()
    batch = model.example_inputs(6, text_len=10, audio_len=20, vision_len=8)
    batch = batch.replace(present=torch.tensor([[True, False, False]] * 6))
    terms = run_loss(model, batch, spread_labels(6))
    for term_name, term in terms.items():
        assert torch.isfinite(term), f"{name}: with text only, loss term '{term_name}' is {term.item()}"
    terms["total"].backward()
    grads = [p.grad for _, p in main_parameters(model) if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ---- absent modalities -------------------------------------------------------------------------

@pytest.mark.parametrize("use_nan", [False, True], ids=["junk", "nan"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_absent_modalities_cannot_change_any_output(name, use_nan, shared_model):
    model = shared_model(name)
    batch = mixed_presence(model, 6, seed=3)
    with torch.no_grad():
        reference = model(*batch.tensors())
        scrambled = model(*scramble_absent(batch, seed=7, use_nan=use_nan).tensors())
    for field, a, b in zip(SentimentOutput._fields, reference, scrambled):
        assert a.shape == (6,)
        assert torch.isfinite(a).all(), f"{name}: {field} output is not finite"
        assert torch.equal(a, b), f"{name}: absent-modality values changed the {field} output"
    # the check has teeth: changing a *present* modality does change the fused output
    present_audio = batch.replace(audio=batch.audio + 1.0)
    with torch.no_grad():
        moved = model(*present_audio.tensors()).fused
    rows = batch.present[:, 1]
    assert not torch.allclose(moved[rows], reference.fused[rows])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_outputs_stay_on_the_label_scale(name, shared_model):
    model = shared_model(name)
    batch = model.example_inputs(4, seed=5)
    batch = batch.replace(audio=batch.audio * 100, vision=batch.vision * 100)
    with torch.no_grad():
        out = model(*batch.tensors())
    bound = model.config.output_range + 1e-4
    for field, x in zip(SentimentOutput._fields, out):
        assert x.shape == (4,) and torch.isfinite(x).all() and x.abs().max() <= bound, field


# ---- export ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(shared_model, tmp_path_factory):
    """exported(name) -> (torch.export program, ONNX path), exported once per model in this module.
    (About 5 s CPU for torch.export and 12 s for the ONNX translation per model on this machine.)"""
    done: dict[str, tuple] = {}

    def get(name: str):
        if name in done:
            return done[name]
        model = shared_model(name)
        batch = model.example_inputs(2)
        shapes = batch.dynamic_shapes(Dim("batch"))
        program = torch.export.export(model, batch.tensors(), dynamic_shapes=shapes)
        path = tmp_path_factory.mktemp(f"onnx_{name}") / f"{name}.onnx"
        # the ONNX exporter takes the program as is (dynamic shapes included): one export, not two
        torch.onnx.export(program, batch.tensors(), str(path), dynamo=True,
                          input_names=list(MultimodalBatch.FIELDS), output_names=OUTPUT_NAMES)
        done[name] = (program, path)
        return done[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.export
def test_torch_export_with_dynamic_batch_and_lengths(name, shared_model, exported):
    model = shared_model(name)
    program, _ = exported(name)
    batch = mixed_presence(model, 5, seed=11, text_len=17, audio_len=64, vision_len=9)
    with torch.no_grad():
        eager = model(*batch.tensors())
        graph = program.module()(*batch.tensors())
    for field, a, b in zip(SentimentOutput._fields, eager, graph):
        assert torch.allclose(a, b, atol=1e-4), f"{name}: exported {field} differs from eager"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.export
def test_onnx_runtime_matches_eager_at_other_shapes(name, shared_model, exported):
    import onnxruntime as ort

    model = shared_model(name)
    _, path = exported(name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == OUTPUT_NAMES
    for seed, (b, lt, la, lv) in enumerate([(3, 20, 70, 9), (1, 6, 33, 40)]):
        batch = mixed_presence(model, b, seed=seed, text_len=lt, audio_len=la, vision_len=lv)
        with torch.no_grad():
            eager = model(*batch.tensors())
        feeds = {k: v.numpy() for k, v in zip(MultimodalBatch.FIELDS, batch.tensors())}
        for field, got, want in zip(SentimentOutput._fields, session.run(OUTPUT_NAMES, feeds), eager):
            assert got.shape == (b,)
            np.testing.assert_allclose(got, want.numpy(), atol=1e-3, err_msg=f"{name}: ONNX {field} at batch {b}")


# ---- learning ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_overfit(name):
    """A handful of samples driven to low error proves gradients reach the whole prediction graph.
    (60 Adam steps at 3e-3 took all five models from MAE ~1.1 to <= 0.15 when this was written.)"""
    steps = 60
    model = fresh_model(name, dropout=0.0).train()
    batch = model.example_inputs(6, text_len=8, audio_len=20, vision_len=8, seed=21)
    labels = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5])
    params = [p for _, p in main_parameters(model)]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    aux_params = model.auxiliary_parameters()
    aux_optimizer = torch.optim.Adam(aux_params, lr=3e-3) if aux_params else None

    def fused_error():
        model.eval()
        with torch.no_grad():
            error = (model(*batch.tensors()).fused - labels).abs().mean().item()
        model.train()
        return error

    start = fused_error()
    for _ in range(steps):
        if aux_optimizer is not None:
            aux_optimizer.zero_grad()
            model.auxiliary_loss(batch, labels).backward()
            aux_optimizer.step()
        optimizer.zero_grad()
        terms = run_loss(model, batch, labels)
        terms["total"].backward()
        optimizer.step()
    end = fused_error()
    assert math.isfinite(end)
    assert end < 0.25 and end < 0.3 * start, f"{name}: fused MAE went {start:.3f} -> {end:.3f} in {steps} steps"


# ---- `moodlens models` -------------------------------------------------------------------------

def test_models_command_lists_every_model_with_counts_and_dims(capsys):
    import argparse
    import json

    from moodlens.models import catalog

    parser = argparse.ArgumentParser()
    catalog.add_arguments(parser)
    assert catalog.main(parser.parse_args(["--json"])) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert tuple(listed) == MODEL_NAMES
    for name, row in listed.items():
        assert row["error"] is None, f"{name}: {row['error']}"
        model = build_model(name, load_text_weights=False)
        assert row["total_parameters"] == sum(p.numel() for p in model.parameters())
        assert row["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert 0 < row["trainable_parameters"] < row["total_parameters"]  # frozen text encoder by default
        assert (row["text_dim"], row["audio_dim"], row["vision_dim"], row["text_max_len"]) == (
            model.config.text_dim, model.config.audio_dim, model.config.vision_dim, model.config.text_max_len)
    assert catalog.main(parser.parse_args(["hcrl_mfd"])) == 0
    table = capsys.readouterr().out
    assert "hcrl_mfd" in table and f"{listed['hcrl_mfd']['total_parameters']:,}" in table


def test_models_command_refuses_an_unknown_name():
    import argparse

    from moodlens.models import catalog
    from moodlens.core.errors import ConfigError

    parser = argparse.ArgumentParser()
    catalog.add_arguments(parser)
    with pytest.raises(ConfigError, match="Unknown model 'nope'"):
        catalog.main(parser.parse_args(["nope"]))


# ---- checkpoints and real feature shapes -------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_state_round_trip(name, shared_model):
    source = shared_model(name)
    state = source.checkpoint_state()
    assert not any(k.startswith("text_encoder.embeddings.") for k in state)  # frozen encoder ships with its package
    torch.manual_seed(123)
    target = build_model(name).eval()
    batch = mixed_presence(source, 3, seed=9)
    target.load_checkpoint_state(state)
    with torch.no_grad():
        for a, b in zip(source(*batch.tensors()), target(*batch.tensors())):
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_real_mmsa_feature_batch(name, shared_data):
    """MMSA-FET padded batch (BERT token ids, 25-d openSMILE audio, 171-d OpenFace vision)."""
    import pickle

    with open(shared_data / "mmsa_fet_examples" / "batch_example.pkl", "rb") as f:
        raw = pickle.load(f)
    ids = torch.as_tensor(raw["text_bert"][:, 0]).long()
    text_mask = torch.as_tensor(raw["text_bert"][:, 1]).bool()
    audio_len, vision_len = torch.as_tensor(raw["audio_lengths"]), torch.as_tensor(raw["vision_lengths"])
    la, lv = int(audio_len.max()), int(vision_len.max())
    audio = torch.as_tensor(raw["audio"][:, :la], dtype=torch.float32)
    vision = torch.as_tensor(raw["vision"][:, :lv], dtype=torch.float32)
    batch = MultimodalBatch(ids, text_mask, audio, torch.arange(la)[None] < audio_len[:, None],
                            vision, torch.arange(lv)[None] < vision_len[:, None], torch.ones(2, 3, dtype=torch.bool))
    torch.manual_seed(0)
    model = build_model(name, {"audio_dim": audio.shape[-1], "vision_dim": vision.shape[-1]})
    with torch.no_grad():
        out = model.eval()(*batch.tensors())
    assert all(torch.isfinite(x).all() and x.shape == (2,) for x in out)
    terms = run_loss(model.train(), batch, torch.tensor([1.4, -0.6]))
    assert all(torch.isfinite(v) for v in terms.values())
