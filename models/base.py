"""The base class every model derives from: input sanitising, example inputs, checkpoint state."""

from __future__ import annotations

import torch
from torch import nn

from moodlens.models.batch import MultimodalBatch, SentimentOutput
from moodlens.models.config import BaseModelConfig
from moodlens.models.layers import ensure_nonempty, sanitize
from moodlens.models.text_encoder import TextEncoder


class SentimentModel(nn.Module):
    """Subclasses implement `encode_and_predict` (inference path) and `loss` (training path).

    `forward(*batch.tensors())` first removes every trace of absent modalities (`clean_inputs`),
    so an absent modality cannot influence any output, then calls `encode_and_predict`.
    """

    name: str = "base"

    def __init__(self, config: BaseModelConfig, load_text_weights: bool = True):
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config.text_encoder, config.text_encoder_trainable_layers,
                                        load_weights=load_text_weights)
        if self.text_encoder.hidden_size != config.text_dim:
            config.text_dim = self.text_encoder.hidden_size

    # ---- inference -------------------------------------------------------------------------
    def clean_inputs(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask, present):
        present = present.to(torch.bool)
        text_on = present[:, 0:1]
        text_mask = text_mask.to(torch.bool) & text_on
        text_ids = torch.where(text_mask, text_ids, torch.full_like(text_ids, self.text_encoder.pad_token_id))
        text_mask = ensure_nonempty(text_mask)
        audio, audio_mask = sanitize(audio, audio_mask.to(torch.bool), present[:, 1])
        vision, vision_mask = sanitize(vision, vision_mask.to(torch.bool), present[:, 2])
        return text_ids, text_mask, audio, audio_mask, vision, vision_mask, present

    def forward(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask, present) -> SentimentOutput:
        return self.encode_and_predict(*self.clean_inputs(text_ids, text_mask, audio, audio_mask,
                                                          vision, vision_mask, present))

    def encode_and_predict(self, text_ids, text_mask, audio, audio_mask, vision, vision_mask,
                           present) -> SentimentOutput:
        raise NotImplementedError

    # ---- training --------------------------------------------------------------------------
    def loss(self, batch: MultimodalBatch, labels: torch.Tensor, **extras) -> dict[str, torch.Tensor]:
        """Named loss terms including 'total'. Call in training mode. `extras` are what
        `training_batch` returned (e.g. TeCaFN's paired/unpaired targets)."""
        raise NotImplementedError

    # Training-only hooks, called by the trainer (not by forward), so the inference path stays lean.
    def training_batch(self, batch: MultimodalBatch, labels: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[MultimodalBatch, dict]:
        """Transform a training batch before `loss` (DAR's random erasure, TeCaFN's replacement gate).
        Returns the batch to use and extra keyword arguments for `loss`."""
        return batch, {}

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """Parameters with their own optimizer, stepped alternately (DAR's CLUB network).
        The trainer leaves these out of the main optimizer."""
        return []

    def auxiliary_loss(self, batch: MultimodalBatch, labels: torch.Tensor) -> torch.Tensor:
        """Loss minimized over `auxiliary_parameters()` only, before each main step."""
        raise NotImplementedError

    # ---- helpers ---------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, text_len: int = 12, audio_len: int = 50,
                       vision_len: int = 15, seed: int = 0) -> MultimodalBatch:
        """A valid random batch in the configured dims, with ragged lengths."""
        g = torch.Generator().manual_seed(seed)
        b = batch_size
        ids = torch.randint(1000, 5000, (b, text_len), generator=g)
        ids[:, 0] = 101  # [CLS]
        def lengths(n):
            return torch.randint(max(2, n // 2), n + 1, (b,), generator=g)
        def mask_of(ls, n):
            return torch.arange(n).unsqueeze(0) < ls.unsqueeze(1)
        text_mask = mask_of(lengths(text_len), text_len)
        audio_mask = mask_of(lengths(audio_len), audio_len)
        vision_mask = mask_of(lengths(vision_len), vision_len)
        device = next(self.parameters()).device
        batch = MultimodalBatch(
            text_ids=ids.where(text_mask, torch.zeros_like(ids)),
            text_mask=text_mask,
            audio=torch.randn(b, audio_len, self.config.audio_dim, generator=g),
            audio_mask=audio_mask,
            vision=torch.randn(b, vision_len, self.config.vision_dim, generator=g),
            vision_mask=vision_mask,
            present=torch.ones(b, 3, dtype=torch.bool),
        )
        return batch.to(device)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """State dict without the frozen text-encoder weights (those ship with the encoder's package)."""
        frozen = tuple("text_encoder." + p for p in self.text_encoder.frozen_prefixes())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(frozen)}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise KeyError(f"checkpoint has weights this model lacks, such as '{unexpected[0]}'")
        frozen = tuple("text_encoder." + p for p in self.text_encoder.frozen_prefixes())
        missing = sorted(k for k in own if k not in state and not k.startswith(frozen))
        if missing:
            raise KeyError(f"checkpoint lacks weights such as '{missing[0]}'")
        self.load_state_dict(state, strict=False)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
