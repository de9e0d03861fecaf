"""DAR (Decoupled-Adaptive Reconstruction): "Decoupling and Reconstructing: a Multimodal Sentiment
Analysis Framework Towards Robustness" (anonymous submission; ../shared/papers/dar.md).
Equation numbers below are the paper's; docs/fidelity/dar.md maps each one to this file.

Read top to bottom:
  1. alignment (§3.4): text encoder, then per modality a 1-D convolution and a nonlinear layer to the
     width d, and learned-query attention to the unified length t (ours: the paper does not say how
     the length is unified; this stays torch.export-dynamic where adaptive pooling does not)
  2. decouple (eq. 1): per modality a common encoder E_c(.; θ_m^c) and an independent encoder
     E_s(.; θ_m^s) give H̃_m^com and H̃_m^spec
  3. reconstruct (eq. 12-13): Ĥ_m^com from the concatenated common features of all modalities,
     Ĥ_m^spec from the modality's own independent features; gates (eq. 15-16) mix each
     reconstruction with the original features
  4. fusion-output (eq. 18-21): per-modality self-attention over H_fused^com (last frame), six
     directional cross-attentions over H_fused^spec (last frame), an MLP        <- inference ends here
  5. training only (`loss`): the complete input through the same alignment and encoders (U¹, H),
     the decoders D_m of eq. 14 (L_recon, eq. 17) and of eq. 10 (L_re, eq. 10-11), the boot head
     (eq. 22-23), InfoNCE (eq. 6-7), CLUB (eq. 9; its estimator is stepped alternately through
     `auxiliary_parameters` / `auxiliary_loss`), L_total (eq. 2, 24)

Project additions, labelled where they sit (none changes the paper's computation when every modality
is present, and paper configs set their loss weight to 0 / switch them off):
  - absent modalities: a learned stand-in replaces an absent modality's common features in eq. 12,
    its fused common features are its reconstruction alone (the gate is forced to Ĥ), and every
    cross-attention that involves it outputs a learned constant, so an absent modality never changes
    any output; absent modalities are masked out of every loss term;
  - per-modality heads (SentimentOutput.text/audio/vision) on the modality's own pooled features,
    weight `weight_unimodal` (0 in the paper configs);
  - softplus on the CLUB estimate (`club_softplus`, off in the paper configs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from moodlens.models.base import SentimentModel
from moodlens.core.schema import MODALITIES
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import MLP, Conv1dProjection, CrossModalEncoder, QueryPooling, TransformerEncoder, \
    scale_output
from moodlens.models.losses import cosine_matrix, label_for, masked_l1

UNK_TOKEN_ID = 100                   # [UNK] in the BERT uncased vocabulary (§4.2: erased text -> [UNK])
SPECIAL_TOKEN_IDS = (0, 101, 102)    # [PAD], [CLS], [SEP] are never erased
# The six directional cross-attentions of eq. 19-20: (source, target), e.g. ("text", "vision") is L -> V.
DIRECTIONS = tuple((s, m) for m in MODALITIES for s in MODALITIES if s != m)


@dataclass
class Config(BaseModelConfig):
    hidden_dim: int = 64            # d: unified width after alignment (not given in the paper)
    common_length: int = 8          # t: unified length after alignment (not given)
    heads: int = 4
    conv_kernel: int = 3            # 1-D alignment convolution (§3.4)
    encoder_layers: int = 2         # depth of E_c / E_s (eq. 1)
    fusion_layers: int = 2          # depth of the self-attention (eq. 18) and cross-attention (eq. 19) stacks
    club_hidden: int = 64           # BiLSTM width of the CLUB variational network q_θ (eq. 9)
    missing_rate: float = 0.3       # k (§4.2): proportion erased per modality in training; MOSI 0.3, MOSEI 0.4
    unk_token_id: int = UNK_TOKEN_ID
    temperature: float = 0.1        # τ of eq. 6 (not given in the paper)
    lambda_decouple: float = 0.7    # λ, eq. 2 (§4.2)
    alpha: float = 0.1              # α, eq. 24 (§4.2)
    beta: float = 0.1               # β, eq. 24 (§4.2)
    weight_unimodal: float = 0.1    # addition: per-modality heads (0 in the paper configs)
    club_softplus: bool = True      # addition: softplus on the CLUB estimate (false in the paper configs)


# ---- paper-specific blocks ---------------------------------------------------------------------

class Alignment(nn.Module):
    """§3.4: "1D convolutions followed by simple nonlinear layers" to width d, then learned-query
    attention to the unified length t (ours)."""

    def __init__(self, in_dim: int, dim: int, length: int, kernel: int, heads: int):
        super().__init__()
        self.conv = Conv1dProjection(in_dim, dim, kernel)
        self.nonlinear = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
        self.length = QueryPooling(dim, length, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.length(self.nonlinear(self.conv(x)), mask)                      # (B, t, d)


class ClubEstimator(nn.Module):
    """q_θ(H^com | H^spec) of eq. 9: a BiLSTM over the independent sequence and nonlinear FC layers
    to the mean and log-variance of the common features at every step (§3.4, "CLUB-based")."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.mu = MLP(2 * hidden, hidden, dim, 2, 0.0)
        self.logvar = nn.Sequential(MLP(2 * hidden, hidden, dim, 2, 0.0), nn.Tanh())

    def forward(self, specific: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, _ = self.lstm(specific)
        return self.mu(h), self.logvar(h)


def club_log_likelihood(mu, logvar, target, valid) -> torch.Tensor:
    """Mean Gaussian log-likelihood (up to a constant) of the true target under q: the estimator's fit."""
    ll = (-(mu - target).pow(2) / logvar.exp() - logvar).sum(-1).mean(-1)          # (B,)
    return _masked_average(ll, valid)


def club_upper_bound(mu, logvar, target, valid) -> torch.Tensor:
    """Eq. 8-9: 1/N Σ_i [log q(c_i|s_i) - 1/N Σ_j log q(c_j|s_i)], the negatives every other valid sample."""
    var = logvar.exp()
    positive = (-(mu - target).pow(2) / (2 * var)).sum(-1).mean(-1)                                # (B,)
    pair = (-(mu.unsqueeze(1) - target.unsqueeze(0)).pow(2) / (2 * var.unsqueeze(1))).sum(-1).mean(-1)  # (B, B)
    cols = valid.to(pair.dtype).unsqueeze(0)
    negative = (pair * cols).sum(1) / cols.sum(1).clamp_min(1.0)
    return _masked_average(positive - negative, valid)


def info_nce(z: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 6 as printed: -1/|P| Σ_{(z1,z2)∈P} log[exp(sim(z1,z2)/τ) / Σ_{(z1,zi)∈N} exp(sim(z1,zi)/τ)],
    cosine similarity, the denominator over the negatives of z1 only. `positive`/`negative` are (N, N)
    bool masks of the pairs; anchors without a negative are left out."""
    sim = cosine_matrix(z, z) / temperature
    # a finite fill, not -inf: a row without negatives would otherwise give NaN gradients
    negatives = torch.logsumexp(sim.masked_fill(~negative, -1e4), dim=1)                 # (N,)
    pairs = positive & negative.any(1, keepdim=True)
    if not bool(pairs.any()):
        return z.sum() * 0.0
    return (negatives.unsqueeze(1) - sim)[pairs].mean()


def random_erasure(batch: MultimodalBatch, ratio: float, unk_token_id: int = UNK_TOKEN_ID,
                   generator: torch.Generator | None = None,
                   special_ids: tuple[int, ...] = SPECIAL_TOKEN_IDS) -> tuple[MultimodalBatch, dict[str, torch.Tensor]]:
    """§3.3 / §4.2: erase round(ratio · n) randomly chosen real positions of every present modality of
    every sample, the same ratio for every modality: text tokens -> [UNK] (special tokens kept),
    audio/vision frames -> zeros. Erased positions stay valid (mask True): the model sees the zeros /
    [UNK], as in the paper. Returns the erased batch and the (B, L) erased-position masks.
    Also the test-time erasure of `moodlens evaluate --missing-rates` (train/protocols.py)."""
    present = batch.present.to(torch.bool)
    specials = torch.zeros_like(batch.text_mask, dtype=torch.bool)
    for token in special_ids:
        specials |= batch.text_ids == token
    erasable = {"text": batch.text_mask.to(torch.bool) & ~specials & present[:, :1],
                "audio": batch.audio_mask.to(torch.bool) & present[:, 1:2],
                "vision": batch.vision_mask.to(torch.bool) & present[:, 2:3]}
    erased = {}
    for m, ok in erasable.items():
        scores = torch.rand(ok.shape, generator=generator).to(ok.device).masked_fill(~ok, 2.0)
        rank = scores.argsort(1).argsort(1)                       # random order among erasable positions
        count = torch.round(ok.sum(1).to(torch.float32) * ratio).to(torch.long)
        erased[m] = rank < count.unsqueeze(1)
    return batch.replace(
        text_ids=torch.where(erased["text"], torch.full_like(batch.text_ids, unk_token_id), batch.text_ids),
        audio=batch.audio.masked_fill(erased["audio"].unsqueeze(-1), 0.0),
        vision=batch.vision.masked_fill(erased["vision"].unsqueeze(-1), 0.0),
    ), erased


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _squared_error(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """‖a - b‖²_F per sample as a mean over its elements (ours: a plain sum would scale with t·d),
    averaged over the valid samples."""
    return _masked_average((a - b).pow(2).flatten(1).mean(1), valid)


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "dar"

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        d, t = c.hidden_dim, c.common_length
        self.in_dims = {"text": c.text_dim, "audio": c.audio_dim, "vision": c.vision_dim}
        # 1. alignment (§3.4)
        self.align = nn.ModuleDict({m: Alignment(self.in_dims[m], d, t, c.conv_kernel, c.heads) for m in MODALITIES})
        # 2. decouple (eq. 1): θ_m^c and θ_m^s, one pair per modality
        self.common_encoder = nn.ModuleDict({m: TransformerEncoder(d, c.heads, c.encoder_layers, dropout=c.dropout)
                                             for m in MODALITIES})
        self.specific_encoder = nn.ModuleDict({m: TransformerEncoder(d, c.heads, c.encoder_layers, dropout=c.dropout)
                                               for m in MODALITIES})
        # 3. reconstruct: E_com^m (eq. 12), E_spec^m (eq. 13), gates W_a, b_a (eq. 15) for com and spec
        self.common_reconstructor = nn.ModuleDict({m: MLP(3 * d, d, d, 2, c.dropout) for m in MODALITIES})
        self.specific_corrector = nn.ModuleDict({m: MLP(d, d, d, 2, c.dropout) for m in MODALITIES})
        self.common_gate = nn.ModuleDict({m: nn.Linear(2 * d, d) for m in MODALITIES})
        self.specific_gate = nn.ModuleDict({m: nn.Linear(2 * d, d) for m in MODALITIES})
        # 4. fusion-output: self-attention per modality (eq. 18), six cross-attentions (eq. 19-20), MLP (eq. 21)
        self.common_fusion = nn.ModuleDict({m: TransformerEncoder(d, c.heads, c.fusion_layers, dropout=c.dropout)
                                            for m in MODALITIES})
        self.cross = nn.ModuleDict({f"{s}_to_{m}": CrossModalEncoder(d, c.heads, c.fusion_layers, dropout=c.dropout)
                                    for s, m in DIRECTIONS})
        self.head = MLP(9 * d, d, 1, 2, c.dropout)
        # additions: absent-modality stand-ins and per-modality heads
        self.absent_common = nn.Parameter(torch.zeros(3, d))
        self.absent_cross = nn.Parameter(torch.zeros(len(DIRECTIONS), d))
        self.absent_unimodal = nn.Parameter(torch.zeros(3, 2 * d))
        self.unimodal_head = nn.ModuleDict({m: MLP(2 * d, d, 1, 2, c.dropout) for m in MODALITIES})
        # 5. training only: D_m of eq. 14, the restoration decoders of eq. 10, the boot head (eq. 22), q_θ (eq. 9)
        self.decoder = nn.ModuleDict({m: MLP(2 * d, d, d, 2, 0.0) for m in MODALITIES})
        self.restore_decoder = nn.ModuleDict({m: MLP(3 * d, d, d, 2, 0.0) for m in MODALITIES})
        self.boot_head = MLP(3 * d, d, 1, 2, c.dropout)
        self.club = nn.ModuleDict({m: ClubEstimator(d, c.club_hidden) for m in MODALITIES})

    # ---- 1-2 -------------------------------------------------------------------------------
    def decouple(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask):
        """Aligned input U¹_m (B, t, d) and the eq. 1 features H_m^com, H_m^spec (B, t, d) per modality."""
        # padded text positions zeroed, as audio/vision padding is: the alignment convolution reads its
        # neighbours, and the trainer's frozen-text cache leaves those positions zero anyway
        text = self.text_encoder(text_ids, text_mask).masked_fill(~text_mask.unsqueeze(-1), 0.0)
        raw = {"text": text, "audio": audio, "vision": vision}
        masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
        aligned = {m: self.align[m](raw[m], masks[m]) for m in MODALITIES}
        common = {m: self.common_encoder[m](aligned[m]) for m in MODALITIES}
        specific = {m: self.specific_encoder[m](aligned[m]) for m in MODALITIES}
        return aligned, common, specific

    def _common_or_absent(self, common: dict, present: torch.Tensor) -> dict:
        """Addition: an absent modality's common features become a learned stand-in."""
        return {m: torch.where(present[:, i].view(-1, 1, 1), common[m], self.absent_common[i].expand_as(common[m]))
                for i, m in enumerate(MODALITIES)}

    # ---- 3 ---------------------------------------------------------------------------------
    def reconstruct(self, common: dict, specific: dict, present: torch.Tensor) -> tuple[dict, dict]:
        """Eq. 12 Ĥ_m^com = E_com^m(Concat(H̃_l^com, H̃_v^com, H̃_a^com)); eq. 13 Ĥ_m^spec = E_spec^m(H̃_m^spec)."""
        stacked = torch.cat([self._common_or_absent(common, present)[m] for m in MODALITIES], dim=-1)  # (B, t, 3d)
        rec_common = {m: self.common_reconstructor[m](stacked) for m in MODALITIES}
        rec_specific = {m: self.specific_corrector[m](specific[m]) for m in MODALITIES}
        return rec_common, rec_specific

    def gate(self, rec_common: dict, common: dict, rec_specific: dict, specific: dict,
             present: torch.Tensor) -> tuple[dict, dict]:
        """Eq. 15-16 for com and spec: g = σ(W_a[Ĥ, H̃] + b_a), H_fused = g ⊙ Ĥ + (1 - g) ⊙ H̃.
        (Printed "g ⊙ Ĥ + (1 - g) ⊙ Ĥ"; the text says reconstructed with original features.)"""
        fused_common, fused_specific = {}, {}
        for i, m in enumerate(MODALITIES):
            g = torch.sigmoid(self.common_gate[m](torch.cat([rec_common[m], common[m]], dim=-1)))
            mixed = g * rec_common[m] + (1 - g) * common[m]
            # addition: an absent modality's common features are its reconstruction from the others
            fused_common[m] = torch.where(present[:, i].view(-1, 1, 1), mixed, rec_common[m])
            g = torch.sigmoid(self.specific_gate[m](torch.cat([rec_specific[m], specific[m]], dim=-1)))
            fused_specific[m] = g * rec_specific[m] + (1 - g) * specific[m]
        return fused_common, fused_specific

    # ---- 4 ---------------------------------------------------------------------------------
    def fuse(self, fused_common: dict, fused_specific: dict, present: torch.Tensor) -> torch.Tensor:
        """Eq. 18 h^com = SelfAttention(H_fused^com)[-1] per modality; eq. 19-20 h_m^spec =
        Concat(h_{s->m}) with h_{s->m} = CA(query m, key/value s)[-1]; -> Concat(h^com, h^spec) (B, 9d)."""
        h_common = [self.common_fusion[m](fused_common[m])[:, -1] for m in MODALITIES]
        h_specific = []
        for j, (s, m) in enumerate(DIRECTIONS):
            h = self.cross[f"{s}_to_{m}"](fused_specific[m], fused_specific[s])[:, -1]
            both = present[:, MODALITIES.index(s)] & present[:, MODALITIES.index(m)]
            h_specific.append(torch.where(both.unsqueeze(1), h, self.absent_cross[j].expand_as(h)))  # addition
        return torch.cat(h_common + h_specific, dim=-1)

    def unimodal(self, common: dict, specific: dict, present: torch.Tensor) -> dict:
        """Addition: a per-modality score from the modality's own pooled H̃^com and H̃^spec."""
        out = {}
        for i, m in enumerate(MODALITIES):
            own = torch.cat([common[m].mean(1), specific[m].mean(1)], dim=-1)
            own = torch.where(present[:, i:i + 1], own, self.absent_unimodal[i].expand_as(own))
            out[m] = self.unimodal_head[m](own).squeeze(-1)
        return out

    def _predict(self, common, specific, present):
        rec_common, rec_specific = self.reconstruct(common, specific, present)
        fused_common, fused_specific = self.gate(rec_common, common, rec_specific, specific, present)
        fused = self.head(self.fuse(fused_common, fused_specific, present)).squeeze(-1)       # eq. 21
        return fused, self.unimodal(common, specific, present), rec_common, rec_specific

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        _, common, specific = self.decouple(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        fused, unimodal, _, _ = self._predict(common, specific, present)
        r = self.config.output_range
        return SentimentOutput(scale_output(fused, r), *(scale_output(unimodal[m], r) for m in MODALITIES))

    # ---- 5. training -----------------------------------------------------------------------
    def training_batch(self, batch: MultimodalBatch, labels: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[MultimodalBatch, dict]:
        """§3.3: the incomplete input Ũ (erased at rate k); the complete input U rides along for `loss`."""
        erased_batch, _ = random_erasure(batch, self.config.missing_rate, self.config.unk_token_id, generator)
        return erased_batch, {"clean_batch": batch}

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.club.parameters())

    def auxiliary_loss(self, batch: MultimodalBatch, labels: torch.Tensor) -> torch.Tensor:
        """The estimator's own step of eq. 9's alternating optimisation: negative log-likelihood of
        q_θ(H̃^com | H̃^spec) on the current, detached features of `batch` (the trainer passes the
        erased batch that the following main step uses)."""
        text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = self.clean_inputs(*batch.tensors())
        with torch.no_grad():
            _, common, specific = self.decouple(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
        nll = [-club_log_likelihood(*self.club[m](specific[m]), common[m], present[:, i])
               for i, m in enumerate(MODALITIES)]
        return torch.stack(nll).sum()

    def similarity_loss(self, common: dict, specific: dict, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4, 6-7 on time-averaged features (Fig. 3). Common (3a): positives are the same sample's
        common features in another modality, negatives other samples'. Independent (3b): positives are
        other samples' independent features of the same modality ("i, j two different batches"),
        negatives the independent features of the other modalities."""
        b = present.shape[0]
        sample = torch.arange(b, device=present.device).repeat(3)                        # (3B,) modality-major
        modality = torch.arange(3, device=present.device).repeat_interleave(b)
        valid = present.T.reshape(-1)
        both = valid.unsqueeze(0) & valid.unsqueeze(1)
        same_sample = sample.unsqueeze(0) == sample.unsqueeze(1)
        same_modality = modality.unsqueeze(0) == modality.unsqueeze(1)
        z_common = torch.cat([common[m].mean(1) for m in MODALITIES])
        z_specific = torch.cat([specific[m].mean(1) for m in MODALITIES])
        t = self.config.temperature
        sim_common = info_nce(z_common, both & same_sample & ~same_modality, both & ~same_sample, t)
        sim_specific = info_nce(z_specific, both & same_modality & ~same_sample, both & ~same_modality, t)
        return sim_common, sim_specific

    def difference_loss(self, common: dict, specific: dict, present: torch.Tensor) -> torch.Tensor:
        """Eq. 5 / 9: Σ_m CLUB(H̃_m^spec -> H̃_m^com). q_θ is used with detached weights, so only its
        own `auxiliary_loss` trains it."""
        terms = []
        for i, m in enumerate(MODALITIES):
            frozen = {name: p.detach() for name, p in self.club[m].named_parameters()}
            mu, logvar = functional_call(self.club[m], frozen, (specific[m],))
            bound = club_upper_bound(mu, logvar, common[m], present[:, i])
            # addition (club_softplus): a negative estimate is estimator error; rewarding it let the
            # encoders exploit a lagging estimator on synthetic data (the bound fell below zero)
            terms.append(F.softplus(bound) if self.config.club_softplus else bound)
        return torch.stack(terms).sum()

    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, clean_batch: MultimodalBatch | None = None,
             **extras) -> dict[str, torch.Tensor]:
        """Eq. 24: L_total = L_task + α L_decouple + β L_recon (+ the unimodal addition).
        `batch` is the incomplete input Ũ; `clean_batch` the complete input U (training_batch's)."""
        c = self.config
        r = c.output_range
        cleaned = self.clean_inputs(*batch.tensors())
        present = cleaned[-1]
        aligned, common, specific = self.decouple(*cleaned[:6])                          # Ũ¹, H̃ (eq. 1)
        fused, unimodal, rec_common, rec_specific = self._predict(common, specific, present)
        # The complete input through the same alignment and encoders: U¹_m, H_m^com, H_m^spec (§3.4).
        complete = self.clean_inputs(*(clean_batch if clean_batch is not None else batch).tensors())
        c_aligned, c_common, c_specific = self.decouple(*complete[:6])

        # Eq. 22-23: the boot head on the complete-input common features (time-averaged, ours).
        boot_in = self._common_or_absent(c_common, present)
        boot = self.boot_head(torch.cat([boot_in[m].mean(1) for m in MODALITIES], dim=-1)).squeeze(-1)
        y, known = label_for(labels, "fused")
        task = masked_l1(scale_output(fused, r), y, known)
        boot_loss = masked_l1(scale_output(boot, r), y, known)

        # Eq. 10-11: D_m(Concat(the other modalities' H̃^com, own H̃^spec)) -> Ũ¹_m.
        others = self._common_or_absent(common, present)
        restore = []
        for i, m in enumerate(MODALITIES):
            inputs = torch.cat([others[o] for o in MODALITIES if o != m] + [specific[m]], dim=-1)
            restore.append(_squared_error(self.restore_decoder[m](inputs), aligned[m], present[:, i]))
        restore = torch.stack(restore).sum()

        # Eq. 14 and 17: Û¹_m = D_m(Concat(Ĥ_m^com, Ĥ_m^spec)); ‖Ĥ - H‖² + ‖Û¹ - U¹‖² against the complete input.
        recon = []
        for i, m in enumerate(MODALITIES):
            rebuilt_input = self.decoder[m](torch.cat([rec_common[m], rec_specific[m]], dim=-1))
            valid = present[:, i]
            recon.append(_squared_error(rec_common[m], c_common[m], valid)
                         + _squared_error(rec_specific[m], c_specific[m], valid)
                         + _squared_error(rebuilt_input, c_aligned[m], valid))
        recon = torch.stack(recon).sum()

        sim_common, sim_specific = self.similarity_loss(common, specific, present)
        similarity = sim_common + sim_specific                                           # eq. 7
        difference = self.difference_loss(common, specific, present)                     # eq. 9
        decouple = c.lambda_decouple * (similarity + difference) + restore              # eq. 2

        unimodal_loss = torch.stack([
            masked_l1(scale_output(unimodal[m], r), *_known_and_present(labels, m, present[:, i]))
            for i, m in enumerate(MODALITIES)]).sum()
        total = task + boot_loss + c.alpha * decouple + c.beta * recon + c.weight_unimodal * unimodal_loss  # eq. 23-24
        return {"task": task, "boot": boot_loss, "sim_common": sim_common, "sim_specific": sim_specific,
                "diff": difference, "restore": restore, "decouple": decouple, "recon": recon,
                "unimodal": unimodal_loss, "total": total}


def _known_and_present(labels: torch.Tensor, head: str, present: torch.Tensor):
    y, known = label_for(labels, head)
    return y, known & present
