"""HCRL-MFD: Hierarchical Contrastive Representation Learning with Multimodal Feature Decoupling.

Wang, Li & Jiang, "Hierarchical Contrastive Representation Learning Guided by Multimodal Feature
Decomposition for Multimodal Sentiment Analysis", Computers, Materials & Continua 88(2), 2026.

Read top to bottom:
  1. feature extraction: text encoder (eq. 1); positional encodings + Transformer for vision and audio (eq. 2-3)
  2. multimodal feature decoupling: per-modality core-sentiment and redundant encoders (eq. 4-5)
  3. unimodal predictors MLP_m on the (pooled) core features (eq. 8)
  4. F^C = Concat(H_T^C, H_V^C, H_A^C) -> MLP (eq. 22-23)                    <- inference ends here
  5. training only (`loss`): L_R = ||H^0 - (H^C + H^R)||^2, additive, no decoder (eq. 6);
     L_O = ||(H^C)^T H^R||_F^2 (eq. 7); L_U = 1/3 sum_m MSE (eq. 9); L_D (eq. 10);
     one unified contrastive loss over intra- and inter-modal pairs (eq. 11-21); L_P = MAE (eq. 24);
     L_overall = L_D + L_CL + L_P (eq. 25)

The inference path runs the core-sentiment encoders only (§4.8: HCRL is dropped at inference).
docs/fidelity/hcrl_mfd.md maps every equation to the code below and lists what the paper leaves open.

Choices the paper leaves open (ours, written down): pooling (masked mean over real frames), L_R as a
per-element mean (the text says MSE), L_O on each sample's frame matrices with unit-normalised rows divided
by L^2 (the scale is free, λ_O is not given), the contrastive space (a training-only projection `to_shared`
of the pooled core features: eq. 13/15 take cosines across modalities whose widths differ, 768/128/64), δ, τ,
λ_R/λ_O/λ_U, layer and head counts.

Project additions (not in the paper, which assumes complete modalities, §5):
  - absent modality: its pooled core feature is replaced by a learned per-modality "absent" vector before
    the predictors and the fusion MLP, and it is left out of every loss term;
  - per-head labels: `loss` takes (B,) labels or (B, 4) fused/text/audio/vision columns (models.losses);
    each unimodal head is supervised by its own column, unknown entries are masked;
  - `text_hidden` > 0 projects the text encoder output (MiniLM 384 -> 128 for the live model);
    `text_hidden: 0` keeps the encoder width, the paper's d_T = 768 with BERT-base;
  - scores are clamped to the label range at inference (the paper's regression is unbounded).

Product additions for the shipped default weights (off by default: every paper config is unaffected;
configs/train/default_trimodal.yaml turns them on; docs/model_card.md says why and what they measure):
  - `pooled_heads`: per-modality heads on utterance statistics of the *input* sequence (masked mean, and
    std for `pooled_std`, over real frames), standardised by running statistics of the training samples
    that have that modality (stored buffers), then a small MLP (or linear map), `pooled_members` of them
    averaged. The audio / vision output is `pooled_share_m` x that head + the rest x the paper's MLP_m.
    Why: on RAVDESS voices and face stills, linear probes on such pooled statistics beat the paper's
    sequence branches trained on the same data (docs/model_card.md), and 700 clips are few for a Transformer.
    `pooled_mirror: [vision]` (on in the shipped weights; inference only) scores a face as the mean of the
    head on it and on its mirror image (`mirror_face`), so a face and its mirror image (a mirrored webcam)
    score alike: without it the shipped head scored the demo's smiling portrait -0.84 and its mirror
    image +0.67. Training options (off in the shipped weights; measured in docs/model_card.md):
    `pooled_mirror_training: [vision]` also trains the face head on each face mirrored, `pooled_independent`
    fits each member on its own label term (an ensemble) instead of fitting their mean.
    `pooled_clip_audio` clamps the standardised voice statistics to +-that many sds (a voice far from the training
    clips, e.g. a synthetic one, then cannot drive a linear head to the range's end); `recentre_audio`
    subtracts a stored `audio_offset` (buffer, inference only; the mean voice output over the train actors'
    neutral clips, `scripts/probe_voice_lean.py offset`) from the voice output, so ONNX and eager agree.
    `pooled_nap_audio: k` (> 0) projects k fixed directions out of the voice statistics before the head's own
    standardisation (nuisance-attribute projection, Solomonoff et al. 2005): buffers `nap_mean`, `nap_scale`,
    `nap_basis` (k, width), set after construction by `PooledHead.set_nap` (scripts/probe_voice_content.py:
    the between-sentence directions of espeak-ng speech, so the words said do not move the voice score); a
    zero basis is the identity, and with k = 0 (default) the head and its state dict are unchanged.
    `pooled_inputs_vision: [start, stop]` makes the face head pool only that slice of the vision vector
    (the shipped weights: [64, 71], mediapipe_v3's 7 expression-CNN dims, while the paper's vision branch
    reads all 71); the mirror map is applied to the whole vector first, so it holds on any slice.
    `pooled_exp_vision` makes the face head read exp of its window mean, i.e. the expression CNN's
    (geometric-mean) probabilities instead of its log-probabilities (needs that slice; scripts/probe_face_fear.py:
    on the train + valid persons it transfers across sources better and reads more fearful faces negative).
  - `late_fusion` [w_T, w_A, w_V]: the fused output is Σ_m w_m s_m [m] / Σ_m w_m [m] over the present
    modalities, with s_A, s_V the pooled heads and s_T the paper model's own words-only prediction (its
    fused output with audio and vision absent), which is also the text output. (2, 1, 1) is the fused
    label rule of configs/valence/ (words count double), so the late fusion of good unimodal heads is
    that rule; a text-only input scores exactly as the paper model's text-only prediction, and an absent
    modality has weight 0, so it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import MLP, TransformerEncoder, TransformerLayer, masked_mean
from moodlens.models.losses import label_for, masked_l1, masked_mse
from moodlens.core.errors import ConfigError

MODALITIES = ("text", "vision", "audio")   # the paper's order T, V, A (eq. 19, 22)
CONTRAST_LEVELS = ("both", "intra", "inter")


@dataclass
class Config(BaseModelConfig):
    """(paper) = stated in the paper; everything else is our choice (the paper gives no value)."""

    # Widths of H_m^0 (eq. 1-3): d_V = 128, d_A = 64 (paper). d_T = 768 is BERT-base's own width (paper):
    # text_hidden 0 keeps the encoder width; > 0 projects to it (ours: MiniLM 384 -> 128 for the live model).
    text_hidden: int = 128
    audio_hidden: int = 64          # d_A (paper)
    vision_hidden: int = 128        # d_V (paper)
    shared_dim: int = 128           # width of the training-only contrastive projection (eq. 13/15 need one width)
    heads: int = 4
    encoder_layers: int = 2         # vision/audio Transformer encoders (eq. 2-3)
    decouple_layers: int = 2        # cascaded Transformer layers of each core/redundant encoder (eq. 4-5)
    fusion_hidden: int = 128        # hidden width of the fusion MLP (eq. 23) and of each MLP_m (eq. 8)
    # Hierarchical contrastive learning (eq. 11-21)
    label_threshold: float = 0.5    # δ of eq. 11-12 (not given in the paper)
    top_k: int = 2                  # k (paper, §3.5 and Table 7)
    temperature: float = 0.1        # τ of eq. 21 (not given in the paper)
    contrast_levels: str = "both"   # both (paper) | intra | inter: the Table 6 variants
    # Weights. λ_U, λ_R, λ_O of eq. 10 are not given in the paper; L_CL and L_P have weight 1 (eq. 25).
    weight_unimodal: float = 0.1       # λ_U
    weight_reconstruction: float = 0.1  # λ_R
    weight_orthogonality: float = 0.1   # λ_O
    weight_contrastive: float = 1.0     # weight of L_CL (eq. 25: 1)
    # Product additions (module docstring), all off here: the paper computation.
    pooled_heads: list = ()             # modalities with a head on pooled input statistics: audio, vision
    pooled_std: list = ()               # ... of which the per-frame std is pooled too (not for stills)
    pooled_hidden: int = 64             # hidden width of each pooled head (0 = linear)
    pooled_linear: list = ()            # ... of which the head is linear (no hidden layer)
    pooled_members: int = 1             # heads per modality, averaged (differently initialised)
    pooled_share_audio: float = 1.0     # output = share * pooled + (1 - share) * the paper's MLP_A
    pooled_share_vision: float = 1.0    # ... and MLP_V
    pooled_dropout: float = 0.2         # dropout on the standardised statistics and the hidden layer
    pooled_l2: float = 0.0              # L2 penalty on the pooled heads' weights (their only regulariser)
    weight_pooled: float = 1.0          # weight of their MSE term in the loss
    late_fusion: list = ()              # [w_T, w_A, w_V]; empty = the paper's fusion MLP gives `fused`
    pooled_mirror: list = ()            # [vision]: at inference the face head scores mean(f(x), f(mirror(x)))
    pooled_mirror_training: list = ()   # [vision]: its pooled head also trains on each face mirrored
    pooled_independent: bool = False    # each member fits the label on its own (an ensemble), not their mean
    pooled_clip_audio: float = 0.0      # > 0: the voice statistics clamped to +-this many sds (0: off)
    pooled_nap_audio: int = 0           # > 0: that many content directions projected out of the voice statistics
    recentre_audio: bool = False        # subtract the stored `audio_offset` (buffer) from the voice output
    pooled_inputs_vision: list = ()     # [start, stop]: the slice of the vision vector the face head pools (() = all)
    pooled_exp_vision: bool = False     # the face head pools exp(window mean) of that slice: CNN probabilities


# ---- paper-specific blocks ---------------------------------------------------------------------

class CascadedEncoder(nn.Module):
    """Cascaded Transformer layers (eq. 4-5): H^C = E^C(H^0) for core, H^R = E^R(H^0) for redundant features."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


