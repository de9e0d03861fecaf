"""TeCaFN: Text-centered Cross-sample Fusion Network.

Huang, Chen, Huang, Huang & Wang, "Text-centered cross-sample fusion network for multimodal
sentiment analysis", Multimedia Systems 30(4):228, 2024.

Read top to bottom (equation numbers are the paper's):
  1. unimodal feature extraction (§3.2.1): text -> BERT (eq. 1, 4); audio/vision -> positions (eq. 1),
     an L-layer Transformer with the paper's residual-to-LN(x) form (eq. 2-3), a single-layer
     unidirectional LSTM (eq. 4); every modality -> temporal Conv1D to the model width (eq. 5): X_m
  2. text-centred cross-sample attention: X_t queries X_a and X_v, L layers (eq. 8-12)
  3. pooled streams -> z_s (sum fusion) -> ŷ = tanh(FC(z_s)), scaled to the label range (eq. 17)
                                                                         <- inference ends here
  4. training only (`loss`): stage-1 mappers q = f1(t), k = f2(m) (depth-wise Conv1D + mean pooling +
     projection W, Algorithm 1) with InfoNCE L_tcon = L_{t,a} + L_{t,v} (eq. 6); hard negatives from the
     normalised similarity S_{t,m} of those embeddings (eq. 7, Algorithm 1); the replacement gate
     (`training_batch`, Table 2: each of audio and vision replaced independently with probability p);
     pairwise prediction FC(Pool(h_tm)) with cross-entropy L_ap = L_tvp + L_tap (eq. 13-14); stage-2
     mappers z = g1(h_tv), u = g2(h_ta) with L_bicon = L_{tv,ta} + L_{ta,tv} (eq. 15-16); MAE (eq. 18);
     L_main = L_task + γ1 (L_tcon + L_bicon) + γ2 L_ap (eq. 19)

docs/fidelity/tecafn.md maps each equation to the code and lists what the paper leaves open. Choices the
paper leaves open: the fusion z_s (a sum of the two projected streams, the authors' code's `fusion='sum'`),
widths/heads/layers (the authors' code's 30 / 5 / 6 / 6), τ, the conv kernels, d_c, which accuracy the
early stop watches (configs/train/tecafn_paper_*.yaml: Non0 Acc-2).

Export note (ours): the LSTM runs over `lstm_steps` learned-query summaries of the Transformer output, not
over every frame, because torch.export unrolls an LSTM over a static length; padded frames never enter it.

Project additions (not in the paper): unimodal heads (text on pooled X_t, audio/vision on the LSTM state)
with an MAE loss whose weight is 0 in the paper configs; per-head (B, 4) labels (models.losses); absent
modalities: an absent audio/vision drops its cross-attention terms (its stream carries the text alone) and
a learned stand-in replaces its LSTM state, and an absent text becomes a learned query token, so a text-absent fused score is driven by audio/vision alone (outside the
paper, which is text-centred by design).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import (MLP, Conv1dProjection, FeedForward, MultiHeadAttention, QueryPooling,
                                    SinusoidalPositionalEncoding, masked_mean, scale_output)
from moodlens.models.losses import info_nce, label_for, masked_l1

# The four cases of the replacement gate (Table 2), as (audio replaced, vision replaced).
GATE_CASES = {"paired": (False, False), "audio_replaced": (True, False),
              "vision_replaced": (False, True), "both_replaced": (True, True)}


@dataclass
class Config(BaseModelConfig):
    """(paper) = stated in the paper; (authors' code) = TheShy-Dream/MSA-TeCaFN's default where the paper
    gives none or only a grid; the rest is ours."""

    model_dim: int = 30             # width of X_m and of the cross-modal attention (authors' code)
    heads: int = 5                  # (authors' code)
    self_layers: int = 6            # L of eq. 2-3 (authors' code)
    cross_layers: int = 6           # L of eq. 11-12 (authors' code)
    lstm_hidden: int = 16           # unimodal hidden size: paper grid {16, 32, 64}, 16 in the authors' code
    lstm_steps: int = 16            # ours: fixed-length summary the LSTM runs over (export, see module doc)
    conv_kernel: int = 1            # k_m of eq. 5 (not given)
    contrast_dim: int = 64          # d_c of Algorithm 1, the stage-1/2 embedding width (not given)
    fusion_hidden: int = 128        # width of z_s (authors' code d_prjh)
    temperature: float = 0.1        # τ of eq. 6 and 15 (not given)
    replace_prob: float = 0.7       # p of the replacement gate (paper §4.8: 0.7 on MOSI, 0.4 on MOSEI)
    hard_negatives: int = 3         # num (paper, Table 7)
    gamma1: float = 0.1             # γ1 of eq. 19 (paper grid {0.1, 0.2, 0.4}; authors' code 0.1)
    gamma2: float = 0.1             # γ2 of eq. 19 (paper grid {0.1, 0.2, 0.4}; authors' code 0.1)
    weight_unimodal: float = 0.1    # addition: the unimodal heads' MAE (0 in the paper configs)


# ---- paper-specific blocks ---------------------------------------------------------------------

class ResidualLNLayer(nn.Module):
    """One layer of eq. 2-3 (self-attention) or eq. 11-12 (cross-attention, `context` = X_m):
    x̂ = Att(LN(x)) + LN(x);  x' = FFN(LN(x̂)) + LN(x̂). The residual adds LN(x), not x (the paper's form)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 4 * dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, context=None, context_mask=None, context_on=None):
        """`context_on` (B,) bool (addition): where False the context modality is absent and its
        attention term is dropped, x̂ = LN(x), so the query stream passes on without it."""
        h = self.norm_attn(x)
        kv, kv_mask = (h, mask) if context is None else (context, context_mask)  # CoAt(LN(h)) = MHA(LN(h), X_m, X_m)
        att = self.attn(h, kv, kv_mask)
        if context_on is not None:
            att = torch.where(context_on.view(-1, 1, 1), att, torch.zeros_like(att))
        x = self.drop(att) + h
        h = self.norm_ff(x)
        return self.drop(self.ff(h)) + h


