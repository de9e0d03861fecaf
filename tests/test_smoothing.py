"""SmoothQuant smoothing before int8 (realtime/scoring/smoothing.py): a float identity, an int8 path that
keeps parity where plain int8 does not (a synthetic outlier channel), and its config refused in one sentence.

The model is the tiny one of tests/helpers/models.py (1-layer BERT text encoder, random weights) with a
word-piece vocabulary written beside its config so the live TextFeaturizer can tokenize the bundled
calibration sentences, and one LayerNorm channel blown up x40: the activation outlier channel that BERT-family
encoders have (all-MiniLM-L6-v2: channel 99 at |x| ~ 30 vs a median 1.8, docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from helpers.models import make_tiny_model
from moodlens.core.errors import ConfigError
from moodlens.realtime.scoring import backends as B
from moodlens.realtime.scoring import smoothing as S

OUTLIER = 5          # the LayerNorm channel made an outlier


def _words() -> list[str]:
    words = set()
    for sentence in S.calibration_sentences():
        words.update(re.findall(r"[a-z]+|[^\sa-z]", sentence.lower()))
    return sorted(words)


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_vocab")
    model = make_tiny_model(folder, seed=3)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (folder / "vocab.txt").write_text("\n".join(special + _words()) + "\n")
    with torch.no_grad():
        for name, module in model.text_encoder.named_modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[OUTLIER] *= 40.0       # an outlier channel in every LayerNorm output
    return model.eval()


def _outputs(model, batch):
    with torch.inference_mode():
        return model(*batch.tensors())


def test_smoothing_is_a_float_identity_and_flattens_the_outlier(outlier_model):
    batches = S.calibration_batches(outlier_model)
    assert len(batches) == len(S.calibration_sentences()) > 100
    before = {k: v.clone() for k, v in outlier_model.state_dict().items()}
    smoothed = S.smooth_text_encoder(outlier_model, batches, alpha=0.5)
    # A deep copy: the model itself (its weights on disk) is unchanged.
    assert all(torch.equal(before[k], v) for k, v in outlier_model.state_dict().items())
    for seed in range(3):
        batch = outlier_model.example_inputs(2, text_len=12, audio_len=20, vision_len=10, seed=seed)
        for a, b in zip(_outputs(outlier_model, batch), _outputs(smoothed, batch)):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # The MatMul inputs of the smoothed copy: the outlier channel no longer dominates the per-tensor range.
    raw = S.input_channel_max(outlier_model, batches)["model.encoder.layer.0.intermediate.dense"]
    flat = S.input_channel_max(smoothed, batches)["model.encoder.layer.0.intermediate.inner.dense"]
    assert raw.argmax() == OUTLIER and raw.max() / raw.median() > 10
    assert flat.max() / flat.median() < raw.max() / raw.median() / 3


def test_smoothing_refuses_alpha_outside_0_1(outlier_model):
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        S.smooth_text_encoder(outlier_model, [], alpha=1.0)


def _int8(options, **kwargs):
    return dataclasses.replace(options, onnxruntime=dataclasses.replace(
        options.onnxruntime, quantize="int8", int8_parity=1e9, int8_shadow_windows=0, int8_recheck_every=0, **kwargs))


def _max_diff(a_backend, b_backend, batches):
    return max(float((a - b).abs().max()) for batch in batches for a, b in zip(a_backend(batch), b_backend(batch)))


@pytest.mark.export
def test_int8_with_smoothing_keeps_parity_where_plain_int8_does_not(outlier_model, backend_options):
    options = dataclasses.replace(backend_options, onnxruntime=dataclasses.replace(
        backend_options.onnxruntime, quantize="none", int8_float_matmuls=[]))
    float_backend = B.create_backend("onnxruntime", outlier_model, "cpu", options)
    plain = B.create_backend("onnxruntime", outlier_model, "cpu", _int8(options, int8_smoothing_alpha=0.0))
    smooth = B.create_backend("onnxruntime", outlier_model, "cpu", _int8(options, int8_smoothing_alpha=0.5))
    assert plain.quantized and smooth.quantized
    assert "-smooth0.5-" in smooth.path.name and smooth.path.name.endswith("-int8text.onnx")
    assert smooth.smoothing_float_diff is not None and smooth.smoothing_float_diff < 1e-4
    # The next start loads the cached int8 file: no calibration, export or quantization again.
    again = B.create_backend("onnxruntime", outlier_model, "cpu", _int8(options, int8_smoothing_alpha=0.5))
    assert again.quantized and again.path == smooth.path and again.builds == 0
    featurizer_batches = S.calibration_batches(outlier_model)[:40]
    windows = [outlier_model.example_inputs(1, text_len=ids.shape[1], audio_len=20, vision_len=10, seed=i).replace(
        text_ids=ids, text_mask=mask) for i, (ids, mask) in enumerate(featurizer_batches)]
    plain_diff = _max_diff(float_backend, plain, windows)
    smooth_diff = _max_diff(float_backend, smooth, windows)
    assert smooth_diff < 0.7 * plain_diff, (smooth_diff, plain_diff)   # measured 0.0028 vs 0.0052
    # Kept-float MatMuls are left out of the int8 file, and name a file of their own.
    smoothed_file = smooth.path.with_name(smooth.path.name.removesuffix("-int8text.onnx") + ".onnx")
    for source in (smoothed_file, smooth.float_path):       # with and without smoothing's wrappers
        assert len(B.text_encoder_matmuls(source)) == 6
        assert len(B.text_encoder_matmuls(source, keep_float=["0.ffn_out", "0.query"])) == 4
    partial = B.create_backend("onnxruntime", outlier_model, "cpu",
                               _int8(options, int8_smoothing_alpha=0.5, int8_float_matmuls=["0.ffn_out"]))
    assert partial.quantized and partial.path != smooth.path


@pytest.mark.parametrize("values, words", [
    ({"int8_smoothing_alpha": 1.5}, "int8_smoothing_alpha must be 0 (off) or between 0 and 1, not 1.5."),
    ({"int8_smoothing_alpha": -0.1}, "int8_smoothing_alpha must be 0 (off) or between 0 and 1, not -0.1."),
    ({"int8_float_matmuls": ["1.mlp"]}, "int8_float_matmuls entry '1.mlp' must be <layer>.<kind>"),
])
def test_bad_smoothing_config_is_refused_in_one_sentence(values, words):
    with pytest.raises(ConfigError) as err:
        B.BackendOptions.from_dict({"onnxruntime": values})
    message = " ".join(str(err.value).split())
    assert words in message and "\n" not in str(err.value) and message.count(". ") == 0
