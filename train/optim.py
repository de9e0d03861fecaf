"""Optimizer, learning-rate schedule and gradient clipping of the trainer, as the five papers' authors run them.

The defaults (Adam with coupled L2 decay, a constant rate, clipping by norm, one batch per step) are the
trainer's behaviour before these options existed; the paper configs choose per model (docs/fidelity.md,
"Optimizer and schedule"):

- `optimizer: adamw` is torch's AdamW (decoupled decay, Loshchilov & Hutter); `adam` is torch's Adam,
  whose `weight_decay` is an L2 term added to the gradient (what the TeCaFN code runs).
- `no_weight_decay`: parameter-name substrings exempt from decay (DashFusion's code: "bias", "LayerNorm.weight").
- `lr_schedule`: `linear` / `cosine` ramp the rate from 0 over `warmup_epochs` and decay it to 0 at the
  last step (transformers' get_linear/cosine_schedule_with_warmup, which DashFusion's code calls; counted
  in optimizer steps); `constant` keeps it (after the same warm-up, if any); `plateau` halves it (by
  `plateau_factor`) when the validation MAE has not improved for `plateau_patience` epochs
  (torch's ReduceLROnPlateau, as the DLF and TeCaFN code step it on their validation L1 loss).
- `grad_clip_mode: value` clips each gradient element (DLF's clip_grad_value_), `norm` the global norm.
- `accumulate_batches`: one optimizer step per that many batches, gradients summed (DLF's `update_epochs`).
"""

from __future__ import annotations

import logging
import math

import torch

from moodlens.core.errors import ConfigError

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "linear", "cosine", "plateau")
GRAD_CLIP_MODES = ("norm", "value")


def check_optim_config(config, blame) -> None:
    """Refuse unknown names and impossible values of the optimizer/schedule keys; `blame(key)` names the
    flag or file:key."""
    for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES),
                         ("grad_clip_mode", GRAD_CLIP_MODES)):
        value = getattr(config, key)
        if value not in allowed:
            raise ConfigError(f"{blame(key)} must be one of {', '.join(allowed)}, got {value!r}.")
    if not math.isfinite(config.warmup_epochs) or config.warmup_epochs < 0:
        raise ConfigError(f"{blame('warmup_epochs')} must be zero or a positive number of epochs, "
                          f"got {config.warmup_epochs:g}.")
    if config.lr_schedule == "plateau" and config.warmup_epochs > 0:
        raise ConfigError(f"{blame('warmup_epochs')} must be 0 with lr_schedule 'plateau' (a warm-up is "
                          f"only defined for constant, linear and cosine), got {config.warmup_epochs:g}.")
    if not (0 < config.plateau_factor < 1):
        raise ConfigError(f"{blame('plateau_factor')} must lie strictly between 0 and 1, got {config.plateau_factor:g}.")
    if config.plateau_patience < 0:
        raise ConfigError(f"{blame('plateau_patience')} must be 0 or more epochs, got {config.plateau_patience}.")
    if config.accumulate_batches < 1:
        raise ConfigError(f"{blame('accumulate_batches')} must be a whole number of at least 1, "
                          f"got {config.accumulate_batches}.")
    names = config.no_weight_decay
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{blame('no_weight_decay')} must be a list of parameter-name substrings, got {names!r}.")


def split_decay(named: list[tuple[str, torch.nn.Parameter]], group: dict, no_decay: list[str]) -> list[dict]:
    """`group` (lr, weight_decay, name) over `named`, split into the decayed parameters and those whose name
    contains one of `no_decay` (weight_decay 0); one group, as before, when `no_decay` is empty."""
    if not no_decay:
        return [{**group, "params": [p for _, p in named]}]
    exempt = [p for n, p in named if any(s in n for s in no_decay)]
    decayed = [p for n, p in named if not any(s in n for s in no_decay)]
    groups = [{**group, "params": decayed}]
    if exempt:
        groups.append({**group, "params": exempt, "weight_decay": 0.0, "name": f"{group['name']}_no_decay"})
    return groups


def build_optimizer(name: str, groups: list[dict]) -> torch.optim.Optimizer:
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(groups)


def lr_factor(kind: str, step: int, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of the base rate after `step` optimizer steps (transformers' schedules: the first
    step of a warm-up runs at 0)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))  # cosine


class Schedule:
    """The learning-rate schedule of one run: `after_step()` per optimizer step, `after_epoch(valid_mae)`
    per epoch. No scheduler at all for a constant rate without warm-up (the old behaviour, bit for bit)."""

    def __init__(self, optimizer: torch.optim.Optimizer, config, steps_per_epoch: int):
        self.kind = config.lr_schedule
        self.scheduler = None
        if self.kind == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience)
        elif self.kind != "constant" or config.warmup_epochs > 0:
            kind = self.kind
            warmup = int(config.warmup_epochs * steps_per_epoch)   # DashFusion: int(num_warm_up * len(loader))
            total = config.epochs * steps_per_epoch
            if warmup >= total:
                log.warning(f"warmup_epochs {config.warmup_epochs:g} covers all {config.epochs} epochs: the "
                            f"learning rate never reaches its full value")

            def factor(step: int) -> float:  # a plain function: LambdaLR's state_dict leaves it out
                return lr_factor(kind, step, warmup, total)

            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def after_step(self) -> None:
        if self.scheduler is not None and self.kind != "plateau":
            self.scheduler.step()

    def after_epoch(self, valid_mae: float) -> None:
        if self.kind == "plateau":
            self.scheduler.step(valid_mae)

    def state_dict(self) -> dict | None:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


def clip_gradients(params: list[torch.nn.Parameter], mode: str, limit: float) -> None:
    if limit <= 0:
        return
    if mode == "value":
        torch.nn.utils.clip_grad_value_(params, limit)
    else:
        torch.nn.utils.clip_grad_norm_(params, limit)