class Mapper(nn.Module):
    """Stage-1 f1/f2 and stage-2 g1/g2 (§3.2.2, §3.2.4, Algorithm 1): a depth-wise Conv1D over time,
    mean pooling over the real positions, then a learned projection W to d_c (cosine is taken later)."""

    def __init__(self, dim: int, out_dim: int, kernel: int = 3):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return self.proj(masked_mean(x, mask))


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _info_nce_on(anchor: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor, temperature: float):
    """InfoNCE (eq. 6, 15) among the valid rows only (absent samples are neither anchors nor negatives).
    Eq. 6 prints the negatives as q_j k_j; the cited InfoNCE [40] compares q_i with every k_j: so here."""
    if int(valid.sum()) < 2:
        return anchor.sum() * 0.0
    return info_nce(anchor[valid], positive[valid], temperature)


def mine_hard_negatives(similarity: torch.Tensor, candidates: torch.Tensor, replace: torch.Tensor,
                        pick: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1: for every sample i chosen for replacement, rank the other samples j by the
    normalised stage-1 similarity S_{t,m}[i, j] (eq. 7), keep the `num` most similar (hard negatives) and
    take the `pick`-th of them (uniform over the hard negatives, §3.2.3). similarity (B, B); candidates
    (B, B) bool (j usable for i); replace (B,) bool; pick (B,) long. Returns (source index (B,), replaced
    (B,) bool): samples without any candidate keep their own modality (stay paired). The sample itself is
    never a hard negative (the text: "not the correct corresponding matches")."""
    b = similarity.shape[0]
    own = torch.arange(b, device=similarity.device)
    candidates = candidates & ~torch.eye(b, dtype=torch.bool, device=similarity.device)
    k = max(1, min(num, b - 1))
    ranked = similarity.detach().masked_fill(~candidates, float("-inf")).topk(k, dim=1).indices
    available = candidates.sum(1).clamp(max=k)
    replaced = replace & (available > 0)
    chosen = ranked.gather(1, (pick % available.clamp_min(1)).unsqueeze(1)).squeeze(1)
    return torch.where(replaced, chosen, own), replaced


# ---- the model ---------------------------------------------------------------------------------

class Model(SentimentModel):
    name = "tecafn"

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        d = c.model_dim
        # 1. Audio/vision: input map to d (ours: the Transformer needs a width its heads divide),
        #    positions (eq. 1), L layers (eq. 2-3), fixed-length summary (ours, export), LSTM (eq. 4).
        self.audio_in = nn.Linear(c.audio_dim, d)
        self.vision_in = nn.Linear(c.vision_dim, d)
        self.positions = SinusoidalPositionalEncoding(d)
        self.audio_layers = nn.ModuleList(ResidualLNLayer(d, c.heads, c.dropout) for _ in range(c.self_layers))
        self.vision_layers = nn.ModuleList(ResidualLNLayer(d, c.heads, c.dropout) for _ in range(c.self_layers))
        self.audio_summary = QueryPooling(d, c.lstm_steps, c.heads)
        self.vision_summary = QueryPooling(d, c.lstm_steps, c.heads)
        self.audio_lstm = nn.LSTM(d, c.lstm_hidden, batch_first=True)
        self.vision_lstm = nn.LSTM(d, c.lstm_hidden, batch_first=True)
        # eq. 5: temporal Conv1D remapping of every modality to d.
        self.remap_text = Conv1dProjection(c.text_dim, d, c.conv_kernel)
        self.remap_audio = Conv1dProjection(c.lstm_hidden, d, c.conv_kernel)
        self.remap_vision = Conv1dProjection(c.lstm_hidden, d, c.conv_kernel)
        # 2. eq. 8-12: text-centred cross-attention, text the query.
        self.cross_text_audio = nn.ModuleList(ResidualLNLayer(d, c.heads, c.dropout) for _ in range(c.cross_layers))
        self.cross_text_vision = nn.ModuleList(ResidualLNLayer(d, c.heads, c.dropout) for _ in range(c.cross_layers))
        # Addition: learned stand-ins for absent modalities.
        self.absent_text = nn.Parameter(torch.zeros(d))
        self.absent_lstm = nn.Parameter(torch.zeros(2, c.lstm_hidden))  # audio, vision
        # 3. z_s = sum of the projected streams (authors' code); eq. 17: tanh(FC(z_s)).
        self.fuse_audio = nn.Linear(d, c.fusion_hidden)
        self.fuse_vision = nn.Linear(d, c.fusion_hidden)
        self.fusion_head = MLP(c.fusion_hidden, c.fusion_hidden, 1, 2, c.dropout)
        # Addition: unimodal heads.
        self.text_head = MLP(d, d, 1, 2, c.dropout)
        self.audio_head = MLP(c.lstm_hidden, d, 1, 2, c.dropout)
        self.vision_head = MLP(c.lstm_hidden, d, 1, 2, c.dropout)
        # 4. training only: stage-1 mappers f1 (text side) / f2 (other side) per text-centred pair,
        #    stage-2 mappers g1 (h_tv) / g2 (h_ta), pairwise FC heads (eq. 13).
        self.map_text_audio = Mapper(d, c.contrast_dim)
        self.map_audio = Mapper(d, c.contrast_dim)
        self.map_text_vision = Mapper(d, c.contrast_dim)
        self.map_vision = Mapper(d, c.contrast_dim)
        self.map_fused_vision = Mapper(d, c.contrast_dim)
        self.map_fused_audio = Mapper(d, c.contrast_dim)
        self.pair_audio = nn.Linear(d, 2)
        self.pair_vision = nn.Linear(d, 2)

    # ---- 1. unimodal feature extraction (eq. 1-5) -----------------------------------------------
    def encode(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask, present):
        """X_t (B, Lt, d), X_a and X_v (B, lstm_steps, d), and the audio/vision LSTM outputs."""
        text = self.text_encoder(text_ids, text_mask)                                          # eq. 1, 4
        text = torch.where(text_mask.unsqueeze(-1), text, torch.zeros_like(text))
        x_text = self.remap_text(text)                                                          # eq. 5
        x_text = torch.where(present[:, 0].view(-1, 1, 1), x_text, self.absent_text.expand_as(x_text))
        x_audio, lstm_audio = self._nonverbal(audio, audio_mask, self.audio_in, self.audio_layers,
                                              self.audio_summary, self.audio_lstm, self.remap_audio)
        x_vision, lstm_vision = self._nonverbal(vision, vision_mask, self.vision_in, self.vision_layers,
                                                self.vision_summary, self.vision_lstm, self.remap_vision)
        return x_text, x_audio, x_vision, lstm_audio, lstm_vision

    def _nonverbal(self, x, mask, proj, layers, summary, lstm, remap):
        x = self.positions(proj(x))                                                             # eq. 1
        for layer in layers:
            x = layer(x, mask)                                                                  # eq. 2-3
        states, _ = lstm(summary(x, mask))                                                      # eq. 4
        return remap(states), states                                                            # eq. 5

    # ---- 2-3. cross-sample attention and prediction (eq. 8-12, 17) -------------------------------
    def cross(self, layers, x_text, x_other, other_on):
        h = x_text                                                                              # h_tm^0 = X_t
        for layer in layers:
            h = layer(h, context=x_other, context_on=other_on)                                  # eq. 11-12
        return h

    def streams(self, x_text, text_mask, x_audio, x_vision, present):
        """h_ta^L, h_tv^L (B, Lt, d) and their pooled forms (B, d). Addition: an absent audio/vision
        drops its CoAt terms, so its stream carries the text alone (a text-only input still reaches
        the fused score, as the paper's "w/o V, A" ablation, Table 5, has a text-driven prediction)."""
        h_ta = self.cross(self.cross_text_audio, x_text, x_audio, present[:, 1])               # CoAt_{a->t}
        h_tv = self.cross(self.cross_text_vision, x_text, x_vision, present[:, 2])             # CoAt_{v->t}
        p_ta, p_tv = masked_mean(h_ta, text_mask), masked_mean(h_tv, text_mask)                 # Pool(.)
        return h_ta, h_tv, p_ta, p_tv

    def fuse(self, p_ta, p_tv):
        z_s = self.fuse_audio(p_ta) + self.fuse_vision(p_tv)                                    # z_s (sum)
        return scale_output(self.fusion_head(z_s).squeeze(-1), self.config.output_range)       # eq. 17

    def unimodal(self, x_text, text_mask, lstm_audio, lstm_vision, present):
        r = self.config.output_range
        last_a = torch.where(present[:, 1:2], lstm_audio[:, -1], self.absent_lstm[0].expand_as(lstm_audio[:, -1]))
        last_v = torch.where(present[:, 2:3], lstm_vision[:, -1], self.absent_lstm[1].expand_as(lstm_vision[:, -1]))
        return (scale_output(self.text_head(masked_mean(x_text, text_mask)).squeeze(-1), r),
                scale_output(self.audio_head(last_a).squeeze(-1), r),
                scale_output(self.vision_head(last_v).squeeze(-1), r))

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        x_text, x_audio, x_vision, lstm_audio, lstm_vision = self.encode(
            text_ids, text_mask, audio, audio_mask, vision, vision_mask, present)
        _, _, p_ta, p_tv = self.streams(x_text, text_mask, x_audio, x_vision, present)   # in-sample fusion only
        return SentimentOutput(self.fuse(p_ta, p_tv), *self.unimodal(x_text, text_mask, lstm_audio, lstm_vision,
                                                                      present))

    # ---- 4. training ---------------------------------------------------------------------------
    def training_batch(self, batch: MultimodalBatch, labels: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[MultimodalBatch, dict]:
        """The replacement gate (Table 2): independently for audio and vision, with probability p a
        sample's modality is replaced by one of its hard negatives (chosen in `loss`, where the stage-1
        similarities exist), uniformly. Only where text and that modality are present and the batch has
        another sample. Returns the pseudo-targets (True = paired) and which hard negative to take."""
        c = self.config
        b = batch.batch_size
        present = batch.present.to(torch.bool).cpu()
        replace_audio = torch.rand(b, generator=generator) < c.replace_prob
        replace_vision = torch.rand(b, generator=generator) < c.replace_prob
        pick_audio = torch.randint(0, max(1, c.hard_negatives), (b,), generator=generator)
        pick_vision = torch.randint(0, max(1, c.hard_negatives), (b,), generator=generator)
        usable = b > 1
        device = batch.present.device
        extras = {
            "audio_paired": (~(replace_audio & present[:, 0] & present[:, 1] & usable)).to(device),
            "vision_paired": (~(replace_vision & present[:, 0] & present[:, 2] & usable)).to(device),
            "audio_pick": pick_audio.to(device),
            "vision_pick": pick_vision.to(device),
        }
        return batch, extras

    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, audio_paired=None, vision_paired=None,
             audio_pick=None, vision_pick=None, **extras) -> dict[str, torch.Tensor]:
        c = self.config
        text_ids, text_mask, audio_in, audio_mask, vision_in, vision_mask, present = \
            self.clean_inputs(*batch.tensors())
        labels = labels.to(torch.float32)
        b = text_ids.shape[0]
        x_text, x_audio, x_vision, lstm_audio, lstm_vision = self.encode(
            text_ids, text_mask, audio_in, audio_mask, vision_in, vision_mask, present)
        t_on, a_on, v_on = present[:, 0], present[:, 1], present[:, 2]
        steps = torch.ones(b, x_audio.shape[1], dtype=torch.bool, device=x_audio.device)

        # Stage 1 (eq. 6-7, Algorithm 1): q = f1(t), k = f2(m); InfoNCE text -> m; S_{t,m} from q, k.
        q_a, k_a = self.map_text_audio(x_text, text_mask), self.map_audio(x_audio, steps)
        q_v, k_v = self.map_text_vision(x_text, text_mask), self.map_vision(x_vision, steps)
        l_ta = _info_nce_on(q_a, k_a, t_on & a_on, c.temperature)                               # L_{t,a}
        l_tv = _info_nce_on(q_v, k_v, t_on & v_on, c.temperature)                               # L_{t,v}
        s_ta = F.normalize(q_a, dim=-1) @ F.normalize(k_a, dim=-1).T                            # eq. 7
        s_tv = F.normalize(q_v, dim=-1) @ F.normalize(k_v, dim=-1).T

        # Replacement gate (Table 2) with hard negatives (Algorithm 1), at the level of X_m.
        none = torch.zeros(b, dtype=torch.long, device=text_ids.device)
        replace_audio = ~audio_paired if audio_paired is not None else torch.zeros_like(a_on)
        replace_vision = ~vision_paired if vision_paired is not None else torch.zeros_like(v_on)
        audio_src, audio_swapped = mine_hard_negatives(
            s_ta, a_on.unsqueeze(0) & a_on.unsqueeze(1), replace_audio & a_on & t_on,
            audio_pick if audio_pick is not None else none, c.hard_negatives)
        vision_src, vision_swapped = mine_hard_negatives(
            s_tv, v_on.unsqueeze(0) & v_on.unsqueeze(1), replace_vision & v_on & t_on,
            vision_pick if vision_pick is not None else none, c.hard_negatives)

        # Cross-sample fusion on the (possibly swapped) pairs (eq. 8-12), prediction (eq. 17-18).
        h_ta, h_tv, p_ta, p_tv = self.streams(x_text, text_mask, x_audio[audio_src], x_vision[vision_src], present)
        fused = self.fuse(p_ta, p_tv)
        y_fused, known_fused = label_for(labels, "fused")
        task = masked_l1(fused, y_fused, known_fused)                                           # eq. 18

        # Pairwise prediction (eq. 13-14): 1 = paired, 0 = a hard negative took its place.
        pair_a = F.cross_entropy(self.pair_audio(p_ta), (~audio_swapped).long(), reduction="none")
        pair_v = F.cross_entropy(self.pair_vision(p_tv), (~vision_swapped).long(), reduction="none")
        pairwise = _masked_average(pair_a, t_on & a_on) + _masked_average(pair_v, t_on & v_on)  # L_tap + L_tvp

        # Stage 2 (eq. 15-16): z = g1(h_tv), u = g2(h_ta), InfoNCE both ways.
        all_on = t_on & a_on & v_on
        z, u = self.map_fused_vision(h_tv, text_mask), self.map_fused_audio(h_ta, text_mask)
        bicon = _info_nce_on(z, u, all_on, c.temperature) + _info_nce_on(u, z, all_on, c.temperature)

        # Addition: unimodal heads, each on its own label column (a (B,) label serves all).
        preds = self.unimodal(x_text, text_mask, lstm_audio, lstm_vision, present)
        unimodal = 0.0
        for i, (head, pred) in enumerate(zip(("text", "audio", "vision"), preds)):
            y, known = label_for(labels, head)
            unimodal = unimodal + masked_l1(pred, y, known & present[:, i])

        terms = {
            "task": task,
            "contrastive_unimodal": l_ta + l_tv,                                                # L_tcon
            "contrastive_fused": bicon,                                                         # L_bicon
            "pairwise": pairwise,                                                               # L_ap
            "unimodal": unimodal,
        }
        terms["total"] = (task + c.gamma1 * (terms["contrastive_unimodal"] + bicon)             # eq. 19
                          + c.gamma2 * pairwise + c.weight_unimodal * unimodal)
        return terms