def reconstruction_loss(h0: torch.Tensor, h_core: torch.Tensor, h_redundant: torch.Tensor,
                        frames: torch.Tensor) -> torch.Tensor:
    """Eq. 6: L_R = 1/N Σ_i ||H^0 - (H^C + H^R)||², additive (no decoder): zero exactly when the two
    decoupled parts sum to H^0. Per sample the squared error is averaged over its real frames and
    the feature width (the paper calls it MSE), then over the samples that have any real frame."""
    error = (h0 - (h_core + h_redundant)).pow(2).mean(-1)           # (B, L)
    w = frames.to(error.dtype)
    count = w.sum(1)
    per_sample = (error * w).sum(1) / count.clamp_min(1.0)
    return _masked_average(per_sample, count > 0)


def orthogonality_loss(h_core: torch.Tensor, h_redundant: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Eq. 7: L_O = ||(H^C)^T H^R||_F² on each sample's (frames x width) matrices, averaged over samples.

    Ours (the paper prints no scale): rows are unit-normalised and the norm is divided by L_i², so the
    term lies in [0, 1] and cannot be lowered by shrinking the features. ||C^T R||_F² equals
    Σ_{t,s} (c_t·c_s)(r_t·r_s); the cheaper of the two forms is computed."""
    w = frames.to(h_core.dtype).unsqueeze(-1)
    c = F.normalize(h_core, dim=-1) * w
    r = F.normalize(h_redundant, dim=-1) * w
    if c.shape[1] < c.shape[2]:     # frames < width: L x L Gram matrices
        value = ((c @ c.transpose(1, 2)) * (r @ r.transpose(1, 2))).sum((1, 2))
    else:                           # d x d cross-correlation
        value = (c.transpose(1, 2) @ r).pow(2).sum((1, 2))
    count = frames.to(h_core.dtype).sum(1)
    return _masked_average(value / count.clamp_min(1.0).pow(2), count > 0)


def select_pairs(similarity: torch.Tensor, label_distance: torch.Tensor, delta: float, k: int,
                 valid_rows: torch.Tensor | None = None, valid_cols: torch.Tensor | None = None,
                 exclude_diagonal: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k / bottom-k selection within one ranking matrix (eq. 11-20).

    Candidates by label (eq. 11-12): b is a positive candidate of anchor a when |y_a - y_b| <= δ, a
    negative candidate otherwise, a ≠ b. Ranking by cosine similarity (eq. 14, 16): the k most similar
    positive candidates are the positives (top-k), the k least similar negative candidates the negatives
    (bottom-k). Fewer candidates than k -> all of them. Works on (..., N, M): the last dim is ranked.
    Returns two bool masks of the same shape (positives, negatives).
    """
    n, m = similarity.shape[-2:]
    allowed = torch.ones_like(similarity, dtype=torch.bool)
    if valid_rows is not None:
        allowed = allowed & valid_rows.unsqueeze(-1)
    if valid_cols is not None:
        allowed = allowed & valid_cols.unsqueeze(-2)
    if exclude_diagonal:
        allowed = allowed & ~torch.eye(n, m, dtype=torch.bool, device=similarity.device)
    return _select_within(similarity, label_distance, allowed, delta, k)


def _top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.shape[-1])
    masked = scores.masked_fill(~candidates, float("-inf"))
    chosen = masked.topk(k, dim=-1).indices
    mask = torch.zeros_like(candidates).scatter_(-1, chosen, True)
    return mask & candidates  # rows with fewer than k candidates picked some -inf entries: drop them


