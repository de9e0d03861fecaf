"""The trainer's optimizer options (train/optim.py) as the papers' authors run them: warm-up / linear /
cosine / plateau schedules, AdamW with name-based decay exemptions, clipping by value, gradient
accumulation; bad values are one sentence; every paper config loads and builds its optimizer."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import torch
from helpers.training import TINY, tiny_config, tiny_data
from moodlens.core.errors import ConfigError
from moodlens.train.optim import Schedule, build_optimizer, clip_gradients, lr_factor
from moodlens.train.trainer import TrainConfig, Trainer, load_train_config

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = sorted((REPO / "configs" / "train").glob("*_paper_*.yaml"))


def _data(train=64):
    return tiny_data(train, 16, 16)


_config = tiny_config


def _one_param_optimizer(lr=1.0):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# ---- the schedules, step by step ----------------------------------------------------------------

def test_linear_warmup_ramps_from_zero_then_decays_to_zero_at_the_last_step():
    # transformers' get_linear_schedule_with_warmup (DashFusion's code): 0 at step 0, 1 at the warm-up's end
    assert lr_factor("linear", 0, 10, 100) == 0.0
    assert lr_factor("linear", 5, 10, 100) == pytest.approx(0.5)
    assert lr_factor("linear", 10, 10, 100) == pytest.approx(1.0)
    assert lr_factor("linear", 55, 10, 100) == pytest.approx(0.5)
    assert lr_factor("linear", 100, 10, 100) == 0.0
    assert lr_factor("linear", 120, 10, 100) == 0.0            # never negative past the end
    assert lr_factor("cosine", 55, 10, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", 32.5, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor("constant", 3, 10, 100) == pytest.approx(0.3)  # warm-up, then flat
    assert lr_factor("constant", 90, 10, 100) == 1.0


def test_schedule_object_follows_the_factor_per_optimizer_step():
    opt = _one_param_optimizer(lr=2e-3)
    schedule = Schedule(opt, TrainConfig(lr_schedule="linear", warmup_epochs=1, epochs=4), steps_per_epoch=5)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(20):
        opt.step()
        schedule.after_step()
        seen.append(opt.param_groups[0]["lr"])
    # warm-up 5 steps (1 epoch), total 20: 0, 0.4, ..., 1 at step 5, then down to 0 at step 20
    assert seen[0] == 0.0 and seen[5] == pytest.approx(2e-3) and seen[20] == 0.0
    assert seen[2] == pytest.approx(2e-3 * 0.4) and seen[12] == pytest.approx(2e-3 * 8 / 15)
    assert all(a <= b for a, b in zip(seen[:5], seen[1:6])) and all(a >= b for a, b in zip(seen[5:], seen[6:]))


def test_constant_without_warmup_installs_no_scheduler():
    opt = _one_param_optimizer(lr=1e-3)
    schedule = Schedule(opt, TrainConfig(), steps_per_epoch=5)
    assert schedule.scheduler is None and schedule.state_dict() is None
    schedule.after_step()
    schedule.after_epoch(1.0)
    assert opt.param_groups[0]["lr"] == 1e-3


def test_plateau_halves_the_rate_after_patience_epochs_without_improvement():
    opt = _one_param_optimizer(lr=1e-4)
    schedule = Schedule(opt, TrainConfig(lr_schedule="plateau", plateau_patience=1, plateau_factor=0.5),
                        steps_per_epoch=5)
    schedule.after_step()                                     # per-step calls do not move a plateau schedule
    for mae, lr in ((1.0, 1e-4), (0.9, 1e-4), (0.95, 1e-4), (0.95, 5e-5), (0.8, 5e-5)):
        schedule.after_epoch(mae)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr), mae


# ---- optimizers, decay groups, clipping ---------------------------------------------------------

def test_adamw_decouples_the_decay_and_adam_adds_it_to_the_gradient():
    def one_step(name):
        p = torch.nn.Parameter(torch.full((1,), 2.0))
        opt = build_optimizer(name, [{"params": [p], "lr": 0.1, "weight_decay": 0.5}])
        p.grad = torch.zeros(1)
        opt.step()
        return float(p.detach())
    assert one_step("adamw") == pytest.approx(2.0 * (1 - 0.1 * 0.5))  # p <- p(1 - lr wd); the zero gradient moves nothing
    assert one_step("adam") == pytest.approx(2.0 - 0.1, abs=1e-6)      # grad = wd p: Adam's first step moves by lr


def test_no_weight_decay_exempts_biases_and_layernorm_weights_by_name(tmp_path):
    config = _config(optimizer="adamw", weight_decay=1e-3, text_weight_decay=1e-3,
                     no_weight_decay=["bias", "LayerNorm.weight"],
                     model_overrides={**TINY, "text_encoder_trainable_layers": -1})
    trainer = Trainer(config, _data(), tmp_path, show_progress=False)
    model = trainer.build_model()
    opt, _ = trainer.optimizers(model)
    assert isinstance(opt, torch.optim.AdamW)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(decay_of) == len(names)                        # every trained parameter in exactly one group
    assert any("LayerNorm.weight" in n for n in names) and any("bias" in n for n in names)
    for n, p in names.items():
        exempt = "bias" in n or "LayerNorm.weight" in n
        assert decay_of[id(p)] == (0.0 if exempt else 1e-3), n
    assert {g["name"] for g in opt.param_groups} == {"model", "model_no_decay", "text_encoder",
                                                     "text_encoder_no_decay"}


def test_default_config_builds_the_same_two_adam_groups_as_before(tmp_path):
    trainer = Trainer(_config(model_overrides={**TINY, "text_encoder_trainable_layers": 1}), _data(), tmp_path,
                      show_progress=False)
    model = trainer.build_model()
    opt, _ = trainer.optimizers(model)
    assert type(opt) is torch.optim.Adam
    assert [g["name"] for g in opt.param_groups] == ["model", "text_encoder"]
    text = [p for p in model.text_encoder.parameters() if p.requires_grad]
    assert [id(p) for p in opt.param_groups[1]["params"]] == [id(p) for p in text]
    assert trainer.schedule(opt).scheduler is None


def test_clip_by_value_and_by_norm():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([5.0, -5.0, 0.1])
    clip_gradients([p], "value", 0.6)
    assert p.grad.tolist() == pytest.approx([0.6, -0.6, 0.1])
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    clip_gradients([p], "norm", 1.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    clip_gradients([p], "norm", 0.0)                          # 0 = off
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)


# ---- in the trainer -------------------------------------------------------------------------------

def test_trainer_logs_the_scheduled_rate_each_epoch(tmp_path):
    # 64 samples / batch 8 = 8 steps per epoch; warm-up 1 epoch of 3: after epochs 1, 2, 3 the factor is 1, 0.5, 0
    Trainer(_config(lr_schedule="linear", warmup_epochs=1), _data(), tmp_path, show_progress=False).run()
    rows = list(csv.DictReader((tmp_path / "seed_7" / "log.csv").open()))
    assert [float(r["lr_model"]) for r in rows] == pytest.approx([1e-2, 5e-3, 0.0])


def test_accumulation_steps_once_per_n_batches_and_drops_the_rest(tmp_path, monkeypatch):
    steps = []
    original = Trainer.optimizers

    def counting(self, model):
        main, aux = original(self, model)
        main.register_step_post_hook(lambda *a: steps.append(1))
        return main, aux

    monkeypatch.setattr(Trainer, "optimizers", counting)
    Trainer(_config(epochs=2, accumulate_batches=3, lr_schedule="linear"), _data(), tmp_path,
            show_progress=False).run()
    assert len(steps) == 4                                    # 8 batches per epoch -> 2 steps (2 batches left over)
    rows = list(csv.DictReader((tmp_path / "seed_7" / "log.csv").open()))
    assert [float(r["lr_model"]) for r in rows] == pytest.approx([5e-3, 0.0])   # total = 2 epochs x 2 steps


def test_accumulating_more_batches_than_an_epoch_has_is_refused(tmp_path):
    trainer = Trainer(_config(accumulate_batches=9), _data(), tmp_path, show_progress=False)
    with pytest.raises(ConfigError, match="accumulate_batches \\(9\\) exceeds the 8 training batches"):
        trainer.run()


def test_resume_restores_the_schedule(tmp_path):
    Trainer(_config(epochs=1, lr_schedule="linear", warmup_epochs=1), _data(), tmp_path, show_progress=False).run()
    state = torch.load(tmp_path / "seed_7" / "last.pt", weights_only=True)
    assert state["schedule"]["last_epoch"] == 8
    (tmp_path / "seed_7" / "metrics.json").unlink()           # unfinished: resume runs epochs 2 and 3
    Trainer(_config(lr_schedule="linear", warmup_epochs=1), _data(), tmp_path, resume=True,
            show_progress=False).run()
    rows = list(csv.DictReader((tmp_path / "seed_7" / "log.csv").open()))
    assert [float(r["lr_model"]) for r in rows] == pytest.approx([1e-2, 5e-3, 0.0])


# ---- config validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("optimizer: sgd", "key 'optimizer' must be one of adam, adamw, got 'sgd'."),
    ("lr_schedule: cosin", "key 'lr_schedule' must be one of constant, linear, cosine, plateau, got 'cosin'."),
    ("grad_clip_mode: max", "key 'grad_clip_mode' must be one of norm, value, got 'max'."),
    ("warmup_epochs: -1", "key 'warmup_epochs' must be zero or a positive number of epochs, got -1."),
    ("lr_schedule: plateau\nwarmup_epochs: 2", "key 'warmup_epochs' must be 0 with lr_schedule 'plateau'"),
    ("plateau_factor: 1.5", "key 'plateau_factor' must lie strictly between 0 and 1, got 1.5."),
    ("plateau_patience: -2", "key 'plateau_patience' must be 0 or more epochs, got -2."),
    ("accumulate_batches: 0", "key 'accumulate_batches' must be a whole number of at least 1, got 0."),
    ("no_weight_decay: bias", "key 'no_weight_decay' must be a list of parameter-name substrings, got 'bias'."),
    ("warmup_epochs: ten", "key 'warmup_epochs' must be a number, got 'ten'."),
])
def test_bad_optimizer_values_are_one_sentence_naming_file_and_key(tmp_path, line, message):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"model: hcrl_mfd\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(cfg)
    text = _flat(str(err.value))
    assert text.startswith(f"{cfg}: key ") and message in text, text
    assert text.count(". ") == 0 or text.endswith(".")


# ---- the paper configs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 1-layer BERT with random weights saved in a folder: the paper configs' bert-base-uncased stand-in."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=6000)).save_pretrained(folder)
    return folder


EXPECTED = {  # file stem -> (optimizer class, schedule kind, clip mode, accumulate, warm-up epochs)
    "dashfusion_paper_mosi": (torch.optim.AdamW, "linear", "norm", 1, 10),
    "dashfusion_paper_sims": (torch.optim.AdamW, "linear", "norm", 1, 10),
    "dashfusion_paper_mosei": (torch.optim.AdamW, "linear", "norm", 1, 1),
    "dlf_paper_mosi": (torch.optim.Adam, "plateau", "value", 10, 0),
    "dlf_paper_mosei": (torch.optim.Adam, "plateau", "value", 10, 0),
    "tecafn_paper_mosi": (torch.optim.Adam, "plateau", "norm", 1, 0),
    "tecafn_paper_mosei": (torch.optim.Adam, "plateau", "norm", 1, 0),
    "hcrl_mfd_paper_mosi": (torch.optim.Adam, "constant", "norm", 1, 0),
    "hcrl_mfd_paper_mosei": (torch.optim.Adam, "constant", "norm", 1, 0),
    "dar_paper_mosi": (torch.optim.Adam, "constant", "norm", 1, 0),
    "dar_paper_mosei": (torch.optim.Adam, "constant", "norm", 1, 0),
}


def test_every_paper_config_is_listed():
    assert {p.stem for p in PAPER_CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_every_paper_config_loads_and_builds_its_optimizer(path, tiny_bert, tmp_path):
    config = load_train_config(path)
    cls, kind, clip_mode, accumulate, warmup = EXPECTED[path.stem]
    assert (config.lr_schedule, config.grad_clip_mode, config.accumulate_batches, config.warmup_epochs) == \
        (kind, clip_mode, accumulate, warmup)
    config.model_overrides = {**config.model_overrides, "text_encoder": str(tiny_bert)}  # no BERT-base here
    data = _data(train=16 * 12)       # at least accumulate_batches batches of the paper's batch size
    trainer = Trainer(config, data, tmp_path, show_progress=False)
    model = trainer.build_model()
    opt, _ = trainer.optimizers(model)
    assert type(opt) is cls
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["model"]["lr"] == config.learning_rate and groups["model"]["weight_decay"] == config.weight_decay
    assert groups["text_encoder"]["lr"] == config.text_learning_rate   # the papers fine-tune BERT
    if config.no_weight_decay:
        assert groups["model_no_decay"]["weight_decay"] == 0.0 and groups["text_encoder_no_decay"]["params"]
    schedule = trainer.schedule(opt)
    assert (schedule.scheduler is None) == (kind == "constant")
    if kind == "linear":   # the warm-up starts at 0
        assert opt.param_groups[0]["lr"] == 0.0
