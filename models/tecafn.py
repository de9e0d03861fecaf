"""TeCaFN: Text-centered Cross-sample Fusion Network.

Huang, Chen, Huang, Huang & Wang, "Text-centered cross-sample fusion network for multimodal
sentiment analysis", Multimedia Systems 30(4):228, 2024. Defaults follow the authors' settings
(width 30, 5 heads, 6 self- and 6 cross-attention layers, LSTM width 16, InfoNCE τ = 0.1,
replacement probability p = 0.5, 3 hard negatives, γ1 = γ2 = 0.1).

Read top to bottom:
  1. Conv1D remapping of every modality (text: after the text encoder) to the common width
  2. audio/vision encoders: a Transformer encoder, then an LSTM
  3. text-centred cross-sample attention: text queries audio and vision
  4. sum fusion of the two text-centred streams, tanh output scaled to the label range
                                                                         <- inference ends here
  5. training only: stage-1 text-centred InfoNCE whose similarities drive hard-negative mining
     (Algorithm 1); the replacement gate (`training_batch`, Table 2) swaps a sample's audio
     and/or vision for a hard negative from the batch and the model predicts paired/unpaired
     (cross-entropy); stage-2 bidirectional contrastive loss between the two fused streams;
     MAE task loss; L = L_task + γ1·L_con + γ2·L_pair

Comments cite these step numbers (Algorithm 1 and Table 2 are the paper's; its equation numbers
were not at hand offline, the authors' public code was consulted for hyperparameters).

Export note: the LSTM runs over a fixed number of steps (`lstm_steps` learned-query summaries
of the Transformer output), because torch.export unrolls an LSTM over a static length; padded
frames never enter it (attention masks, no pack_padded_sequence).

Unimodal outputs come from auxiliary heads (not in the paper) on the pooled text and on the audio
and vision LSTM states, trained with MAE on the same label. Absent modalities: learned "absent"
embeddings replace an absent modality's stream and LSTM state; an absent text becomes a learned
query token, so fusion is driven by audio/vision alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moodlens.models.base import SentimentModel
from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import (MLP, Conv1dProjection, CrossModalEncoder, QueryPooling, TransformerEncoder,
                                    masked_mean, scale_output)
from moodlens.models.losses import info_nce

# The four cases of the replacement gate (Table 2), as (audio replaced, vision replaced).
GATE_CASES = {"paired": (False, False), "audio_replaced": (True, False),
              "vision_replaced": (False, True), "both_replaced": (True, True)}


@dataclass
class Config(BaseModelConfig):
    model_dim: int = 30             # model_dim_self = model_dim_cross
    heads: int = 5
    self_layers: int = 6            # audio/vision Transformer encoders
    cross_layers: int = 6           # text-centred cross-sample attention layers
    lstm_hidden: int = 16           # d_ah = d_vh
    lstm_steps: int = 16            # fixed-length summary the LSTM runs over (export, see module doc)
    fusion_hidden: int = 128        # d_prjh
    temperature: float = 0.1        # InfoNCE τ (both stages)
    replace_prob: float = 0.5       # p of the replacement gate
    hard_negatives: int = 3         # candidates of Algorithm 1 (most similar other samples)
    gamma1: float = 0.1             # weight of the contrastive losses (stage 1 + stage 2)
    gamma2: float = 0.1             # weight of the pairwise (paired/unpaired) prediction
    weight_unimodal: float = 0.1    # auxiliary unimodal heads (not in the paper)


def _masked_average(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _info_nce_on(anchor: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor, temperature: float):
    """InfoNCE among the valid rows only (absent samples are neither anchors nor negatives)."""
    if int(valid.sum()) < 2:
        return anchor.sum() * 0.0
    return info_nce(anchor[valid], positive[valid], temperature)


def mine_hard_negatives(similarity: torch.Tensor, candidates: torch.Tensor, replace: torch.Tensor,
                        pick: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1: for every sample i chosen for replacement, rank the other samples j by the
    stage-1 text-centred similarity s(t_i, m_j), keep the `num` most similar (hard negatives) and
    take the `pick`-th of them. similarity (B, B); candidates (B, B) bool (j usable for i);
    replace (B,) bool; pick (B,) long. Returns (source index (B,), replaced (B,) bool): samples
    without any candidate keep their own modality (stay paired)."""
    b = similarity.shape[0]
    own = torch.arange(b, device=similarity.device)
    candidates = candidates & ~torch.eye(b, dtype=torch.bool, device=similarity.device)
    k = max(1, min(num, b - 1))
    ranked = similarity.detach().masked_fill(~candidates, float("-inf")).topk(k, dim=1).indices
    available = candidates.sum(1).clamp(max=k)
    replaced = replace & (available > 0)
    chosen = ranked.gather(1, (pick % available.clamp_min(1)).unsqueeze(1)).squeeze(1)
    return torch.where(replaced, chosen, own), replaced