def hierarchical_pairs(similarity: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor,
                       present: torch.Tensor, delta: float, k: int, levels: str = "both"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """P^a and N^a of the unified loss (eq. 17-20) over all 3B features at once.

    Rows and columns index (modality, sample) as modality-major blocks of B, in MODALITIES order.
    similarity (3B, 3B) cosine (eq. 13, 15); labels (3B,) the label each feature is compared by;
    labelled (3B,) that label is known; present (3B,) the modality is present for that sample.
    Within every (m1, m2) block the top-k / bottom-k are chosen per anchor among other samples
    (eq. 17-18 for m1 = m2, eq. 19-20 for m1 ≠ m2); then the same-sample cross-modal pairs
    (T^a, V^a), (T^a, A^a), (V^a, A^a) are positives always (the "∪" of eq. 19), in both directions.
    """
    if levels not in CONTRAST_LEVELS:
        raise ValueError(f"contrast_levels must be one of {', '.join(CONTRAST_LEVELS)}, got {levels!r}")
    total = similarity.shape[0]
    b = total // len(MODALITIES)
    device = similarity.device
    modality = torch.arange(len(MODALITIES), device=device).repeat_interleave(b)
    sample = torch.arange(b, device=device).repeat(len(MODALITIES))
    same_modality = modality[:, None] == modality[None, :]
    same_sample = sample[:, None] == sample[None, :]
    valid = present & labelled
    distance = (labels[:, None] - labels[None, :]).abs()

    def blocks(x):   # (3B, 3B) -> (3B, 3, B): the last dim ranks the samples of one modality
        return x.reshape(total, len(MODALITIES), b)

    allowed = blocks(valid[:, None] & valid[None, :] & ~same_sample)       # a ≠ b (eq. 11-12)
    pos, neg = _select_within(blocks(similarity), blocks(distance), allowed, delta, k)
    pos, neg = pos.reshape(total, total), neg.reshape(total, total)
    pos = pos | (same_sample & ~same_modality & present[:, None] & present[None, :])   # eq. 19, the "∪"
    if levels == "intra":
        pos, neg = pos & same_modality, neg & same_modality
    elif levels == "inter":
        pos, neg = pos & ~same_modality, neg & ~same_modality
    return pos, neg


def _select_within(similarity, distance, allowed, delta, k):
    positive_candidates = allowed & (distance <= delta)                   # eq. 11
    negative_candidates = allowed & (distance > delta)                    # eq. 12
    return (_top_k_mask(similarity, positive_candidates, k),               # top-k positives (eq. 17, 19)
            _top_k_mask(-similarity, negative_candidates, k))              # bottom-k negatives (eq. 18, 20)


def unified_contrastive_loss(similarity: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                             temperature: float) -> torch.Tensor:
    """Eq. 21: -log( exp(sim(α,β)/τ) / Σ_{(α,γ) ∈ P^a ∪ N^a} exp(sim(α,γ)/τ) ), one term per positive
    pair (α, β); averaged over each anchor's positives, then over the anchors that have a positive
    (how the printed 1/N Σ_i averages is ambiguous; this is SupCon's L_out reading)."""
    logits = similarity / temperature
    neg_inf = torch.full_like(logits, float("-inf"))
    log_denominator = torch.logsumexp(torch.where(positives | negatives, logits, neg_inf), dim=1, keepdim=True)
    log_prob = torch.where(positives, logits - log_denominator, torch.zeros_like(logits))
    counts = positives.sum(1)
    per_anchor = -log_prob.sum(1) / counts.clamp_min(1)
    usable = counts > 0
    return _masked_average(per_anchor, usable)


# ---- product additions (module docstring; off in the paper configs) ----------------------------

# A horizontally mirrored face in the live 64-d face features (realtime/perception/features/config.py
# VISION_FEATURE_NAMES: 52 MediaPipe blendshapes, yaw/pitch/roll/tx/ty/tz, 6 ratios): the subject's left
# and right swap (every ...Left/...Right blendshape pair, right/left eye aspect and brow height), and yaw,
# roll and x translation change sign. A test derives the pairs from the names and checks it on a real
# image and its flipped copy (tests/test_models_hcrl_mfd_product.py).
FACE_MIRROR_PAIRS = ((1, 2), (4, 5), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18), (19, 20),
                     (21, 22), (24, 26), (28, 29), (30, 31), (33, 39), (34, 35), (36, 37), (44, 45), (46, 47),
                     (48, 49), (50, 51), (59, 60), (61, 62))
