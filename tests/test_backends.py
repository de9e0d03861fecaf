"""Scoring backends: parity across eager / torch.compile / ONNX Runtime, bucket reuse, the
tensorrt-unavailable sentence and auto's explanation.

Most tests use a small SentimentModel (tests/helpers/models.py: a 1-layer BERT text encoder with random
weights, masked self-attention over audio, masked mean over vision) so inductor and the ONNX
exporter finish in seconds on 2 cores; the backends themselves are model-agnostic.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from helpers.models import make_tiny_model, ragged_batch
from moodlens.models.batch import SentimentOutput
from moodlens.realtime.scoring import backends as B
from moodlens.core.errors import BackendError, ConfigError

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def options(backend_options):
    # Small buckets keep inductor's compile count (and test time) low.
    backend_options.buckets = B.Buckets(batch=[1, 4], text=[16, 32], audio=[32, 64], vision=[16, 32])
    # The float model for the parity and cache tests; the int8 tests below switch it on themselves.
    backend_options.onnxruntime = dataclasses.replace(backend_options.onnxruntime, quantize="none")
    return backend_options


# ---- tests -----------------------------------------------------------------------------------
def test_bucket_size_rounds_up_and_caps():
    assert B.bucket_size(1, [16, 32], 512) == 16
    assert B.bucket_size(17, [16, 32], 512) == 32
    assert B.bucket_size(33, [16, 32], 512) == 64       # past the last bucket: next multiple of it
    assert B.bucket_size(600, [16, 32], 512) == 512      # capped at the model's positional limit


def test_padding_to_buckets_keeps_outputs_exact(tiny):
    batch = ragged_batch(tiny, 3, 11, 40, 9, absent=2)
    padded = B.pad_batch(batch, (4, 16, 64, 16))
    assert padded.text_ids.shape == (4, 16) and padded.audio.shape[:2] == (4, 64)
    with torch.inference_mode():
        ref = tiny(*batch.tensors())
        out = tiny(*padded.tensors())
    for r, o in zip(ref, out):
        torch.testing.assert_close(o[:3], r, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def cpu_backends(tiny, options):
    """One of each CPU backend, shared by the tests (each ONNX export / inductor build costs seconds)."""
    return {name: B.create_backend(name, tiny, "cpu", options) for name in ("eager", "compile", "onnxruntime")}


def test_backend_parity_eager_compile_onnxruntime(tiny, cpu_backends):
    """Same batches through every CPU backend agree within 1e-3, across batch sizes and lengths
    that land in different buckets, with a modality absent in one row."""
    eager, compiled, ort = cpu_backends["eager"], cpu_backends["compile"], cpu_backends["onnxruntime"]
    # (batch, text, audio, vision): the last two share one bucket combination (4, 32, 64, 32).
    cases = [(1, 7, 20, 5), (3, 20, 50, 20), (4, 25, 60, 28)]
    for i, (b, lt, la, lv) in enumerate(cases):
        batch = ragged_batch(tiny, b, lt, la, lv, seed=i, absent=i % 3)
        ref = eager(batch)
        assert ref.fused.shape == (b,)
        assert torch.isfinite(ref.fused).all()
        for backend in (compiled, ort):
            out = backend(batch)
            for name, r, o in zip(SentimentOutput._fields, ref, out):
                assert o.shape == (b,), (backend.name, name)
                torch.testing.assert_close(o, r, atol=1e-3, rtol=1e-3, msg=f"{backend.name} {name} case {i}")
    assert ort.builds == 1  # one export with dynamic dims serves every shape


def test_compile_reuses_one_artifact_per_bucket(tiny, cpu_backends):
    backend = cpu_backends["compile"]
    before = backend.builds
    backend(ragged_batch(tiny, 1, 9, 33, 17, seed=1))      # buckets (1, 16, 64, 32): new
    per_bucket = backend.builds - before
    assert per_bucket >= 1
    # Different raw lengths that fall in the same buckets: no rebuild.
    for seed, (lt, la, lv) in enumerate([(12, 40, 20), (16, 64, 32), (10, 50, 25)]):
        backend(ragged_batch(tiny, 1, lt, la, lv, seed=seed))
    assert backend.builds == before + per_bucket
    backend(ragged_batch(tiny, 1, 20, 40, 20))             # text moves to the 32 bucket: one more
    assert backend.builds == before + 2 * per_bucket


def test_onnx_export_is_cached_on_disk(tiny, options, cpu_backends):
    first = cpu_backends["onnxruntime"]
    second = B.create_backend("onnxruntime", tiny, "cpu", options)
    assert first.path == second.path and first.path.exists()
    assert second.builds == 0 and second.cache_hits == 1
    other = make_tiny_model(first.path.parent / "other_encoder", seed=1)
    assert B.OnnxRuntimeBackend.export_path(_PathOnly(other, options)) != first.path  # keyed by weights
    assert f"-opset{options.onnxruntime.opset}{B.ATTENTION_REWRITE}-" in first.path.name
    on_cuda = _PathOnly(tiny, options)
    on_cuda.device = torch.device("cuda")      # only the name is computed: CUDA keeps its own (unrewritten) opset
    assert f"-opset{options.onnxruntime.opset_cuda}-ort" in B.OnnxRuntimeBackend.export_path(on_cuda).name


def test_opset23_attention_rewrite_is_exact_and_drops_the_head_reshapes(tiny, options, tmp_path):
    """The shipped export (opset 23): every Attention node takes 3-D inputs after the rewrite, no head
    split / merge Transposes are left, the key masks ONNX Runtime's kernel needs expanded are, and the
    file gives eager's outputs on ragged batches with an absent modality (the parity test above runs it
    too); the opset-18 export of the same model has more nodes and no Attention node."""
    import onnx

    assert options.onnxruntime.opset >= 23
    backend = B.create_backend("onnxruntime", tiny, "cpu", options)
    graph = onnx.load(str(backend.path)).graph
    attention = [n for n in graph.node if n.op_type == "Attention"]
    assert len(attention) == 2          # the 1-layer BERT and the audio self-attention
    assert all({a.name for a in n.attribute} >= {"q_num_heads", "kv_num_heads"} for n in attention)
    assert not [n for n in graph.node if n.op_type == "Transpose"]
    assert sum(n.op_type == "Expand" and n.output[0].endswith("_full") for n in graph.node) == 1   # audio's mask
    eager = B.create_backend("eager", tiny, "cpu", options)
    for i, shape in enumerate([(1, 7, 20, 5), (3, 12, 33, 9), (2, 3, 3, 3)]):
        batch = ragged_batch(tiny, *shape, seed=i, absent=i % 3)
        for name, want, got in zip(SentimentOutput._fields, eager(batch), backend(batch)):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"{name} at {shape}")
    old = dataclasses.replace(options, onnxruntime=dataclasses.replace(options.onnxruntime, opset=18))
    old_backend = B.OnnxRuntimeBackend.__new__(B.OnnxRuntimeBackend)
    old_backend.model, old_backend.options, old_backend.device = tiny, old, torch.device("cpu")
    old_path = tmp_path / "opset18.onnx"
    old_backend.export(old_path)
    old_graph = onnx.load(str(old_path)).graph
    assert not [n for n in old_graph.node if n.op_type == "Attention"]
    assert len(graph.node) < len(old_graph.node)


def test_attention_rewrite_leaves_a_graph_without_attention_alone(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], "g", [x], [y])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert B.simplify_attention(path) == {"attention": 0, "three_d": 0, "masks": 0, "nodes": 1}
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["Transpose"]


class _PathOnly:
    """Just enough of a backend to compute its cache path without exporting."""

    opset = B.OnnxRuntimeBackend.opset

    def __init__(self, model, options):
        self.model, self.options, self.device = model, options, torch.device("cpu")


def test_tensorrt_unavailable_says_what_to_install(tiny, options):
    with pytest.raises(BackendError) as err:
        B.create_backend("tensorrt", tiny, "cpu", options)
    message = str(err.value)
    assert message.startswith("The tensorrt backend is unavailable: install ")
    assert "torch-tensorrt" in message or "CUDA" in message
    assert "\n" not in message


def test_auto_explains_its_choice(tiny, options):
    backend = B.create_backend("auto", tiny, "cpu", options)
    assert backend.name == options.auto_order.cpu[0]
    assert backend.reason.startswith(f"auto chose {backend.name} on cpu")
    # Make the first choice unavailable: auto moves on and says why it skipped it.
    options_no_ort = B.BackendOptions.from_dict({"auto_order": {"cpu": ["tensorrt", "eager"]}})
    name, why = B.choose_auto(torch.device("cpu"), options_no_ort)
    assert name == "eager"
    assert "skipped tensorrt (unavailable: install" in why


def test_bad_backend_options_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'bucketz'"):
        B.BackendOptions.from_dict({"bucketz": {}})
    with pytest.raises(ConfigError, match="rising list"):
        B.BackendOptions.from_dict({"buckets": {"text": [32, 16]}})
    with pytest.raises(ConfigError, match="Unknown backend 'fast'"):
        B.create_backend("fast", nn.Linear(1, 1), "cpu")


def test_export_cache_keeps_the_most_recent_files(tmp_path):
    import os
    import time as _time

    for i in range(5):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(b"x")
        os.utime(f, (_time.time() - 100 + i, _time.time() - 100 + i))
    B.prune_cache(tmp_path, "*.onnx", keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["m3.onnx", "m4.onnx"]


def test_int8_onnxruntime_keeps_parity_or_falls_back(tiny, options, cpu_backends):
    import dataclasses

    import torch

    float_backend = cpu_backends["onnxruntime"]          # exported and cached above
    int8 = dataclasses.replace(options, onnxruntime=dataclasses.replace(options.onnxruntime, quantize="int8"))
    quant = B.create_backend("onnxruntime", tiny, "cpu", int8)
    assert quant.quantized and quant.path.name.endswith("-int8text.onnx") and quant.path.exists()
    # Only the text encoder's weight MatMuls are quantized: the other branches stay float.
    names = B.text_encoder_matmuls(float_backend.path)
    assert names and all(n.startswith("node_") for n in names)
    assert 0 < quant.parity <= int8.onnxruntime.int8_parity     # measured against the float model
    batch = tiny.example_inputs(2, text_len=12, audio_len=30, vision_len=20)
    got, ref = quant(batch), float_backend(batch)
    for a, b in zip(got, ref):
        both = torch.isfinite(a) & torch.isfinite(b)
        assert float((a - b)[both].abs().max()) <= 2 * int8.onnxruntime.int8_parity
    # The first int8_shadow_windows calls were also run by the float model and returned its result.
    assert quant.shadow_checks == min(quant.calls, int8.onnxruntime.int8_shadow_windows)
    # A bound the int8 model cannot keep: the float model is used, and said so in the log.
    strict = dataclasses.replace(options, onnxruntime=dataclasses.replace(options.onnxruntime, quantize="int8",
                                                                          int8_parity=1e-9))
    fallback = B.create_backend("onnxruntime", tiny, "cpu", strict)
    assert not fallback.quantized and fallback.path == float_backend.path
    with pytest.raises(B.ConfigError, match="quantize must be none or int8"):
        B.OnnxRuntimeOptions(quantize="fp4")


def test_int8_falls_back_on_a_live_window_over_the_bound(tiny, options, cpu_backends):
    import dataclasses

    float_backend = cpu_backends["onnxruntime"]
    int8 = dataclasses.replace(options, onnxruntime=dataclasses.replace(options.onnxruntime, quantize="int8",
                                                                        int8_shadow_windows=2, int8_recheck_every=3))
    quant = B.create_backend("onnxruntime", tiny, "cpu", int8)
    assert quant.quantized
    batch = tiny.example_inputs(1, text_len=10, audio_len=20, vision_len=12, seed=3)
    ref = float_backend(batch)
    for call in range(6):
        was_shadowed = quant._shadowed()
        out = quant(batch)
        if was_shadowed:                      # checked calls return the float model's result
            for a, b in zip(out, ref):
                torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert quant.shadow_checks == 3 and quant.live_parity is not None      # calls 0, 1 and 4
    # A live window over the bound: the float model from then on, for good.
    quant.options = dataclasses.replace(int8, onnxruntime=dataclasses.replace(int8.onnxruntime, int8_parity=1e-12))
    quant.calls = 0                           # the next call is a shadowed one
    quant(batch)
    assert not quant.quantized and quant.path == float_backend.path and "max difference" in quant.int8_rejected
    for a, b in zip(quant(batch), ref):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert quant.describe()["int8_rejected"]


@pytest.mark.slow
@pytest.mark.export
def test_shipped_weights_keep_int8_with_the_shipped_settings(tmp_path):
    """The int8 settings of configs/live/backends.yaml belong to the weights they were chosen on (stage 7's averaged
    MiniLM failed the file-time check at stage 6's alpha 0.8 / layers 0-1: 0.166 > 0.15, and the scorer quietly ran
    float). A retrain that breaks them must fail here, not slow the product down unnoticed."""
    from moodlens.models.checkpoint import load_checkpoint

    model = load_checkpoint("default").model.eval()
    options = dataclasses.replace(B.BackendOptions.load(), cache_dir=str(tmp_path))
    assert options.onnxruntime.quantize == "int8"
    backend = B.create_backend("onnxruntime", model, "cpu", options)
    assert backend.quantized, f"int8 refused: file-time parity {backend.parity:.3f}"
    assert backend.parity <= options.onnxruntime.int8_parity
