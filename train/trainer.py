"""The trainer: any model of the zoo on any dataset of `train/data.py`, MMSA-style.

- Adam (or AdamW) with its own learning rate for the (fine-tuned part of the) text encoder; optional
  warm-up / linear / cosine / plateau schedules, clipping by norm or value and gradient accumulation as
  the papers' authors run them (train/optim.py); the defaults are a constant rate and one step per batch;
- the model's training hooks: `training_batch` before `loss`; `auxiliary_parameters` get their own
  Adam and are stepped on `auxiliary_loss` before each main step (DAR's CLUB), and are left out
  of the main optimizer;
- early stopping on validation loss (MAE of the fused output, as MMSA selects for regression), or on the
  validation metric named by `early_stop_metric` (TeCaFN's paper stops on accuracy);
- per-seed folders with best.pt, last.pt (resume), log.csv and metrics.json; DIR/best.pt is the seed
  with the lowest validation loss, DIR/metrics.json holds test metrics as mean (and std) over seeds;
- optionally a weight soup (Wortsman et al., 2022, "Model soups"): with `init_seed` every seed starts from
  the same initial weights and differs only in data order and dropout; `weight_soup` then averages the
  seeds' best weights (all of them, or greedily in order of validation score, keeping an ingredient only
  if the validation score does not get worse) into DIR/soup.pt, which becomes DIR/best.pt: one model's size
  and speed, less of one seed's luck; `soup_prefixes` averages only those tensors (e.g. a fine-tuned
  encoder, whose seeds stay in one basin) and keeps the best seed's rest (heads trained from scratch
  need not average: docs/model_card.md, "Text soup");
- deterministic mode, rich progress bars, DDP under torchrun (WORLD_SIZE set), bf16 autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moodlens.core.schema import MODALITIES
from moodlens.models.batch import MultimodalBatch
from moodlens.core.errors import ConfigError, DataError
from moodlens.models.device import resolve_device
from moodlens.models.checkpoint import checkpoint_trained_modalities, model_from_payload, read_checkpoint, save_checkpoint
from moodlens.realtime.perception.features.config import live_featurizer_config
from moodlens.train.data import DataOptions, DatasetSplits, Split, load_dataset, trim
from moodlens.train.metrics import format_mean_std, format_value, json_safe, mean_std, metric_names, \
    mmsa_regression_metrics

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training options; YAML files in configs/train/ fill these (unknown keys are refused)."""

    model: str = "hcrl_mfd"
    model_overrides: dict = field(default_factory=dict)  # keys of the model's Config
    model_config: str | None = None       # path of a model YAML (default configs/models/<model>.yaml)
    epochs: int = 30
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 1e-3           # everything except the text encoder
    text_learning_rate: float = 5e-5      # fine-tuned text-encoder layers
    auxiliary_learning_rate: float = 1e-3  # auxiliary_parameters() (DAR's CLUB estimator)
    weight_decay: float = 0.0
    text_weight_decay: float = 0.0
    grad_clip: float = 0.0                # max grad norm (or element, grad_clip_mode: value); 0 = off
    grad_clip_mode: str = "norm"          # norm | value (DLF's code: clip_grad_value_)
    optimizer: str = "adam"               # adam (L2 decay in the gradient) | adamw (decoupled decay)
    no_weight_decay: list = field(default_factory=list)  # parameter-name substrings without decay
    lr_schedule: str = "constant"         # constant | linear | cosine | plateau (train/optim.py)
    warmup_epochs: float = 0.0            # linear ramp from 0 over this many epochs (not with plateau)
    plateau_factor: float = 0.5           # plateau: rate x factor when the validation MAE stalls ...
    plateau_patience: int = 5             # ... for this many epochs (torch ReduceLROnPlateau)
    accumulate_batches: int = 1           # batches whose gradients are summed into one optimizer step
    early_stop: int = 8                   # epochs without validation improvement before stopping (MMSA)
    early_stop_metric: str = "loss"       # validation metric watched by early stop and best-epoch choice:
    #                                       "loss" (MAE, MMSA) or a metric name, e.g. Non0_acc_2 (TeCaFN §4.4)
    seeds: list = field(default_factory=lambda: [1111])
    deterministic: bool = True
    amp: bool = True                      # bf16 autocast, CUDA only
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    num_threads: int = 0                  # torch CPU threads; 0 = torch's default
    half_checkpoint: bool = False         # store weights as float16 (smaller files)
    data_metric: str | None = None        # metric variant override: mosi | mosei | sims
    bucket_by_length: bool = True         # batches of similar length (less padding, same samples)
    cache_frozen_text: bool = True        # run the frozen lower text-encoder layers once per sentence
    init_from: str | None = None          # "default" or a checkpoint path: fine-tune from its weights
    test_missing_rates: list = field(default_factory=list)  # DAR §4.2: test = mean over these erasure rates
    # Part of the weights from another checkpoint of the same model: {"from": path|"default",
    # "prefixes": [state-dict key prefixes]}; e.g. a text path trained on MOSI alone (two-stage training).
    init_weights: dict | None = None
    freeze: list = field(default_factory=list)   # parameter-name prefixes kept fixed (requires_grad off)
    init_seed: int | None = None          # seed of the initial weights (None: each seed's own); a soup needs one
    weight_soup: str = "none"             # none | uniform | greedy: average the seeds' best weights (DIR/soup.pt)
    soup_prefixes: list = field(default_factory=list)  # average only these state-dict prefixes (e.g. the
    #                                       encoder); the rest are the best seed's ([] = every tensor)


