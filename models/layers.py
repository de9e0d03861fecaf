"""Building blocks shared by every model (written once, used by all five papers).

Everything here is torch.export / ONNX friendly: no data-dependent Python control flow, masks
as bool tensors, attention through scaled_dot_product_attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.batch import MAX_SEQ_LEN


def ensure_nonempty(mask: torch.Tensor) -> torch.Tensor:
    """Force position 0 valid so that rows with no valid key never softmax over nothing (NaN).
    Callers zero the features of such rows, so position 0 then carries zeros."""
    first = torch.zeros_like(mask)
    first[:, 0] = True
    return mask | first


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, L, D) using a (B, L) bool mask; all-masked rows give zeros."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    filled = x.masked_fill(~mask.unsqueeze(-1), -1e4)
    out = filled.max(dim=1).values
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


def sanitize(x: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero padded frames and absent samples (NaN-safe: `where`, not multiplication) and fold
    `present` into the mask. After this, an absent modality's values cannot reach any output."""
    mask = mask & present.unsqueeze(1)
    x = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
    return x, ensure_nonempty(mask)


class SinusoidalPositionalEncoding(nn.Module):
    """Vaswani et al. sinusoidal positions, added to (B, L, D)."""

    def __init__(self, dim: int, max_len: int = MAX_SEQ_LEN):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]].unsqueeze(0).to(x.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention; `key_mask` (B, Lk) bool marks valid keys."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        kv_dim = kv_dim or dim
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, lq, d = query.shape
        lk = context.shape[1]
        h = self.heads
        q = self.q(query).view(b, lq, h, d // h).transpose(1, 2)
        k = self.k(context).view(b, lk, h, d // h).transpose(1, 2)
        v = self.v(context).view(b, lk, h, d // h).transpose(1, 2)
        attn_mask = key_mask[:, None, None, :] if key_mask is not None else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, lq, d))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class TransformerLayer(nn.Module):
    """Pre-LN Transformer layer. With `context` it is a cross-modal layer (query attends to context)."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.1, kv_dim: int | None = None):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim or dim)
        self.attn = MultiHeadAttention(dim, heads, dropout, kv_dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dim * ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_q(x)
        if context is None:
            kv, kv_mask = q, mask
        else:
            kv, kv_mask = self.norm_kv(context), context_mask
        x = x + self.drop(self.attn(q, kv, kv_mask))
        return x + self.drop(self.ff(self.norm_ff(x)))


class TransformerEncoder(nn.Module):
    """Stack of self-attention layers with optional sinusoidal positions and a final LayerNorm."""

    def __init__(self, dim: int, heads: int, layers: int, ff_mult: int = 4, dropout: float = 0.1,
                 positional: bool = True):
        super().__init__()
        self.pos = SinusoidalPositionalEncoding(dim) if positional else None
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, ff_mult, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_all: bool = False):
        if self.pos is not None:
            x = self.pos(x)
        hidden = []
        for layer in self.layers:
            x = layer(x, mask)
            hidden.append(x)
        x = self.norm(x)
        return (x, hidden) if return_all else x


class CrossModalEncoder(nn.Module):
    """Stack of cross-modal layers: `x` (target modality) repeatedly attends to `context`."""

    def __init__(self, dim: int, heads: int, layers: int, ff_mult: int = 4, dropout: float = 0.1,
                 kv_dim: int | None = None):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, ff_mult, dropout, kv_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, context, context_mask=None):
        for layer in self.layers:
            x = layer(x, context=context, context_mask=context_mask)
        return self.norm(x)


class MLP(nn.Module):
    """Linear -> GELU -> Dropout blocks ending in a Linear to `out_dim`."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        blocks: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        blocks.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Conv1dProjection(nn.Module):
    """Temporal 1-D convolution over (B, L, D_in) -> (B, L, D_out), 'same' length."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


def scale_output(x: torch.Tensor, output_range: float) -> torch.Tensor:
    """Bound a raw score to the label range (tanh scaled), as TeCaFN does for its output."""
    return torch.tanh(x) * output_range


class QueryPooling(nn.Module):
    """`num_queries` learned queries attend over a masked (B, L, D) sequence -> (B, K, D).

    A fixed output length from a dynamic input length that stays torch.export / ONNX dynamic
    (adaptive pooling specializes the length). Used by DAR (alignment to a common length) and
    TeCaFN (fixed-length summary before its LSTM, which export unrolls over a static length).
    """

    def __init__(self, dim: int, num_queries: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * dim ** -0.5)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        queries = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.norm(queries + self.attn(queries, x, mask))
