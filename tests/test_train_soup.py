"""Weight soups: seeds from one start (init_seed), their best weights averaged (uniform or greedy)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.training import tiny_config, tiny_data
from moodlens.core.errors import ConfigError
from moodlens.models.checkpoint import load_checkpoint, read_checkpoint
from moodlens.train.trainer import Trainer, average_states, evaluate_split, load_train_config


def _state(path):
    return read_checkpoint(path)[0]["state_dict"]


@pytest.fixture(scope="module")
def souped(tmp_path_factory):
    out = tmp_path_factory.mktemp("soup")
    data = tiny_data()
    summary = Trainer(tiny_config(seeds=[7, 8, 9], init_seed=7, weight_soup="uniform", epochs=2), data, out,
                      show_progress=False).run()
    return out, data, summary


def test_uniform_soup_is_the_mean_of_the_seeds_best_weights(souped):
    out, data, summary = souped
    seeds = [_state(out / f"seed_{s}" / "best.pt") for s in (7, 8, 9)]
    soup = _state(out / "soup.pt")
    key = next(k for k, v in soup.items() if v.is_floating_point() and v.numel() > 16)
    assert not torch.equal(seeds[0][key], seeds[1][key])          # the seeds did train differently
    mean = (seeds[0][key].float() + seeds[1][key].float() + seeds[2][key].float()) / 3
    assert torch.allclose(soup[key].float(), mean, atol=1e-6)
    assert torch.equal(_state(out / "best.pt")[key], soup[key])   # the soup is the run's model
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["soup"]["kind"] == "uniform" and sorted(metrics["soup"]["ingredients"]) == [7, 8, 9]
    # the soup's reported test metrics are what the saved file scores
    again, _ = evaluate_split(load_checkpoint(out / "soup.pt").model, data.test)
    assert again["MAE"] == pytest.approx(metrics["soup"]["test"]["MAE"], abs=1e-5)
    assert read_checkpoint(out / "soup.pt")[0]["metrics"]["ingredients"] == metrics["soup"]["ingredients"]


def test_init_seed_gives_every_seed_the_same_start(tmp_path):
    data = tiny_data()
    trainer = Trainer(tiny_config(seeds=[7, 8], init_seed=7, epochs=1), data, tmp_path, show_progress=False)
    starts = []
    original = trainer.build_model

    def recording():
        model = original()
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    trainer.build_model = recording
    trainer.run()
    assert len(starts) == 2 and all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])


def test_greedy_soup_never_scores_worse_on_valid_than_its_best_seed(tmp_path):
    data = tiny_data()
    summary = Trainer(tiny_config(seeds=[7, 8, 9], init_seed=7, weight_soup="greedy", epochs=2), data, tmp_path,
                      show_progress=False).run()
    best_seed_loss = min(summary["per_seed"][str(s)]["valid"]["loss"] for s in (7, 8, 9))
    assert summary["soup"]["valid"]["loss"] <= best_seed_loss + 1e-6
    assert 1 <= len(summary["soup"]["ingredients"]) <= 3


def test_prefix_soup_averages_only_those_tensors(tmp_path):
    data = tiny_data()
    summary = Trainer(tiny_config(seeds=[7, 8], init_seed=7, weight_soup="uniform", soup_prefixes=["core.text."],
                                  epochs=2), data, tmp_path, show_progress=False).run()
    best = summary["soup"]["rest_from"]
    other = 8 if best == 7 else 7
    seeds = {s: _state(tmp_path / f"seed_{s}" / "best.pt") for s in (7, 8)}
    soup = _state(tmp_path / "soup.pt")
    inside = [k for k in soup if k.startswith("core.text.") and soup[k].is_floating_point()]
    outside = [k for k in soup if not k.startswith("core.text.") and soup[k].is_floating_point()
               and not torch.equal(seeds[7][k], seeds[8][k])]
    assert inside and outside
    for k in inside:
        assert torch.allclose(soup[k].float(), (seeds[best][k].float() + seeds[other][k].float()) / 2, atol=1e-6)
    for k in outside:
        assert torch.equal(soup[k], seeds[best][k])


def test_average_states_keeps_integer_buffers():
    a = {"w": torch.ones(2), "n": torch.tensor(3)}
    b = {"w": torch.zeros(2), "n": torch.tensor(5)}
    mean = average_states([a, b])
    assert torch.equal(mean["w"], torch.full((2,), 0.5)) and int(mean["n"]) == 3


@pytest.mark.parametrize("text, match", [
    ("weight_soup: greedy\nseeds: [1, 2]\n", "needs 'init_seed'"),
    ("weight_soup: uniform\ninit_seed: 1\nseeds: [1]\n", "at least two seeds"),
    ("weight_soup: stew\n", "must be one of none, uniform, greedy"),
    ("soup_prefixes: [text_encoder.]\n", "'weight_soup' is none"),
])
def test_soup_config_errors_name_the_key(tmp_path, text, match):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: hcrl_mfd\n" + text)
    with pytest.raises(ConfigError, match=match) as err:
        load_train_config(cfg)
    assert str(cfg) in str(err.value)
