"""Checkpoint files: everything needed to score live (weights, model config, featurizer config, metrics).

A checkpoint = `torch.save` of
    {"format": "moodlens-checkpoint/1", "model_name", "model_config", "featurizer_config",
     "state_dict": model.checkpoint_state(), "metrics", "versions", ...extra}
Frozen text-encoder weights are left out (they come from the encoder's own package). With
`half=True` floating weights are stored as float16 (halves the file; loaded back as float32).
"""

from __future__ import annotations

import dataclasses
import io
import lzma
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch

from moodlens.core.errors import AssetError, ConfigError
from moodlens.core.schema import CHECKPOINT_LIBRARIES, versions

FORMAT = "moodlens-checkpoint/1"
# Key prefixes of the text encoder as moodlens's hand-written BERT named them (checkpoints before the
# encoder became transformers' AutoModel, models/text_encoder.py); they now sit under `text_encoder.model.`.
LEGACY_TEXT_PREFIXES = ("text_encoder.embeddings.", "text_encoder.encoder.")
DEFAULT_NAME = "default.pt"
# A checkpoint file may be xz-compressed as a whole (the shipped default weights: float16 tensors compress ~11 %,
# 22.9 -> 20.4 MB, and decompress in 1.3-1.4 s on the 2-vCPU VM, once per start); read_checkpoint tells the two apart by these bytes.
XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    model_name: str
    model_config: dict
    featurizer_config: dict
    metrics: dict
    path: str
    extra: dict = dataclasses.field(default_factory=dict)


def default_checkpoint_path() -> Path:
    """models/weights/default.pt, shipped as package data of moodlens.models."""
    return Path(str(importlib.resources.files("moodlens.models"))) / "weights" / DEFAULT_NAME


def library_versions() -> dict[str, str]:
    return versions(CHECKPOINT_LIBRARIES)


def legacy_text_encoder_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the hand-written encoder's keys renamed to transformers' (same tensors:
    the layer and weight names inside each BERT layer are the same in both)."""
    return {"text_encoder.model." + k.removeprefix("text_encoder.") if k.startswith(LEGACY_TEXT_PREFIXES) else k: v
            for k, v in state.items()}


def save_checkpoint(path, model, featurizer_config: dict, metrics: dict, extra: dict | None = None,
                    half: bool = False) -> Path:
    """Write `model` (a SentimentModel) to `path`; returns the path."""
    from moodlens.models.config import config_to_dict

    state = {k: v.detach().cpu() for k, v in model.checkpoint_state().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "model_name": model.name,
        "model_config": config_to_dict(model.config),
        "featurizer_config": dict(featurizer_config),
        "state_dict": state,
        "metrics": dict(metrics),
        "versions": library_versions(),
        "weights_dtype": "float16" if half else "float32",
    }
    for key, value in (extra or {}).items():
        payload.setdefault(key, value)
    return write_payload(path, payload)


def write_payload(path, payload: dict, compress: bool = False) -> Path:
    """torch.save `payload` to `path` atomically (never a half-written checkpoint), xz-compressed if asked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    if compress:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        tmp.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
    else:
        torch.save(payload, tmp)
    tmp.replace(path)
    return path


def is_compressed(path) -> bool:
    with Path(path).open("rb") as f:
        return f.read(len(XZ_MAGIC)) == XZ_MAGIC