def load_train_config(path: str | Path | None = None, model: str | None = None,
                      overrides: dict | None = None) -> TrainConfig:
    """configs/train/<model>.yaml (or `path`) + overrides -> TrainConfig."""
    from moodlens.core.options import configs_root, fill_dataclass, read_yaml

    values: dict[str, Any] = {}
    source = "train config"
    if path is not None:
        values = read_yaml(path)
        source = str(path)
    elif model is not None:
        default = configs_root() / "train" / f"{model}.yaml"
        if default.exists():
            values = read_yaml(default)
            source = str(default)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    fill_dataclass(TrainConfig, values, source)   # the file's own values are checked even where a flag wins
    merged = {**values, **given}
    config = fill_dataclass(TrainConfig, merged, source)
    check_train_config(config, lambda key: _FLAGS.get(key, key) if key in given else f"{source}: key '{key}'")
    if isinstance(config.seeds, int):
        config.seeds = [config.seeds]
    if not config.seeds:
        raise ConfigError(f"{source}: 'seeds' must list at least one seed.")
    if not isinstance(config.model_overrides, dict):
        raise ConfigError(f"{source}: 'model_overrides' must be a mapping of model config keys.")
    if config.test_missing_rates:  # a list or "START:STOP:STEP"
        from moodlens.train.protocols import parse_rates

        config.test_missing_rates = parse_rates(config.test_missing_rates)
    return config


_FLAGS = {"batch_size": "--batch-size", "learning_rate": "--lr", "text_learning_rate": "--text-lr",
          "epochs": "--epochs", "num_threads": "--threads", "seeds": "--seed", "device": "--device"}


SOUP_KINDS = ("none", "uniform", "greedy")


def check_train_config(config: TrainConfig, blame) -> None:
    """Refuse well-typed but impossible values; `blame(key)` names the flag or file:key."""
    for key in ("epochs", "batch_size", "eval_batch_size", "early_stop"):
        value = getattr(config, key)
        if value < 1:
            raise ConfigError(f"{blame(key)} must be a whole number of at least 1, got {value}.")
    for key in ("learning_rate", "text_learning_rate", "auxiliary_learning_rate"):
        value = getattr(config, key)
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{blame(key)} must be a positive learning rate, got {value:g}.")
    for key in ("weight_decay", "text_weight_decay", "grad_clip"):
        value = getattr(config, key)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{blame(key)} must be zero or positive, got {value:g}.")
    if config.num_threads < 0:
        raise ConfigError(f"{blame('num_threads')} must be 0 (torch's default) or positive, got {config.num_threads}.")
    if config.weight_soup not in SOUP_KINDS:
        raise ConfigError(f"{blame('weight_soup')} must be one of {', '.join(SOUP_KINDS)}, got "
                          f"'{config.weight_soup}'.")
    if config.weight_soup != "none":
        if config.init_seed is None:  # averaging models from different random starts averages nothing useful
            raise ConfigError(f"{blame('weight_soup')} '{config.weight_soup}' needs 'init_seed', so that every "
                              f"seed starts from the same weights.")
        if len(config.seeds) < 2:
            raise ConfigError(f"{blame('weight_soup')} '{config.weight_soup}' needs at least two seeds, got "
                              f"{len(config.seeds)}.")
    if config.soup_prefixes and config.weight_soup == "none":
        raise ConfigError(f"{blame('soup_prefixes')} is set but 'weight_soup' is none.")
    from moodlens.train.optim import check_optim_config

    check_optim_config(config, blame)


def check_model_overrides(model: str, overrides: dict, where: str = "--set") -> dict:
    """Check KEY=VALUE model overrides against the model's config class, blaming `where` (the flag),
    not the model YAML they would otherwise be merged into."""
    from moodlens.models import model_module
    from moodlens.core.options import fill_dataclass

    fill_dataclass(model_module(model).Config, overrides, where)
    return overrides


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def read_init_checkpoint(init_from: str, model: str | None = None, model_config_path=None) -> tuple[dict, Path]:
    """The checkpoint to fine-tune from (raw dict and path); refuses a different model name or a
    model YAML, since the model and its config come from the checkpoint."""
    payload, path = read_checkpoint(init_from)
    name = payload["model_name"]
    if model is not None and model != name:
        raise ConfigError(f"--model {model} does not match checkpoint {path}, which holds model '{name}'; "
                          f"leave --model out or name {name}.")
    if model_config_path is not None:
        raise ConfigError(f"A model config file ({model_config_path}) cannot be combined with --init-from: "
                          f"the model config comes from checkpoint {path}.")
    return payload, path


