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