FACE_MIRROR_NEGATE = (52, 54, 55)   # yaw, roll, tx


def mirror_face(x: torch.Tensor) -> torch.Tensor:
    """The 64-d face features (last dim) of the mirrored face (FACE_MIRROR_PAIRS); sequences or statistics
    of them alike (a mean mirrors as its frames do; a std would not change sign: mirror frames, not stds).
    Dims past 64 (mediapipe_v3's 7 expression dims, a mean over the crop and its mirror) stay as they are."""
    order = list(range(x.shape[-1]))
    for a, b in FACE_MIRROR_PAIRS:
        order[a], order[b] = b, a
    out = x[..., order].clone()
    out[..., list(FACE_MIRROR_NEGATE)] = -out[..., list(FACE_MIRROR_NEGATE)]
    return out


class PooledHead(nn.Module):
    """Score from utterance statistics of one modality's input frames (product addition).

    Statistics: masked mean (and std) over real frames; standardised by running mean / log-std buffers
    that accumulate, in training only, over the rows where the modality is present (a cumulative
    average: the dataset's statistics, not a moving target; past COUNT_CAP rows it becomes a slow moving
    average, which also keeps the count finite in a float16 checkpoint); then dropout and an MLP."""

    COUNT_CAP = 20000.0

    def __init__(self, dim: int, use_std: bool, hidden: int, dropout: float, members: int = 1, clip: float = 0.0,
                 nap: int = 0, exp: bool = False):
        super().__init__()
        self.use_std = use_std
        self.exp = bool(exp)      # pool exp(mean): log-probabilities in, (geometric-mean) probabilities out
        self.clip = float(clip)   # > 0: standardised statistics clamped to +-clip sds (0: off)
        width = dim * (2 if use_std else 1)
        self.nap = int(nap)
        if self.nap > 0:   # nuisance-attribute projection (class docstring); zeros = the identity until set_nap
            self.register_buffer("nap_mean", torch.zeros(width))
            self.register_buffer("nap_scale", torch.ones(width))
            self.register_buffer("nap_basis", torch.zeros(self.nap, width))
        self.register_buffer("stat_mean", torch.zeros(width))
        self.register_buffer("stat_log_std", torch.zeros(width))   # log: float16 checkpoints keep small stds
        self.register_buffer("stat_count", torch.zeros(1))   # (1,), not a scalar: fingerprints view bytes
        self.drop = nn.Dropout(dropout)
        self.members = nn.ModuleList(MLP(width, hidden, 1, 2, dropout) if hidden > 0 else nn.Linear(width, 1)
                                     for _ in range(members))

    def statistics(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(x, mask)
        if self.exp:
            return mean.exp()
        if not self.use_std:
            return mean
        w = mask.to(x.dtype).unsqueeze(-1)
        var = ((x - mean.unsqueeze(1)).pow(2) * w).sum(1) / w.sum(1).clamp_min(1.0)
        return torch.cat([mean, (var + 1e-8).sqrt()], -1)

    @torch.no_grad()
    def set_nap(self, mean, scale, basis) -> None:
        """The projection: `basis` (k, width) orthonormal rows in the space (s - mean) / scale."""
        basis = torch.as_tensor(basis, dtype=torch.float32)
        if self.nap == 0 or tuple(basis.shape) != tuple(self.nap_basis.shape):
            raise ConfigError(f"PooledHead.set_nap: a basis of shape {tuple(basis.shape)} for a head built with "
                              f"nap = {self.nap} (width {len(self.stat_mean)}).")
        self.nap_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.nap_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        self.nap_basis.copy_(basis)

    def project(self, s: torch.Tensor) -> torch.Tensor:
        """s with the NAP directions removed: s - scale * U^T U (s - mean) / scale (identity when nap = 0)."""
        if self.nap == 0:
            return s
        scale = self.nap_scale.float()
        z = (s - self.nap_mean.float()) / scale
        return s - scale * ((z @ self.nap_basis.float().T) @ self.nap_basis.float())

    @torch.no_grad()
    def _accumulate(self, s: torch.Tensor) -> None:
        n, seen = float(len(s)), min(float(self.stat_count[0]), self.COUNT_CAP)
        if n == 0:
            return
        old_mean, old_var = self.stat_mean.clone(), (2 * self.stat_log_std).exp() if seen else torch.zeros_like(s[0])
        batch_mean, batch_var = s.mean(0), s.var(0, unbiased=False)
        total = seen + n
        mean = (seen * old_mean + n * batch_mean) / total
        var = (seen * (old_var + (old_mean - mean).pow(2)) + n * (batch_var + (batch_mean - mean).pow(2))) / total
        self.stat_mean.copy_(mean)
        self.stat_log_std.copy_(0.5 * var.clamp_min(1e-8).log())
        self.stat_count.fill_(total)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.member_outputs(x, mask, present).mean(0)

    def member_outputs(self, x: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(members, B): each member's score."""
        s = self.project(self.statistics(x.float(), mask))
        if self.training:
            self._accumulate(s[present & mask.any(1)])
        z = (s - self.stat_mean) * torch.exp(-self.stat_log_std.float())
        if self.clip > 0:   # a voice far outside the training clips cannot push a linear head past the range
            z = z.clamp(-self.clip, self.clip)
        return torch.stack([member(self.drop(z)).squeeze(-1) for member in self.members])


def late_fusion(scores: dict, present: dict, weights: dict, fallback: torch.Tensor) -> torch.Tensor:
    """Σ_m w_m s_m [m] / Σ_m w_m [m] (product addition); rows with no modality present keep `fallback`."""
    num = torch.zeros_like(fallback)
    den = torch.zeros_like(fallback)
    for m, s in scores.items():
        w = present[m].to(fallback.dtype) * weights[m]
        num = num + w * torch.where(present[m], s, torch.zeros_like(s))   # an absent score never enters
        den = den + w
    return torch.where(den > 0, num / den.clamp_min(1e-6), fallback)


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "hcrl_mfd"
    modalities = ("text", "audio", "vision")   # the SentimentOutput / `present` order of the contract

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        if c.contrast_levels not in CONTRAST_LEVELS:
            raise ConfigError(f"hcrl_mfd: contrast_levels must be one of {', '.join(CONTRAST_LEVELS)}, "
                              f"got {c.contrast_levels!r}.")
        text_width = c.text_hidden if c.text_hidden > 0 else c.text_dim
        widths = {"text": text_width, "vision": c.vision_hidden, "audio": c.audio_hidden}
        self.widths = widths
        # eq. 1-3: H_m^0. Text: the pretrained encoder (+ an optional projection, ours); vision/audio: a
        # linear map to d_m, sinusoidal positions, then a Transformer encoder.
        self.text_proj = nn.Linear(c.text_dim, c.text_hidden) if c.text_hidden > 0 else nn.Identity()
        self.audio_proj = nn.Linear(c.audio_dim, c.audio_hidden)
        self.vision_proj = nn.Linear(c.vision_dim, c.vision_hidden)
        self.audio_encoder = TransformerEncoder(c.audio_hidden, c.heads, c.encoder_layers, dropout=c.dropout)
        self.vision_encoder = TransformerEncoder(c.vision_hidden, c.heads, c.encoder_layers, dropout=c.dropout)
        # eq. 4-5: core-sentiment (E^C) and redundant (E^R) encoders per modality.
        self.core = nn.ModuleDict({m: CascadedEncoder(w, c.heads, c.decouple_layers, c.dropout)
                                   for m, w in widths.items()})
        self.redundant = nn.ModuleDict({m: CascadedEncoder(w, c.heads, c.decouple_layers, c.dropout)
                                        for m, w in widths.items()})   # training only
        # Training only (ours): pooled core features into one width for the cosines of eq. 13/15.
        self.to_shared = nn.ModuleDict({m: nn.Linear(w, c.shared_dim) for m, w in widths.items()})
        # Addition: stands in for the pooled core feature of an absent modality.
        self.absent = nn.ParameterDict({m: nn.Parameter(torch.zeros(w)) for m, w in widths.items()})
        # eq. 8: unshared MLP_m per modality; eq. 22-23: MLP over Concat(H_T^C, H_V^C, H_A^C).
        self.unimodal_heads = nn.ModuleDict({m: MLP(w, c.fusion_hidden, 1, 2, c.dropout) for m, w in widths.items()})
        self.fusion = MLP(sum(widths.values()), c.fusion_hidden, 1, 3, c.dropout)
        # Product additions (module docstring); absent in the paper configs.
        bad = (sorted(set(c.pooled_heads) - {"audio", "vision"}) + sorted(set(c.pooled_std) - set(c.pooled_heads))
               + sorted(set(c.pooled_linear) - set(c.pooled_heads))
               + sorted(set(c.pooled_mirror) - ({"vision"} & set(c.pooled_heads)))
               + sorted(set(c.pooled_mirror_training) - ({"vision"} & set(c.pooled_heads))))
        if c.pooled_nap_audio < 0 or (c.pooled_nap_audio and "audio" not in c.pooled_heads):
            raise ConfigError(f"hcrl_mfd: pooled_nap_audio needs an audio pooled head and k >= 0, got "
                              f"{c.pooled_nap_audio} with pooled_heads {list(c.pooled_heads)}.")
        if c.pooled_members < 1 or not all(0.0 <= x <= 1.0 for x in (c.pooled_share_audio, c.pooled_share_vision)):
            raise ConfigError(f"hcrl_mfd: pooled_members must be >= 1 and pooled_share_* in [0, 1], got "
                              f"{c.pooled_members}, {c.pooled_share_audio}, {c.pooled_share_vision}.")
        if bad:
            raise ConfigError(f"hcrl_mfd: pooled_heads takes audio and vision, pooled_std and pooled_linear "
                              f"subsets of them, pooled_mirror(_training) only vision (a face); got {bad[0]!r}.")
        if c.late_fusion and (len(c.late_fusion) != 3 or any(float(w) < 0 for w in c.late_fusion)):
            raise ConfigError(f"hcrl_mfd: late_fusion needs three weights >= 0 (text, audio, vision), "
                              f"got {list(c.late_fusion)}.")
        if (c.pooled_mirror or c.pooled_mirror_training) and c.vision_dim not in (64, 71):
            raise ConfigError(f"hcrl_mfd: pooled_mirror needs the live 64-d face features (or mediapipe_v3's 71, "
                              f"whose 7 expression dims are mirror invariant), got vision_dim {c.vision_dim}.")
        self.vision_slice = None
        if c.pooled_inputs_vision:
            span = [int(v) for v in c.pooled_inputs_vision]
            if "vision" not in c.pooled_heads or len(span) != 2 or not 0 <= span[0] < span[1] <= c.vision_dim:
                raise ConfigError(f"hcrl_mfd: pooled_inputs_vision needs [start, stop] with 0 <= start < stop <= "
                                  f"vision_dim ({c.vision_dim}) and a vision pooled head, got {list(c.pooled_inputs_vision)}.")
            self.vision_slice = (span[0], span[1])
        if c.pooled_exp_vision and (self.vision_slice is None or "vision" in c.pooled_std):
            raise ConfigError("hcrl_mfd: pooled_exp_vision needs pooled_inputs_vision (the expression CNN's "
                              "log-probabilities) and no pooled_std for vision.")
        dims = {"audio": c.audio_dim, "vision": c.vision_dim}
        if self.vision_slice is not None:
            dims["vision"] = self.vision_slice[1] - self.vision_slice[0]
        self.pooled_heads = nn.ModuleDict({
            m: PooledHead(dims[m], m in c.pooled_std, 0 if m in c.pooled_linear else c.pooled_hidden,
                          c.pooled_dropout, c.pooled_members, c.pooled_clip_audio if m == "audio" else 0.0,
                          c.pooled_nap_audio if m == "audio" else 0,
                          exp=bool(c.pooled_exp_vision) and m == "vision")
            for m in c.pooled_heads})
        if c.recentre_audio:   # the voice output's mean over the train actors' neutral clips, set after training
            self.register_buffer("audio_offset", torch.zeros(1))

    # ---- eq. 1-3 ---------------------------------------------------------------------------
    def encode_unimodal(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask) -> dict:
        return {
            "text": self.text_proj(self.text_encoder(text_ids, text_mask)),                  # eq. 1
            "vision": self.vision_encoder(self.vision_proj(vision), vision_mask),            # eq. 2
            "audio": self.audio_encoder(self.audio_proj(audio), audio_mask),                 # eq. 3
        }

    def pool(self, core: dict, masks: dict, present: torch.Tensor) -> dict:
        """Masked mean over real frames of H_m^C; an absent modality -> its learned embedding."""
        pooled = {}
        for m in MODALITIES:
            i = self.modalities.index(m)
            x = masked_mean(core[m], masks[m])
            pooled[m] = torch.where(present[:, i:i + 1], x, self.absent[m].expand_as(x))
        return pooled

    def predict(self, pooled: dict) -> SentimentOutput:
        """Raw regression scores; `encode_and_predict` bounds them."""
        unimodal = {m: self.unimodal_heads[m](pooled[m]).squeeze(-1) for m in MODALITIES}        # eq. 8
        fused = self.fusion(torch.cat([pooled[m] for m in MODALITIES], dim=-1)).squeeze(-1)      # eq. 22-23
        return SentimentOutput(fused, unimodal["text"], unimodal["audio"], unimodal["vision"])

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        hidden = self.encode_unimodal(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        core = {m: self.core[m](hidden[m], masks[m]) for m in MODALITIES}                        # eq. 4
        pooled = self.pool(core, masks, present)
        raw = self.product_outputs(self.predict(pooled), pooled, audio, audio_mask, vision, vision_mask, present)
        # Clamped at inference only: training sees the unbounded linear score, so an overshoot
        # never meets a zero gradient.
        r = self.config.output_range
        return SentimentOutput(*(x.clamp(-r, r) for x in raw))

    def pooled_input(self, m: str, x: torch.Tensor) -> torch.Tensor:
        """What modality m's pooled head reads: the whole frame vector, or `pooled_inputs_vision`'s slice."""
        if m == "vision" and self.vision_slice is not None:
            return x[..., self.vision_slice[0]:self.vision_slice[1]]
        return x

    def product_outputs(self, paper: SentimentOutput, pooled: dict, audio, audio_mask, vision, vision_mask,
                        present) -> SentimentOutput:
        """The product additions on top of the paper outputs (identity when they are off)."""
        c = self.config
        if not self.pooled_heads and not c.late_fusion and not c.recentre_audio:
            return paper
        outputs = {"fused": paper.fused, "text": paper.text, "audio": paper.audio, "vision": paper.vision}
        inputs = {"audio": (audio, audio_mask), "vision": (vision, vision_mask)}
        on = {m: present[:, self.modalities.index(m)] for m in self.modalities}
        for m, head in self.pooled_heads.items():
            share = getattr(c, f"pooled_share_{m}")
            x, mask = inputs[m]
            score = head(self.pooled_input(m, x), mask, on[m])
            if m in c.pooled_mirror:   # mirror-symmetric by construction: a face and its mirror image score alike
                score = 0.5 * (score + head(self.pooled_input(m, mirror_face(x)), mask, on[m]))
            outputs[m] = share * score + (1.0 - share) * outputs[m]
        if c.recentre_audio:   # a neutral voice of the training actors scores 0 on average
            outputs["audio"] = outputs["audio"] - self.audio_offset.to(outputs["audio"].dtype)
        if c.late_fusion:
            # s_T: the paper model's prediction from the words alone (audio and vision absent).
            words_only = dict(pooled, audio=self.absent["audio"].expand_as(pooled["audio"]),
                              vision=self.absent["vision"].expand_as(pooled["vision"]))
            outputs["text"] = self.fusion(torch.cat([words_only[m] for m in MODALITIES], -1)).squeeze(-1)
            weights = dict(zip(("text", "audio", "vision"), (float(w) for w in c.late_fusion)))
            outputs["fused"] = late_fusion({m: outputs[m] for m in weights}, on, weights, paper.fused)
        return SentimentOutput(outputs["fused"], outputs["text"], outputs["audio"], outputs["vision"])

    # ---- training --------------------------------------------------------------------------
    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, **extras) -> dict[str, torch.Tensor]:
        c = self.config
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = self.clean_inputs(*batch.tensors())
        labels = labels.to(torch.float32)
        hidden = self.encode_unimodal(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}

        core, recon, ortho, has = {}, [], [], []
        for m in MODALITIES:
            on = present[:, self.modalities.index(m)]
            frames = masks[m] & on.unsqueeze(1)                                                   # real frames
            core[m] = self.core[m](hidden[m], masks[m])                                           # eq. 4
            redundant = self.redundant[m](hidden[m], masks[m])                                    # eq. 5
            recon.append(reconstruction_loss(hidden[m], core[m], redundant, frames))              # eq. 6
            ortho.append(orthogonality_loss(core[m], redundant, frames))                          # eq. 7
            has.append(on.any())
        pooled = self.pool(core, masks, present)
        out = self.predict(pooled)

        # eq. 9: L_U = 1/3 Σ_m MSE(ŷ_m, y_m), each head on its own label column (a (B,) label serves all),
        # over the samples where the modality is present and its label known. Modalities with no such
        # sample in the batch are left out of the mean (with all three supervised this is eq. 9 exactly).
        unimodal, supervised = [], []
        for m in MODALITIES:
            y, known = label_for(labels, m)
            rows = known & present[:, self.modalities.index(m)]
            unimodal.append(masked_mse(getattr(out, m), y, rows))
            supervised.append(rows.any())
        y_fused, known_fused = label_for(labels, "fused")
        task = masked_l1(out.fused, y_fused, known_fused)                                         # eq. 24 (L_P)
        contrastive = self.hierarchical_contrastive(pooled, labels, present)                      # eq. 11-21

        terms = {
            "task": task,
            "unimodal": _mean_over(unimodal, supervised),
            "reconstruction": _mean_over(recon, has),
            "orthogonality": _mean_over(ortho, has),
            "contrastive": contrastive,
        }
        decoupling = (c.weight_unimodal * terms["unimodal"] + c.weight_reconstruction * terms["reconstruction"]
                      + c.weight_orthogonality * terms["orthogonality"])                          # eq. 10 (L_D)
        terms["total"] = decoupling + c.weight_contrastive * contrastive + task                   # eq. 25
        if self.pooled_heads:   # product addition: each pooled head on its own label column, masked
            inputs = {"audio": (audio, audio_mask), "vision": (vision, vision_mask)}
            errors, used = [], []
            for m, head in self.pooled_heads.items():
                on = present[:, self.modalities.index(m)]
                y, known = label_for(labels, m)
                rows = known & on
                x, mask = inputs[m]
                if m in c.pooled_mirror_training:   # each face and its mirror image, same label
                    x, mask = torch.cat([x, mirror_face(x)]), torch.cat([mask, mask])
                    on, y, rows = torch.cat([on, on]), torch.cat([y, y]), torch.cat([rows, rows])
                scores = head.member_outputs(self.pooled_input(m, x), mask, on)
                if not c.pooled_independent:
                    scores = scores.mean(0, keepdim=True)
                errors.append(torch.stack([masked_mse(k, y, rows) for k in scores]).mean())
                used.append(rows.any())
            terms["pooled"] = _mean_over(errors, used)
            l2 = sum(p.pow(2).sum() for name, p in self.pooled_heads.named_parameters() if name.endswith("weight"))
            terms["total"] = terms["total"] + c.weight_pooled * terms["pooled"] + c.pooled_l2 * l2
        return terms

    def hierarchical_contrastive(self, pooled: dict, labels: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """One unified L_CL (eq. 21) over the intra- and inter-modal pairs (eq. 17-20) of the pooled core
        features, compared in the shared projection. A feature is compared by its modality's own label
        column where known, else by the fused label (a (B,) label serves all); a feature whose modality is
        absent or whose label is unknown takes part in no label-selected pair."""
        c = self.config
        z = torch.cat([F.normalize(self.to_shared[m](pooled[m]), dim=-1) for m in MODALITIES], 0)
        similarity = z @ z.T                                                                      # eq. 13, 15
        y_fused, known_fused = label_for(labels, "fused")
        values, labelled, on = [], [], []
        for m in MODALITIES:
            y, known = label_for(labels, m)
            values.append(torch.where(known, y, y_fused))
            labelled.append(known | known_fused)
            on.append(present[:, self.modalities.index(m)])
        pos, neg = hierarchical_pairs(similarity, torch.cat(values), torch.cat(labelled), torch.cat(on),
                                      c.label_threshold, c.top_k, c.contrast_levels)
        return unified_contrastive_loss(similarity, pos, neg, c.temperature)

    def inference_modules(self) -> list[nn.Module]:
        """The modules the inference path runs (§4.8: the redundant encoders and the contrastive
        projection are training only): what docs/fidelity/hcrl_mfd.md counts."""
        return [self.text_encoder, self.text_proj, self.audio_proj, self.vision_proj, self.audio_encoder,
                self.vision_encoder, self.core, self.unimodal_heads, self.fusion]


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _mean_over(terms: list[torch.Tensor], used: list[torch.Tensor]) -> torch.Tensor:
    """Mean of the per-modality terms whose modality took part (a term with none is 0 and left out)."""
    weights = torch.stack(used).to(terms[0].dtype)
    return (torch.stack(terms) * weights).sum() / weights.sum().clamp_min(1.0)