RESUME_KEYS = ("model", "optimizer", "generator", "hook_generator", "torch_rng", "epoch", "best_loss",
               "best_epoch", "bad_epochs")


def load_resume_state(path: Path) -> dict:
    """A seed's last.pt, read with weights_only=True (tensors and plain values only: a planted
    file cannot run code), refused with one sentence when corrupt or missing keys."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt, foreign or code-carrying file
        raise DataError(f"Cannot resume from {path}: it is not a readable moodlens training state "
                        f"({type(err).__name__}); delete it or train into a new --out folder.") from None
    missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise DataError(f"Cannot resume from {path}: it lacks key '{missing[0]}'; delete it or train "
                        f"into a new --out folder.")
    return state


def set_seed(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """DDP when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def _sync_gradients(params: list[torch.nn.Parameter], dist_info: DistInfo) -> None:
    """Average gradients over ranks (the models train through `model.loss`, not `forward`,
    so gradients are all-reduced here rather than by a DDP wrapper)."""
    if dist_info.world_size <= 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= dist_info.world_size


def _broadcast_parameters(model: torch.nn.Module, dist_info: DistInfo) -> None:
    if dist_info.world_size <= 1:
        return
    import torch.distributed as dist

    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


@torch.no_grad()
def predict(model, split: Split, batch_size: int = 128, device: torch.device | str = "cpu",
            amp: bool = False) -> dict[str, np.ndarray]:
    """Scores of every sample in `split`: {"fused", "text", "audio", "vision"} -> (N,) arrays."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    outputs = {key: np.zeros(len(split), dtype=np.float32) for key in ("fused", "text", "audio", "vision")}
    for idx in split.batch_order(batch_size, bucket=True):  # sorted by length: little padding
        batch = trim(split.batch.index(idx))
        with autocast(device, amp):
            out = model(*batch.to(device).tensors())
        for key in outputs:
            outputs[key][idx.numpy()] = getattr(out, key).float().cpu().numpy()
    model.train(was_training)
    return outputs


def evaluate_split(model, split: Split, metric_dataset: str = "mosi", batch_size: int = 128,
                   device="cpu", amp: bool = False) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    preds = predict(model, split, batch_size, device, amp)
    truth = split.labels.numpy()
    metrics = mmsa_regression_metrics(preds["fused"], truth, metric_dataset)
    metrics["loss"] = float(np.mean(np.abs(preds["fused"] - truth)))  # MMSA's validation loss (L1)
    origin = getattr(split, "origin", None)
    if origin is not None:  # a mixture (train/mixture.py): each dataset counts equally, whatever its size
        origin = np.asarray(origin)
        metrics["loss"] = float(np.mean([np.mean(np.abs(preds["fused"][origin == o] - truth[origin == o]))
                                         for o in sorted(set(origin.tolist()))]))
    return metrics, preds


class FrozenTextCache:
    """Runs the frozen lower layers of the text encoder once per distinct sentence and replays
    their output afterwards, so each step only computes the fine-tuned top layers.

    Exact, not an approximation: the frozen layers have no dropout, and the outputs at real tokens
    do not depend on padding (pad keys are masked). Installed for training only."""

    def __init__(self, encoder):
        self.encoder = encoder
        layers = len(encoder.encoder.layer)
        self.n_frozen = layers - encoder.trainable_layers
        if not any(p.requires_grad for p in encoder.parameters()):
            self.n_frozen = layers   # everything frozen (TrainConfig.freeze): cache the whole encoder
        self.store: dict[bytes, torch.Tensor] = {}
        self.active = encoder.trainable_layers >= 0 and self.n_frozen > 0 and not any(
            p.requires_grad for p in encoder.embeddings.parameters())

    def __enter__(self):
        if self.active:
            self.encoder.forward = self.forward  # instance attribute: shadows the class method
        return self

    def __exit__(self, *exc):
        self.encoder.__dict__.pop("forward", None)
        self.store.clear()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        lengths = mask.sum(1)
        contiguous = torch.equal(mask, torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None])
        if not contiguous:  # only prefix masks can be cached by token ids
            return type(enc).forward(enc, ids, mask)
        lengths = lengths.tolist()
        keys = [ids[i, :n].cpu().numpy().tobytes() for i, n in enumerate(lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            with torch.no_grad():
                x = enc.embeddings(ids[missing])
                for layer in enc.encoder.layer[:self.n_frozen]:
                    x = layer(x, mask[missing])
            for j, i in enumerate(missing):
                self.store[keys[i]] = x[j, :lengths[i]].clone()
        x = torch.zeros(ids.shape[0], ids.shape[1], enc.hidden_size, device=ids.device)
        for i, key in enumerate(keys):
            x[i, :lengths[i]] = self.store[key]
        for layer in enc.encoder.layer[self.n_frozen:]:
            x = layer(x, mask)
        return x


# ------------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------------

@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    best_path: Path | None


class Trainer:
    """Train `config.model` on `data`, writing everything under `out_dir`."""

    def __init__(self, config: TrainConfig, data: DatasetSplits, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True, console=None):
        self.config = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.show_progress = show_progress
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.dist = init_distributed(config.device)
        self.device = resolve_device(config.device, self.dist.local_rank)
        self.amp = bool(config.amp and self.device.type == "cuda")
        self.metric_dataset = config.data_metric or data.metric_dataset
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        allowed = ("loss",) + tuple(metric_names(self.metric_dataset))
        if config.early_stop_metric not in allowed:
            raise ConfigError(f"early_stop_metric '{config.early_stop_metric}' is not a validation metric of "
                              f"{self.metric_dataset}; choose one of: {', '.join(allowed)}.")
        for needed in ("train", "valid"):
            if needed not in data.splits:
                raise DataError(f"{data.source} has no '{needed}' split; training needs train and valid "
                                "(and test for the reported metrics).")
        self.init_payload, self.init_path = None, None
        if config.init_from:  # fine-tuning: model name and config come from the checkpoint
            self.init_payload, self.init_path = read_init_checkpoint(config.init_from, config.model,
                                                                     config.model_config)

    # ---- model --------------------------------------------------------------------------------
    def model_overrides(self) -> dict:
        """Model config overrides: the user's, plus the data's audio/vision dims where it has them."""
        overrides = dict(self.config.model_overrides)
        for key, has, dim in (("audio_dim", self.data.has_audio, self.data.audio_dim),
                              ("vision_dim", self.data.has_vision, self.data.vision_dim)):
            if not has:
                continue
            if self.init_payload is not None and int(self.init_payload["model_config"][key]) != dim:
                modality = key.split("_")[0]
                raise DataError(f"{self.data.source} split 'train' key '{modality}' has {dim} features per frame "
                                f"but checkpoint {self.init_path} was trained with {key}="
                                f"{self.init_payload['model_config'][key]}.")
            if key in overrides and int(overrides[key]) != dim:
                modality = key.split("_")[0]
                raise DataError(f"{self.data.source} split 'train' key '{modality}' has {dim} features per frame "
                                f"but the model config sets {key}={overrides[key]}.")
            overrides[key] = dim
        return overrides

    def build_model(self):
        from moodlens.models import build_model

        if self.init_payload is not None:
            model = model_from_payload(self.init_payload, self.init_path, self.model_overrides())
        else:
            model = build_model(self.config.model, self.model_overrides(), self.config.model_config)
        if self.config.init_weights:
            load_partial_weights(model, self.config.init_weights, self.config.model)
        if self.config.freeze:
            freeze_parameters(model, self.config.freeze)
        return model

    def optimizers(self, model) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
        from moodlens.train.optim import build_optimizer, split_decay

        c = self.config
        auxiliary = list(model.auxiliary_parameters())
        aux_ids = {id(p) for p in auxiliary}
        text_ids = {id(p) for p in model.text_encoder.parameters()}
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in aux_ids]
        text_params = [(n, p) for n, p in named if id(p) in text_ids]
        other = [(n, p) for n, p in named if id(p) not in text_ids]
        groups = split_decay(other, {"lr": c.learning_rate, "weight_decay": c.weight_decay, "name": "model"},
                             c.no_weight_decay)
        if text_params:
            groups += split_decay(text_params, {"lr": c.text_learning_rate, "weight_decay": c.text_weight_decay,
                                                "name": "text_encoder"}, c.no_weight_decay)
        main = build_optimizer(c.optimizer, groups)
        aux = torch.optim.Adam(auxiliary, lr=c.auxiliary_learning_rate) if auxiliary else None
        return main, aux

    def trained_modalities(self) -> list[str]:
        """Modalities present in at least one training sample; the scorer feeds the others as absent
        (a branch that never saw data has random weights)."""
        present = self.data.train.batch.present
        trained = {m for i, m in enumerate(MODALITIES) if bool(present[:, i].any())}
        if self.init_payload is not None:  # fine-tuned: what the initial weights learned stays learned
            trained |= set(checkpoint_trained_modalities(self.init_payload))
        return [m for m in MODALITIES if m in trained]

    def featurizer_config(self, model) -> dict:
        if self.data.featurizer_config:  # features made by moodlens: record exactly how
            return dict(self.data.featurizer_config)
        if self.init_payload is not None:  # branches the new data lacks still expect the init's features
            return dict(self.init_payload["featurizer_config"])
        mc = model.config
        return live_featurizer_config(mc.text_encoder, mc.text_max_len,
                                      self.data.audio_dim if self.data.has_audio else mc.audio_dim,
                                      self.data.vision_dim if self.data.has_vision else mc.vision_dim)

    # ---- run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            if self.dist.world_size > 1:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def _run(self) -> dict[str, Any]:
        results = [self.train_seed(seed) for seed in self.config.seeds]
        summary = self.summarize(results)
        if self.dist.main:
            best = min(results, key=lambda r: r.valid["loss"])
            if best.best_path is not None and best.best_path.exists():
                shutil.copyfile(best.best_path, self.out_dir / "best.pt")
            summary["best_seed"] = best.seed
            if self.config.weight_soup != "none":
                summary["soup"] = self.make_soup(results)
                shutil.copyfile(self.out_dir / "soup.pt", self.out_dir / "best.pt")
            (self.out_dir / "metrics.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        return summary

    def make_soup(self, results: list[SeedResult]) -> dict[str, Any]:
        """Average the seeds' best weights (uniform or greedy soup) into DIR/soup.pt; its valid and
        test metrics and ingredients."""
        c = self.config
        order = sorted(results, key=lambda r: _selection_score(r.valid, c.early_stop_metric))
        payloads = {r.seed: read_checkpoint(r.best_path)[0] for r in order}
        model = model_from_payload(payloads[order[0].seed], order[0].best_path).to(self.device)

        def score(seeds: list[int]) -> tuple[float, dict]:
            mean = average_states([payloads[s]["state_dict"] for s in seeds])
            if c.soup_prefixes:  # e.g. the fine-tuned encoder only: heads trained from scratch need not average
                best_seed = payloads[order[0].seed]["state_dict"]
                mean = {k: v if k.startswith(tuple(c.soup_prefixes)) else best_seed[k].float()
                        for k, v in mean.items()}
            model.load_checkpoint_state(mean)
            with (FrozenTextCache(model.text_encoder) if c.cache_frozen_text else contextlib.nullcontext()):
                valid, _ = evaluate_split(model, self.data.valid, self.metric_dataset, c.eval_batch_size,
                                          self.device, self.amp)
            return _selection_score(valid, c.early_stop_metric), valid

        ingredients = [r.seed for r in order]
        if c.weight_soup == "greedy":  # Wortsman et al. 2022, Recipe 1: best first, keep what does not hurt
            ingredients = [order[0].seed]
            best, _ = score(ingredients)
            for r in order[1:]:
                trial, _ = score(ingredients + [r.seed])
                if trial <= best:
                    ingredients, best = ingredients + [r.seed], trial
                log.info(f"soup: seed {r.seed} {'added' if ingredients[-1] == r.seed else 'left out'} "
                         f"(valid {c.early_stop_metric} {abs(trial):.4f})")
        _, valid = score(ingredients)
        test = valid
        if "test" in self.data.splits:
            with (FrozenTextCache(model.text_encoder) if c.cache_frozen_text else contextlib.nullcontext()):
                test, _ = evaluate_split(model, self.data.test, self.metric_dataset, c.eval_batch_size,
                                         self.device, self.amp)
        names = metric_names(self.metric_dataset)
        metrics = {**{k: test[k] for k in names}, "valid": dict(valid), "soup": c.weight_soup,
                   "ingredients": ingredients, "soup_prefixes": list(c.soup_prefixes), "heads_from": order[0].seed, "data": self.data.source, "metric_variant": self.metric_dataset}
        first = payloads[ingredients[0]]
        save_checkpoint(self.out_dir / "soup.pt", model, first["featurizer_config"], json_safe(metrics),
                        extra={"train_config": json_safe(_config_dict(c)),
                               "trained_modalities": self.trained_modalities()},
                        half=c.half_checkpoint)
        log.info(f"soup ({c.weight_soup}) of seeds {ingredients}: test "
                 + ", ".join(f"{k} {format_value(test[k])}" for k in names))
        return {"kind": c.weight_soup, "ingredients": ingredients, "prefixes": list(c.soup_prefixes),
                "rest_from": order[0].seed if c.soup_prefixes else None, "valid": dict(valid),
                "test": {k: test[k] for k in names}}

    def summarize(self, results: list[SeedResult]) -> dict[str, Any]:
        names = metric_names(self.metric_dataset)
        tests = [{k: r.test[k] for k in names} for r in results]
        stats = mean_std(tests)
        summary: dict[str, Any] = {k: stats[k]["mean"] for k in names}
        if all("by_missing_rate" in r.test for r in results):  # DAR's protocol: rows per rate, mean over seeds
            from moodlens.train.protocols import mean_over_seeds

            summary["test_protocol"] = f"mean over missing rates {self.config.test_missing_rates}"
            summary["by_missing_rate"] = mean_over_seeds([r.test["by_missing_rate"] for r in results])
        summary.update({
            "std": {k: stats[k]["std"] for k in names},
            "report": {k: format_mean_std(stats[k]["mean"], stats[k]["std"]) for k in names},
            "metric_variant": self.metric_dataset,
            "model": self.config.model,
            "data": self.data.source,
            "seeds": [r.seed for r in results],
            "per_seed": {str(r.seed): {"test": r.test, "valid": r.valid, "best_epoch": r.best_epoch,
                                       "epochs_run": r.epochs_run} for r in results},
            "test_size": len(self.data.test) if "test" in self.data.splits else 0,
        })
        return summary

    def train_seed(self, seed: int) -> SeedResult:
        c = self.config
        seed_dir = self.out_dir / f"seed_{seed}"
        done_file = seed_dir / "metrics.json"
        if self.resume and done_file.exists():
            try:
                saved = json.loads(done_file.read_text())
                saved = {k: saved[k] for k in ("best_epoch", "epochs_run", "valid", "test")}
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise DataError(f"Cannot resume: {done_file} is not a finished seed's metrics; delete it "
                                f"or train into a new --out folder.") from None
            log.info(f"seed {seed}: already finished, reusing {done_file}")
            return SeedResult(seed, saved["best_epoch"], saved["epochs_run"], _nan(saved["valid"]),
                              _nan(saved["test"]), seed_dir / "best.pt")
        set_seed(seed if c.init_seed is None else c.init_seed, c.deterministic)
        model = self.build_model().to(self.device)
        if c.init_seed is not None and c.init_seed != seed:  # same start, this seed's order and dropout
            set_seed(seed, c.deterministic)
        _broadcast_parameters(model, self.dist)
        optimizer, aux_optimizer = self.optimizers(model)
        schedule = self.schedule(optimizer)
        generator = torch.Generator().manual_seed(seed)
        hook_generator = torch.Generator().manual_seed(seed + 1)
        start_epoch, best_loss, best_epoch, bad_epochs = 1, math.inf, 0, 0
        best_state = None
        last_path = seed_dir / "last.pt"
        if self.resume and last_path.exists():
            state = load_resume_state(last_path)
            try:
                model.load_checkpoint_state(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state.get("schedule"))
                if aux_optimizer is not None and state.get("aux_optimizer"):
                    aux_optimizer.load_state_dict(state["aux_optimizer"])
                generator.set_state(state["generator"])
                hook_generator.set_state(state["hook_generator"])
                torch.set_rng_state(state["torch_rng"])
            except (KeyError, ValueError, RuntimeError, TypeError) as err:
                raise DataError(f"{last_path} does not fit this run's model '{c.model}' "
                                f"({type(err).__name__}); delete it or train into a new --out folder.") from None
            start_epoch, best_loss = state["epoch"] + 1, state["best_loss"]
            best_epoch, bad_epochs = state["best_epoch"], state["bad_epochs"]
            best_state = state.get("best_state")
            log.info(f"seed {seed}: resuming after epoch {state['epoch']} (best valid "
                     f"{c.early_stop_metric} at epoch {best_epoch})")
        if self.dist.main:
            seed_dir.mkdir(parents=True, exist_ok=True)
        log_path = seed_dir / "log.csv"
        epochs_run = start_epoch - 1
        progress = self._progress()
        text_cache = FrozenTextCache(model.text_encoder) if c.cache_frozen_text else contextlib.nullcontext()
        with progress, text_cache:
            epoch_task = progress.add_task(f"seed {seed} epochs", total=c.epochs, completed=start_epoch - 1)
            for epoch in range(start_epoch, c.epochs + 1):
                if bad_epochs >= c.early_stop:
                    break
                t0 = time.perf_counter()
                train_terms = self.train_epoch(model, optimizer, aux_optimizer, generator, hook_generator,
                                               progress, f"epoch {epoch}", schedule)
                valid, _ = evaluate_split(model, self.data.valid, self.metric_dataset, c.eval_batch_size,
                                          self.device, self.amp)
                schedule.after_epoch(valid["loss"])   # plateau: on the validation MAE (DLF/TeCaFN code)
                score = _selection_score(valid, c.early_stop_metric)   # lower is better
                improved = score < best_loss - 1e-6
                if improved:
                    best_loss, best_epoch, bad_epochs = score, epoch, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in model.checkpoint_state().items()}
                else:
                    bad_epochs += 1
                epochs_run = epoch
                seconds = time.perf_counter() - t0
                if self.dist.main:
                    self._log(log_path, epoch, train_terms, valid, optimizer, seconds, improved)
                    torch.save({"model": model.checkpoint_state(), "optimizer": optimizer.state_dict(),
                                "aux_optimizer": aux_optimizer.state_dict() if aux_optimizer else None,
                                "schedule": schedule.state_dict(),
                                "generator": generator.get_state(), "hook_generator": hook_generator.get_state(),
                                "torch_rng": torch.get_rng_state(), "epoch": epoch, "best_loss": best_loss,
                                "best_epoch": best_epoch, "bad_epochs": bad_epochs, "best_state": best_state},
                               last_path.with_suffix(".tmp"))
                    last_path.with_suffix(".tmp").replace(last_path)
                if self.show_progress and self.dist.main and not self.console.is_terminal:
                    # logs and pipes get one line per epoch (the live bars only draw on terminals)
                    log.info(f"seed {seed} epoch {epoch}: train loss {train_terms.get('total', 0):.4f}, "
                             f"valid MAE {valid['loss']:.4f}, Non0_acc_2 {valid.get('Non0_acc_2', 0):.4f}"
                             f"{' (best)' if improved else ''}, {seconds:.0f} s")
                progress.update(epoch_task, advance=1,
                                description=f"seed {seed} epochs (valid MAE {valid['loss']:.3f}, best epoch {best_epoch})")
        if best_state is None:
            raise DataError(f"Training on {self.data.source} ran no epoch (epochs={c.epochs}).")
        model.load_checkpoint_state(best_state)
        with (FrozenTextCache(model.text_encoder) if c.cache_frozen_text else contextlib.nullcontext()):
            valid, _ = evaluate_split(model, self.data.valid, self.metric_dataset, c.eval_batch_size, self.device,
                                      self.amp)
            test = valid
            if "test" in self.data.splits:
                test, _ = evaluate_split(model, self.data.test, self.metric_dataset, c.eval_batch_size,
                                         self.device, self.amp)
                if c.test_missing_rates:  # the reported test metrics become the mean over erasure rates
                    from moodlens.train.protocols import evaluate_missing_rates

                    sweep = evaluate_missing_rates(model, self.data.test, c.test_missing_rates, self.metric_dataset,
                                                   c.eval_batch_size, self.device, self.amp)
                    clean = {k: test[k] for k in metric_names(self.metric_dataset)}
                    test = {**sweep["mean"], "clean": clean, "by_missing_rate": sweep["by_missing_rate"]}
        best_path = seed_dir / "best.pt"
        if self.dist.main:
            metrics = {**{k: test[k] for k in metric_names(self.metric_dataset)},
                       "valid": {k: v for k, v in valid.items()}, "seed": seed, "best_epoch": best_epoch,
                       "data": self.data.source, "metric_variant": self.metric_dataset}
            save_checkpoint(best_path, model, self.featurizer_config(model), json_safe(metrics),
                            extra={"train_config": json_safe(_config_dict(c)),
                                   "trained_modalities": self.trained_modalities()},
                            half=c.half_checkpoint)
            done_file.write_text(json.dumps(json_safe({"seed": seed, "best_epoch": best_epoch,
                                                       "epochs_run": epochs_run, "valid": valid, "test": test}),
                                            indent=2) + "\n")
            log.info(
                f"seed {seed}: best epoch {best_epoch}, test "
                + ", ".join(f"{k} {format_value(test[k])}" for k in metric_names(self.metric_dataset)))
        return SeedResult(seed, best_epoch, epochs_run, valid, test, best_path)

    def schedule(self, optimizer):
        """The learning-rate schedule (train/optim.py), counted in optimizer steps."""
        from moodlens.train.optim import Schedule

        c = self.config
        batches = self.data.train.num_batches(c.batch_size, self.dist.world_size)
        if batches < c.accumulate_batches:
            raise ConfigError(f"accumulate_batches ({c.accumulate_batches}) exceeds the {batches} training "
                              f"batches per epoch of {self.data.source}; no optimizer step would run.")
        return Schedule(optimizer, c, batches // c.accumulate_batches)

    def train_epoch(self, model, optimizer, aux_optimizer, generator, hook_generator, progress,
                    label: str, schedule=None) -> dict[str, float]:
        from moodlens.train.optim import clip_gradients

        c = self.config
        # DashFusion §III-D: contrastive partners drawn over the whole training set (its paper configs);
        # the similarities are refreshed (in eval mode) before the epoch's train/freeze modes are set.
        dataset_sampler = getattr(model, "uses_dataset_sampler", False)
        if dataset_sampler:
            model.refresh_sampler(self.data.train.batches(c.eval_batch_size))
        model.train()
        if c.freeze:  # frozen parts compute as at inference (no dropout): they are fixed features
            for module in model.modules():
                params = list(module.parameters(recurse=True))
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        split = self.data.train
        total = split.num_batches(c.batch_size, self.dist.world_size)
        task = progress.add_task(label, total=total)
        sums: dict[str, float] = {}
        count = 0
        main_params = [p for g in optimizer.param_groups for p in g["params"]]
        aux_params = [p for g in aux_optimizer.param_groups for p in g["params"]] if aux_optimizer else []
        pending = 0   # batches whose gradients wait for the next step (accumulate_batches; a rest is dropped)
        for batch, labels, idx in split.batches(c.batch_size, shuffle=True, generator=generator, rank=self.dist.rank,
                                                world_size=self.dist.world_size, bucket=c.bucket_by_length,
                                                with_index=True):
            if batch.batch_size < 2:  # contrastive terms need pairs; a lone leftover sample is skipped
                progress.advance(task)
                continue
            batch, labels = batch.to(self.device), labels.to(self.device)
            train_batch, extras = model.training_batch(batch, labels, generator=hook_generator)
            if dataset_sampler:
                partners, partner_ok = model.contrastive_partners(idx, generator=hook_generator)
                extras.update(partners=trim(split.batch.index(partners)).to(self.device),  # Split or MixedSplit
                              partner_ok=partner_ok.to(self.device))
            if aux_optimizer is not None:  # DAR's CLUB: estimator step on its own loss first, on the
                aux_optimizer.zero_grad(set_to_none=True)  # batch the main step sees (the erased one)
                with autocast(self.device, self.amp):
                    aux_loss = model.auxiliary_loss(train_batch, labels)
                aux_loss.backward()
                _sync_gradients(aux_params, self.dist)
                aux_optimizer.step()
            if pending == 0:
                optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp):
                terms = model.loss(train_batch, labels, **extras)
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise DataError(f"Training loss became {loss.item()} on {self.data.source} split 'train' "
                                "(check the data for extreme values or lower the learning rate).")
            loss.backward()
            if aux_params:  # the main loss must not move the auxiliary network
                for p in aux_params:
                    p.grad = None
            _sync_gradients(main_params, self.dist)
            clip_gradients(main_params, c.grad_clip_mode, c.grad_clip)  # every backward, as DLF's code
            pending += 1
            if pending == c.accumulate_batches:
                optimizer.step()
                if schedule is not None:
                    schedule.after_step()
                pending = 0
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            count += 1
            progress.update(task, advance=1, description=f"{label} loss {sums['total'] / count:.3f}")
        progress.remove_task(task)
        return {k: v / max(count, 1) for k, v in sums.items()}

    # ---- output -------------------------------------------------------------------------------
    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=self.console,
                        disable=not (self.show_progress and self.dist.main), transient=False)

    def _log(self, path: Path, epoch: int, train_terms: dict, valid: dict, optimizer, seconds: float,
             improved: bool) -> None:
        row = {"epoch": epoch, "train_loss": train_terms.get("total", float("nan"))}
        row.update({f"train_{k}": v for k, v in train_terms.items() if k != "total"})
        row["valid_loss"] = valid["loss"]
        row.update({f"valid_{k}": valid[k] for k in metric_names(self.metric_dataset)})
        for group in optimizer.param_groups:
            row[f"lr_{group.get('name', 'group')}"] = group["lr"]
        row["seconds"] = round(seconds, 2)
        row["improved"] = int(improved)
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


def load_partial_weights(model, spec: dict, model_name: str) -> None:
    """Copy the weights under `spec["prefixes"]` from checkpoint `spec["from"]` (same model) into `model`."""
    if not isinstance(spec, dict) or "from" not in spec or not spec.get("prefixes"):
        raise ConfigError("init_weights needs 'from' (a checkpoint or 'default') and a non-empty 'prefixes' list.")
    payload, path = read_checkpoint(spec["from"])
    if payload["model_name"] != model_name:
        raise ConfigError(f"init_weights: checkpoint {path} holds model '{payload['model_name']}', not '{model_name}'.")
    own = model.state_dict()
    prefixes = tuple(spec["prefixes"])
    chosen = {k: v for k, v in payload["state_dict"].items() if k.startswith(prefixes)}
    if not chosen:
        raise ConfigError(f"init_weights: checkpoint {path} has no weights under {list(prefixes)}.")
    for key, value in chosen.items():
        if key not in own or own[key].shape != value.shape:
            raise ConfigError(f"init_weights: weight '{key}' of checkpoint {path} does not fit this model "
                              f"({tuple(value.shape)} vs {tuple(own[key].shape) if key in own else 'absent'}).")
        own[key].copy_(value.to(own[key].dtype))


def freeze_parameters(model, prefixes: list) -> None:
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            raise ConfigError(f"freeze: no parameter of the model starts with '{prefix}'.")
    for name, param in model.named_parameters():
        if name.startswith(tuple(prefixes)):
            param.requires_grad = False


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of state dicts of one architecture (float32; integer buffers from the first)."""
    first = states[0]
    mean = {}
    for key, value in first.items():
        if value.is_floating_point():
            mean[key] = sum(s[key].float() for s in states) / len(states)
        else:
            mean[key] = value.clone()
    return mean