def read_checkpoint(path_or_default) -> tuple[dict, Path]:
    """The raw checkpoint dict, checked for format and required keys."""
    if str(path_or_default) == "default":
        path = default_checkpoint_path()
        if not path.exists():
            raise AssetError(f"The default weights {path} are missing; reinstall moodlens or pass --checkpoint PATH.")
    else:
        path = Path(path_or_default).expanduser()
        if not path.exists():
            raise AssetError(f"Checkpoint {path} does not exist.")
    try:
        source = io.BytesIO(lzma.decompress(path.read_bytes())) if is_compressed(path) else path
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and lzma raise many types for a corrupt or foreign file
        raise AssetError(f"Checkpoint {path} cannot be read ({type(err).__name__}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise AssetError(f"Checkpoint {path} is not a moodlens checkpoint (format {found!r}, expected {FORMAT!r}).")
    for key in ("model_name", "model_config", "featurizer_config", "state_dict"):
        if key not in payload:
            raise AssetError(f"Checkpoint {path} lacks key '{key}'.")
    payload["state_dict"] = legacy_text_encoder_keys(payload["state_dict"])
    return payload, path


def model_from_payload(payload: dict, path, overrides: dict | None = None) -> torch.nn.Module:
    """The model of a checkpoint dict with its weights (frozen encoder weights from the encoder's
    package); `overrides` change model config keys that leave the weights' shapes alone (e.g. dropout)."""
    from moodlens.models import model_module
    from moodlens.core.options import fill_dataclass

    name = payload["model_name"]
    try:
        module = model_module(name)
    except ConfigError:
        raise AssetError(f"Checkpoint {path} holds model '{name}', which this moodlens does not know.") from None
    if not isinstance(payload["model_config"], dict) or not isinstance(payload["state_dict"], dict):
        raise AssetError(f"Checkpoint {path} is damaged: its model config or weights are not mappings.")
    try:
        fill_dataclass(module.Config, dict(payload["model_config"]), f"checkpoint {path}")
    except ConfigError:
        # keys of another model's config: the file names the wrong model (hand-edited or mixed up)
        raise AssetError(f"Checkpoint {path} says it holds a '{name}' model, but its model config is not a "
                         f"{name} config; it was saved from a different model or edited.") from None
    config = fill_dataclass(module.Config, {**payload["model_config"], **(overrides or {})}, f"checkpoint {path}")
    bad = [k for k, v in payload["state_dict"].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise AssetError(f"Checkpoint {path} holds NaN or infinite weights ({len(bad)} tensor(s), first "
                         f"'{bad[0]}'); it cannot score. Use an earlier checkpoint or retrain.")
    model = module.Model(config)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and isinstance(v, torch.Tensor) and v.is_floating_point() else v
             for k, v in payload["state_dict"].items()}
    try:
        model.load_checkpoint_state(state)
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise AssetError(f"Checkpoint {path} does not fit model '{name}': {_fit_problem(err, state, own)}; "
                         f"it was saved from a different version or config of the model.") from None
    return model


def _fit_problem(err: BaseException, state: dict, own: dict) -> str:
    """One line instead of PyTorch's multi-line load_state_dict report."""
    for key, value in state.items():
        if key in own and isinstance(value, torch.Tensor) and tuple(value.shape) != tuple(own[key].shape):
            return f"weight '{key}' has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
    if isinstance(err, KeyError):
        return f"weight {err.args[0]!r} is missing or unexpected" if err.args else "a weight is missing"
    first = (str(err.args[0]) if err.args else str(err)).strip().splitlines()
    return first[0].rstrip(":. ") if first else type(err).__name__


def checkpoint_trained_modalities(extra: dict) -> list[str]:
    """The modalities a checkpoint's weights were trained on; checkpoints written before this was
    recorded (or with an empty record) count as trained on all. The one definition: the scorer and
    the trainer both use it."""
    from moodlens.core.schema import MODALITIES

    recorded = extra.get("trained_modalities")
    return list(MODALITIES) if not recorded else [m for m in MODALITIES if m in recorded]


def load_checkpoint(path_or_default="default", device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint (frozen encoder weights from the encoder's package), in eval mode."""
    payload, path = read_checkpoint(path_or_default)
    model = model_from_payload(payload, path)
    model.to(device).eval()
    extra = {k: v for k, v in payload.items()
             if k not in ("format", "model_name", "model_config", "featurizer_config", "state_dict", "metrics")}
    return LoadedCheckpoint(model=model, model_name=payload["model_name"], model_config=dict(payload["model_config"]),
                            featurizer_config=dict(payload["featurizer_config"]),
                            metrics=dict(payload.get("metrics") or {}), path=str(path), extra=extra)


def restamp_featurizer_config(path, featurizer_config: dict) -> None:
    """Replace the featurizer config stored in a checkpoint, keeping everything else.

    Only valid where the changed fields never reached the weights: e.g. new default audio
    statistics for the text-only default weights, whose audio branch was never trained."""
    update_checkpoint(path, featurizer_config=featurizer_config)


def update_checkpoint(path, featurizer_config: dict | None = None, **extra) -> None:
    """Rewrite a checkpoint's featurizer config and/or extra keys (e.g. trained_modalities),
    keeping the weights, model config and metrics as they are."""
    core = {"format", "model_name", "model_config", "state_dict"} & set(extra)
    if core:
        raise ValueError(f"update_checkpoint cannot replace '{sorted(core)[0]}'")
    payload, path = read_checkpoint(path)
    if featurizer_config is not None:
        payload["featurizer_config"] = dict(featurizer_config)
    payload.update(extra)
    write_payload(path, payload, compress=is_compressed(path))   # a compressed file stays compressed
