"""Loss terms shared across papers (each model file cites which equation uses which)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) cosine similarities."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float = 0.1,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of `anchor` should match row i of `positive`.
    `valid` (N,) bool drops rows (e.g. samples where a modality is absent)."""
    logits = cosine_matrix(anchor, positive) / temperature
    target = torch.arange(anchor.shape[0], device=anchor.device)
    loss = F.cross_entropy(logits, target, reduction="none")
    return _masked_mean(loss, valid)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.5,
            valid: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR's NT-Xent: symmetric InfoNCE where negatives come from both views."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b], 0), dim=-1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=a.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(a.device)
    loss = F.cross_entropy(sim, target, reduction="none")
    if valid is not None:
        valid = torch.cat([valid, valid])
    return _masked_mean(loss, valid)


def supervised_contrastive(features: torch.Tensor, positives: torch.Tensor, temperature: float = 0.5,
                           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Khosla et al. SupCon. `positives` (N, N) bool marks same-class pairs (diagonal ignored)."""
    n = features.shape[0]
    z = F.normalize(features, dim=-1)
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = positives & ~eye
    if valid is not None:
        pos = pos & valid.unsqueeze(0) & valid.unsqueeze(1)
    counts = pos.sum(1)
    per_row = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / counts.clamp_min(1)
    return _masked_mean(per_row, counts > 0)


def orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||A^T B||_F^2 between two (N, D) feature sets (HCRL-MFD eq. 7, DLF's soft L_o)."""
    return (a.transpose(-2, -1) @ b).pow(2).sum() / a.shape[0] ** 2


def _masked_mean(loss: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return loss.mean()
    valid = valid.to(loss.dtype)
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


# ---- per-head labels ---------------------------------------------------------------------------
# Training labels come in one of two shapes (the contract every model's `loss` accepts):
#   (B,)   one sentiment label per sample, used by every head (MOSI/MOSEI: the papers' setting);
#   (B, 4) one column per head in LABEL_HEADS order (CH-SIMS's label/label_T/label_A/label_V, or
#          unimodal datasets such as RAVDESS voice or face stills). NaN means "unknown for this head":
#          that sample's term is masked out of the head's loss, never zero-filled.
LABEL_HEADS = ("fused", "text", "audio", "vision")


def label_for(labels: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, known) for one head: values with unknown entries set to 0 (safe to compute with),
    known a (B,) bool mask. A (B,) label tensor serves every head."""
    if labels.dim() == 1:
        column = labels
    else:
        column = labels[:, LABEL_HEADS.index(head)]
    known = torch.isfinite(column)
    return torch.where(known, column, torch.zeros_like(column)), known


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean |prediction - target| over the known rows (0 with a gradient path when none is known)."""
    return _masked_mean((prediction - target).abs(), known)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean (prediction - target)^2 over the known rows."""
    return _masked_mean((prediction - target).pow(2), known)