def _selection_score(valid: dict, metric: str) -> float:
    """The early-stop / best-epoch score, lower is better: the loss and MAE as they are, accuracies,
    F1 and Corr negated."""
    value = float(valid[metric])
    if math.isnan(value):
        return math.inf
    return value if metric in ("loss", "MAE") else -value


def _config_dict(config: TrainConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(config)


def _nan(d: dict) -> dict:
    return {k: (float("nan") if v is None else v) for k, v in d.items()}


def data_options_for(config: TrainConfig, labels: str | None = None) -> DataOptions:
    """Data options that match the model's text encoder and dims."""
    from moodlens.models import load_config, model_module
    from moodlens.core.options import fill_dataclass

    if config.init_from:
        payload, path = read_init_checkpoint(config.init_from, config.model, config.model_config)
        model_config = fill_dataclass(model_module(payload["model_name"]).Config,
                                      {**payload["model_config"], **config.model_overrides}, f"checkpoint {path}")
    else:
        model_config = load_config(config.model, config.model_overrides, config.model_config)
    return DataOptions(text_encoder=model_config.text_encoder, text_max_len=model_config.text_max_len,
                       audio_dim=model_config.audio_dim, vision_dim=model_config.vision_dim,
                       metric_dataset=config.data_metric, labels=labels)


def train(config: TrainConfig, data_spec, out_dir, resume: bool = False, show_progress: bool = True,
          labels: str | None = None, console=None) -> dict[str, Any]:
    """Load the data for `config.model` and train; returns the metrics summary."""
    data = load_dataset(data_spec, data_options_for(config, labels))
    return Trainer(config, data, out_dir, resume=resume, show_progress=show_progress, console=console).run()


__all__ = ["TrainConfig", "Trainer", "evaluate_split", "load_train_config", "predict", "train", "MultimodalBatch"]