class Model(SentimentModel):
    name = "tecafn"

    def __init__(self, config: Config, load_text_weights: bool = True):
        super().__init__(config, load_text_weights)
        c = config
        d = c.model_dim
        # Step 1: Conv1D remapping of each modality to the common width d.
        self.remap_text = Conv1dProjection(c.text_dim, d, 1)
        self.remap_audio = Conv1dProjection(c.audio_dim, d, 1)
        self.remap_vision = Conv1dProjection(c.vision_dim, d, 1)
        # Step 2: Transformer encoders, then an LSTM over a fixed-length summary, for audio and vision.
        self.audio_encoder = TransformerEncoder(d, c.heads, c.self_layers, dropout=c.dropout)
        self.vision_encoder = TransformerEncoder(d, c.heads, c.self_layers, dropout=c.dropout)
        self.audio_summary = QueryPooling(d, c.lstm_steps, c.heads)
        self.vision_summary = QueryPooling(d, c.lstm_steps, c.heads)
        self.audio_lstm = nn.LSTM(d, c.lstm_hidden, batch_first=True)
        self.vision_lstm = nn.LSTM(d, c.lstm_hidden, batch_first=True)
        # Step 3: text-centred cross-sample attention (text is the query).
        self.cross_text_audio = CrossModalEncoder(d, c.heads, c.cross_layers, dropout=c.dropout)
        self.cross_text_vision = CrossModalEncoder(d, c.heads, c.cross_layers, dropout=c.dropout)
        # Learned stand-ins for absent modalities.
        self.absent_text = nn.Parameter(torch.zeros(d))
        self.absent_stream = nn.Parameter(torch.zeros(2, d))          # text->audio, text->vision
        self.absent_lstm = nn.Parameter(torch.zeros(2, c.lstm_hidden))  # audio, vision
        # Step 4: sum fusion and prediction.
        self.fuse_audio = nn.Linear(d, c.fusion_hidden)
        self.fuse_vision = nn.Linear(d, c.fusion_hidden)
        self.fusion_head = MLP(c.fusion_hidden, c.fusion_hidden, 1, 2, c.dropout)
        # Auxiliary unimodal heads.
        self.text_head = MLP(d, d, 1, 2, c.dropout)
        self.audio_head = MLP(c.lstm_hidden, d, 1, 2, c.dropout)
        self.vision_head = MLP(c.lstm_hidden, d, 1, 2, c.dropout)
        # Step 5: pairwise prediction (training only): paired (1) or unpaired (0).
        self.pair_audio = MLP(d, d, 2, 2, 0.0)
        self.pair_vision = MLP(d, d, 2, 2, 0.0)

    # ---- steps 1-2 ----------------------------------------------------------------------------
    def encode(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask, present):
        text = self.remap_text(self.text_encoder(text_ids, text_mask))
        text = torch.where(present[:, 0].view(-1, 1, 1), text, self.absent_text.expand_as(text))
        audio = self.audio_encoder(self.remap_audio(audio), audio_mask)
        vision = self.vision_encoder(self.remap_vision(vision), vision_mask)
        return text, audio, vision

    def lstm_state(self, seq, mask, on, which: int):
        summary = (self.audio_summary if which == 0 else self.vision_summary)(seq, mask)
        out, _ = (self.audio_lstm if which == 0 else self.vision_lstm)(summary)
        last = out[:, -1]
        return torch.where(on.unsqueeze(1), last, self.absent_lstm[which].expand_as(last))

    # ---- steps 3-4 ------------------------------------------------------------------------
    def cross_streams(self, text, text_mask, audio, audio_mask, audio_on, vision, vision_mask, vision_on):
        h_audio = masked_mean(self.cross_text_audio(text, audio, audio_mask), text_mask)
        h_vision = masked_mean(self.cross_text_vision(text, vision, vision_mask), text_mask)
        h_audio = torch.where(audio_on.unsqueeze(1), h_audio, self.absent_stream[0].expand_as(h_audio))
        h_vision = torch.where(vision_on.unsqueeze(1), h_vision, self.absent_stream[1].expand_as(h_vision))
        return h_audio, h_vision

    def fuse(self, h_audio, h_vision):
        return self.fusion_head(self.fuse_audio(h_audio) + self.fuse_vision(h_vision)).squeeze(-1)

    def unimodal(self, text, text_mask, audio, audio_mask, vision, vision_mask, present):
        r = self.config.output_range
        return (scale_output(self.text_head(masked_mean(text, text_mask)).squeeze(-1), r),
                scale_output(self.audio_head(self.lstm_state(audio, audio_mask, present[:, 1], 0)).squeeze(-1), r),
                scale_output(self.vision_head(self.lstm_state(vision, vision_mask, present[:, 2], 1)).squeeze(-1), r))

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        text, audio, vision = self.encode(text_ids, text_mask, audio, audio_mask, vision, vision_mask, present)
        h_audio, h_vision = self.cross_streams(text, text_mask, audio, audio_mask, present[:, 1],
                                               vision, vision_mask, present[:, 2])
        fused = scale_output(self.fuse(h_audio, h_vision), self.config.output_range)
        return SentimentOutput(fused, *self.unimodal(text, text_mask, audio, audio_mask, vision, vision_mask,
                                                     present))

    # ---- step 5: training -------------------------------------------------------------------
    def training_batch(self, batch: MultimodalBatch, labels: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[MultimodalBatch, dict]:
        """The replacement gate (Table 2): independently for audio and vision, with probability p
        a sample's modality is replaced by a hard negative from the batch (chosen in `loss`, where
        the stage-1 similarities exist). Returns the paired/unpaired targets (True = paired) and
        which of the hard negatives to take."""
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
            "audio_paired": (~(replace_audio & present[:, 1] & usable)).to(device),
            "vision_paired": (~(replace_vision & present[:, 2] & usable)).to(device),
            "audio_pick": pick_audio.to(device),
            "vision_pick": pick_vision.to(device),
        }
        return batch, extras

    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, audio_paired=None, vision_paired=None,
             audio_pick=None, vision_pick=None, **extras) -> dict[str, torch.Tensor]:
        c = self.config
        r = c.output_range
        text_ids, text_mask, audio_in, audio_mask, vision_in, vision_mask, present = \
            self.clean_inputs(*batch.tensors())
        labels = labels.to(torch.float32).reshape(-1)
        b = labels.shape[0]
        text, audio, vision = self.encode(text_ids, text_mask, audio_in, audio_mask, vision_in, vision_mask, present)
        t_on, a_on, v_on = present[:, 0], present[:, 1], present[:, 2]

        # Stage 1: text-centred InfoNCE on pooled sequences (text anchor, audio / vision positive).
        t_pool = masked_mean(text, text_mask)
        a_pool = masked_mean(audio, audio_mask)
        v_pool = masked_mean(vision, vision_mask)
        nce_text_audio = _info_nce_on(t_pool, a_pool, t_on & a_on, c.temperature)
        nce_text_vision = _info_nce_on(t_pool, v_pool, t_on & v_on, c.temperature)
        sim_audio = F.normalize(t_pool, dim=-1) @ F.normalize(a_pool, dim=-1).T
        sim_vision = F.normalize(t_pool, dim=-1) @ F.normalize(v_pool, dim=-1).T

        # Replacement gate + Algorithm 1: the replaced modality comes from a hard negative.
        none = torch.zeros(b, dtype=torch.long, device=labels.device)
        replace_audio = ~audio_paired if audio_paired is not None else torch.zeros_like(a_on)
        replace_vision = ~vision_paired if vision_paired is not None else torch.zeros_like(v_on)
        audio_src, audio_swapped = mine_hard_negatives(sim_audio, a_on.unsqueeze(0) & a_on.unsqueeze(1),
                                                       replace_audio & a_on, audio_pick if audio_pick is not None
                                                       else none, c.hard_negatives)
        vision_src, vision_swapped = mine_hard_negatives(sim_vision, v_on.unsqueeze(0) & v_on.unsqueeze(1),
                                                         replace_vision & v_on, vision_pick if vision_pick is not None
                                                         else none, c.hard_negatives)

        # Text-centred cross-sample fusion on the (possibly swapped) pairs.
        h_audio, h_vision = self.cross_streams(text, text_mask, audio[audio_src], audio_mask[audio_src], a_on,
                                               vision[vision_src], vision_mask[vision_src], v_on)
        fused = scale_output(self.fuse(h_audio, h_vision), r)

        # Pairwise prediction: paired (1) / unpaired (0), cross-entropy where both sides are present.
        pair_audio = F.cross_entropy(self.pair_audio(h_audio), (~audio_swapped).long(), reduction="none")
        pair_vision = F.cross_entropy(self.pair_vision(h_vision), (~vision_swapped).long(), reduction="none")
        pairwise = _masked_average(pair_audio, t_on & a_on) + _masked_average(pair_vision, t_on & v_on)

        # Stage 2: bidirectional contrastive loss between the two text-centred streams.
        both = t_on & a_on & v_on
        nce_streams = (_info_nce_on(h_audio, h_vision, both, c.temperature)
                       + _info_nce_on(h_vision, h_audio, both, c.temperature))

        text_pred, audio_pred, vision_pred = self.unimodal(text, text_mask, audio, audio_mask, vision, vision_mask,
                                                           present)
        unimodal = (_masked_average((text_pred - labels).abs(), t_on)
                    + _masked_average((audio_pred - labels).abs(), a_on)
                    + _masked_average((vision_pred - labels).abs(), v_on))
        terms = {
            "task": (fused - labels).abs().mean(),
            "contrastive_unimodal": nce_text_audio + nce_text_vision,
            "contrastive_fused": nce_streams,
            "pairwise": pairwise,
            "unimodal": unimodal,
        }
        terms["total"] = (terms["task"] + c.gamma1 * (terms["contrastive_unimodal"] + terms["contrastive_fused"])
                          + c.gamma2 * terms["pairwise"] + c.weight_unimodal * terms["unimodal"])
        return terms
