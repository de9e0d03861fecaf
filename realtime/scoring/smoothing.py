"""SmoothQuant activation smoothing of the text encoder, before int8 quantization.

    smoothed = smooth_text_encoder(model, calibration_batches(model), alpha=0.5)   # a deep copy

Dynamic int8 (onnxruntime.quantization.quantize_dynamic) quantizes each MatMul's activation with
one scale per tensor, so a few outlier channels (BERT-family LayerNorm outputs: in the default
model's all-MiniLM-L6-v2, channel 99 reaches |x| = 28-30 at the FFN input where the median channel
is 1.8, docs/benchmarks.md) set the step for every other channel. SmoothQuant (Xiao et al. 2023, arXiv
2211.10438) moves that range into the weights, which are quantized per output channel:

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)                 (eq. 4)
    Y = X W = (X diag(s)^-1) (diag(s) W) = X' W'                (eq. 3)

(Y = X W = X' W' exactly in real arithmetic; max|X_j| over calibration tokens, max|W_j| over the
output channels that read input channel j; alpha 0.7 in configs/live/backends.yaml, chosen on MOSI
train parity, where the paper uses 0.5 for most models). Where s goes, per MatMul of a BERT-like layer:

- attention output dense: folded into the value projection (V's output channel j divided by s_j):
  the context is softmax(QK^T) V, linear in each channel of V, so this is exact and costs nothing;
- Q/K/V (one s shared by the three, max|W_j| over all three) and the FFN in: the paper folds s into
  the preceding LayerNorm, but BERT is post-LN: that LayerNorm's output is also the residual the
  next sub-layer adds, so folding would change the residual. An explicit multiply by 1/s instead
  (one elementwise Mul on the (L, 384) input; the 18 Muls cost ~0.25 ms per window at batch 1);
- FFN out: its input is GELU's output (no linear producer to fold into): the same explicit multiply.

The float graph of the smoothed copy matches the original to rounding (~1e-6, tests/test_smoothing.py);
the weights on disk are not touched. Encoders without the BERT layer layout are returned unsmoothed.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "assets" / "calibration_sentences.txt"
MIN_SCALE = 1e-5   # s_j is clamped here: a dead channel (max |X_j| = 0) must not divide by zero


class _ScaleFirstInput(nn.Module):
    """`inner(x / s, *rest)`: the explicit X' = X diag(s)^-1 of eq. 3, where there is no producer to fold s into."""

    def __init__(self, inner: nn.Module, scale: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("inv_scale", (1.0 / scale).to(torch.float32))

    def forward(self, x, *args, **kwargs):
        return self.inner(x * self.inv_scale, *args, **kwargs)


def calibration_sentences(path: str | Path | None = None) -> list[str]:
    """The bundled English calibration sentences (written for this project; MOSI stays the parity check)."""
    lines = Path(path or CALIBRATION_FILE).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def calibration_batches(model: nn.Module,
                        sentences: list[str] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, mask) per sentence, tokenized by the live TextFeaturizer of the model's own encoder folder,
    one sentence per batch (a live window holds one utterance: no padding in the statistics)."""
    from moodlens.realtime.perception.features.text import TextFeaturizer

    featurizer = TextFeaturizer(model.text_encoder.source, max_len=50)
    out = []
    for sentence in sentences or calibration_sentences():
        enc = featurizer.encode([sentence])
        out.append((torch.from_numpy(enc.ids), torch.from_numpy(enc.mask)))
    return out


def _bert_layers(encoder: nn.Module) -> list[nn.Module]:
    """The layers with BERT's layout (attention.self.{query,key,value}, attention.output.dense,
    intermediate.dense, output.dense); [] for any other encoder."""
    layers = list(encoder.layers)
    needed = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "intermediate.dense", "output.dense")
    for layer in layers:
        names = dict(layer.named_modules())
        if not all(isinstance(names.get(n), nn.Linear) for n in needed):
            return []
    return layers


@torch.no_grad()
def input_channel_max(model: nn.Module, batches) -> dict[str, torch.Tensor]:
    """max |X_j| over every calibration token, per input channel of each Linear in the text encoder
    (keyed by the Linear's name under text_encoder)."""
    encoder = model.text_encoder
    stats: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_module, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            stats[name] = torch.maximum(stats[name], x) if name in stats else x
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in encoder.named_modules() if isinstance(m, nn.Linear)]
    try:
        device = next(encoder.parameters()).device
        for ids, mask in batches:
            encoder(ids.to(device), mask.to(device))
    finally:
        for h in handles:
            h.remove()
    return stats


def smoothing_scale(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Eq. 4 of SmoothQuant: s_j = max|X_j|^alpha / max|W_j|^(1-alpha). nn.Linear stores W as
    (out, in), so max|W_j| is over dim 0 (and over every Linear that reads the same input)."""
    w_max = torch.cat([w.detach().abs() for w in weights], 0).amax(0).float()
    s = act_max.clamp_min(MIN_SCALE).pow(alpha) / w_max.clamp_min(MIN_SCALE).pow(1 - alpha)
    return s.clamp_min(MIN_SCALE)


@torch.no_grad()
def smooth_text_encoder(model: nn.Module, batches, *, alpha: float = 0.5) -> nn.Module:
    """A deep copy of `model` whose text encoder is smoothed (module docstring); `model` is not changed."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    act = input_channel_max(model, batches)
    smoothed = copy.deepcopy(model)
    encoder = smoothed.text_encoder
    layers = _bert_layers(encoder)
    if not layers:
        log.warning("text encoder %s has no BERT-like layers; int8 runs without smoothing", encoder.model_type)
        return smoothed
    prefix = f"model.{encoder._layers_name}"
    for i, layer in enumerate(layers):
        name = f"{prefix}.{i}"
        attn = layer.attention
        q, k, v = attn.self.query, attn.self.key, attn.self.value
        # Q/K/V: one s (they read the same input), an explicit 1/s on that input.
        s = smoothing_scale(act[f"{name}.attention.self.query"], [q.weight, k.weight, v.weight], alpha)
        for lin in (q, k, v):
            lin.weight.mul_(s)                       # W' = diag(s) W: column j of (out, in) times s_j
        attn.self = _ScaleFirstInput(attn.self, s)
        # Attention output: fold 1/s into V's output channels (exact: the context is linear in V).
        dense = attn.output.dense
        s = smoothing_scale(act[f"{name}.attention.output.dense"], [dense.weight], alpha)
        v.weight.div_(s[:, None])
        v.bias.div_(s)
        dense.weight.mul_(s)
        # FFN in and FFN out: an explicit 1/s (post-LN residual; GELU before FFN out).
        for attr, key in (("intermediate", "intermediate.dense"), ("output", "output.dense")):
            lin = getattr(layer, attr).dense
            s = smoothing_scale(act[f"{name}.{key}"], [lin.weight], alpha)
            lin.weight.mul_(s)
            setattr(layer, attr, _ScaleFirstInput(getattr(layer, attr), s))
    return smoothed
