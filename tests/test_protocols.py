"""Paper protocols (train/protocols.py): DAR's missing-rate sweep for every model, multi-seed means,
and the DAR paper configs."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from moodlens.models.batch import MultimodalBatch
from moodlens.core.errors import ConfigError
from moodlens.train.data import Split
from moodlens.train.protocols import erase_split, parse_rates

UNK, CLS, SEP = 100, 101, 102


def hand_made_split() -> Split:
    """Two samples: 10 words between [CLS]/[SEP] (+2 pads on the second), 20 / 10 audio frames of ones,
    8 vision frames of twos; the second sample's vision is absent."""
    ids = torch.zeros(2, 14, dtype=torch.long)
    ids[0, :12] = torch.tensor([CLS] + list(range(2000, 2010)) + [SEP])
    ids[1, :12] = torch.tensor([CLS] + list(range(3000, 3010)) + [SEP])
    text_mask = ids != 0
    audio_mask = torch.zeros(2, 20, dtype=torch.bool)
    audio_mask[0, :20] = True
    audio_mask[1, :10] = True
    audio = torch.ones(2, 20, 3) * audio_mask[..., None]
    vision = torch.full((2, 8, 4), 2.0)
    vision_mask = torch.ones(2, 8, dtype=torch.bool)
    present = torch.tensor([[True, True, True], [True, True, False]])
    batch = MultimodalBatch(ids, text_mask, audio, audio_mask, vision, vision_mask, present)
    return Split("test", batch, torch.tensor([1.0, -1.0]))


def test_parse_rates():
    assert parse_rates("0.0:0.9:0.1") == pytest.approx([i / 10 for i in range(10)])
    assert parse_rates("0,0.3,0.5") == [0.0, 0.3, 0.5]
    for bad in ("0:1", "a:b:c", "0.5:0.9:0", "1.5", ""):
        with pytest.raises(ConfigError):
            parse_rates(bad)


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.9])
def test_erasure_takes_the_rate_of_every_modality_with_unk_and_zero_rules(rate):
    split = hand_made_split()
    b = split.batch
    out = erase_split(split, rate, seed=0, unk_token_id=UNK, special_ids=(0, CLS, SEP)).batch
    # text: round(rate * 10) words of each sentence -> [UNK]; [CLS]/[SEP]/pads untouched
    unk = out.text_ids == UNK
    assert unk.sum(1).tolist() == [round(rate * 10)] * 2
    assert torch.equal(out.text_ids[~unk], b.text_ids[~unk])
    assert not bool(unk[:, 0].any() or unk[:, 11:].any())
    # audio: round(rate * real frames) frames -> exactly zero, the rest untouched, padding untouched
    zero = (out.audio == 0).all(-1) & b.audio_mask
    assert zero.sum(1).tolist() == [round(rate * 20), round(rate * 10)]
    assert torch.equal(out.audio[~zero], b.audio[~zero])
    # vision: the same rate where present; an absent modality is left alone
    zero_v = (out.vision == 0).all(-1)
    assert zero_v.sum(1).tolist() == [round(rate * 8), 0]
    # erased positions stay valid (zeros and [UNK] are visible to the model, as in DAR's paper)
    for name in ("text_mask", "audio_mask", "vision_mask", "present"):
        assert torch.equal(getattr(out, name), getattr(b, name))


def test_erasure_is_seeded():
    split = hand_made_split()
    a = erase_split(split, 0.5, seed=0).batch
    again = erase_split(split, 0.5, seed=0).batch
    other = erase_split(split, 0.5, seed=1).batch
    assert torch.equal(a.audio, again.audio) and torch.equal(a.text_ids, again.text_ids)
    assert not (torch.equal(a.audio, other.audio) and torch.equal(a.text_ids, other.text_ids))
    assert erase_split(split, 0.0) is split


def run_evaluate(capsys, *argv) -> dict:
    from moodlens.train.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    assert evaluate.main(parser.parse_args(["--checkpoint", "default", "--data", "synthetic", "--json", *argv])) == 0
    return json.loads(capsys.readouterr().out)


def test_missing_rate_sweep_json_for_a_non_dar_model(capsys):
    """The shipped default weights (HCRL-MFD): rate 0 equals plain evaluate, JSON has by_missing_rate and mean."""
    from moodlens.train.metrics import MOSI_METRICS

    plain = run_evaluate(capsys)
    sweep = run_evaluate(capsys, "--missing-rates", "0.0:0.9:0.1")
    rows = sweep["by_missing_rate"]
    assert [row["rate"] for row in rows] == pytest.approx([i / 10 for i in range(10)])
    for row in rows:
        assert set(row) == {"rate", *MOSI_METRICS}
    for name in MOSI_METRICS:
        assert rows[0][name] == plain[name], name                     # rate 0: nothing erased
        values = [row[name] for row in rows if row[name] is not None]
        assert sweep["mean"][name] == pytest.approx(sum(values) / len(values)), name
        assert sweep[name] == sweep["mean"][name]                     # the headline numbers are the mean
    assert rows[-1]["MAE"] != rows[0]["MAE"]                          # erasing 90% does change the scores
    assert sweep["model"] == "hcrl_mfd" and sweep["erasure_seed"] == 0


def test_malformed_missing_rates_are_refused_in_one_sentence(capsys):
    from moodlens.train.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    with pytest.raises(ConfigError, match="START:STOP:STEP"):
        evaluate.main(parser.parse_args(["--data", "synthetic", "--missing-rates", "0.0:0.9"]))


def test_trainer_reports_the_missing_rate_mean_over_seeds(tmp_path):
    """test_missing_rates: per-seed test = mean over rates; the summary is mean ± std over seeds and
    keeps the per-rate rows (DAR's Table 1 protocol)."""
    from moodlens.train.data import load_dataset
    from moodlens.train.trainer import Trainer, load_train_config

    data = load_dataset("synthetic", synthetic_sizes=(16, 8, 8))
    config = load_train_config(model="dar", overrides={"epochs": 1, "batch_size": 8, "seeds": [1, 2],
                                                       "test_missing_rates": "0.0,0.5"})
    summary = Trainer(config, data, tmp_path, show_progress=False).run()
    assert [row["rate"] for row in summary["by_missing_rate"]] == [0.0, 0.5]
    per_seed = [summary["per_seed"][s]["test"] for s in ("1", "2")]
    for seed_test in per_seed:
        rows = seed_test["by_missing_rate"]
        assert seed_test["MAE"] == pytest.approx((rows[0]["MAE"] + rows[1]["MAE"]) / 2)
        assert seed_test["clean"]["MAE"] == pytest.approx(rows[0]["MAE"])
    assert summary["MAE"] == pytest.approx((per_seed[0]["MAE"] + per_seed[1]["MAE"]) / 2)
    assert summary["std"]["MAE"] == pytest.approx(abs(per_seed[0]["MAE"] - per_seed[1]["MAE"]) / 2)
    assert summary["by_missing_rate"][1]["MAE"] == pytest.approx(
        (per_seed[0]["by_missing_rate"][1]["MAE"] + per_seed[1]["by_missing_rate"][1]["MAE"]) / 2)


# ---- DAR paper configs -----------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, rate", [("mosi", 0.3), ("mosei", 0.4)])
def test_dar_paper_configs_parse_into_model_and_train_configs(dataset, rate):
    from moodlens.models import load_config
    from moodlens.models.config import configs_root
    from moodlens.core.errors import AssetError
    from moodlens.train.trainer import load_train_config

    train = load_train_config(configs_root() / "train" / f"dar_paper_{dataset}.yaml")
    assert train.model == "dar" and len(train.seeds) == 3
    assert train.test_missing_rates == pytest.approx([i / 10 for i in range(10)])
    model = load_config("dar", train.model_overrides)
    assert model.missing_rate == rate
    assert (model.lambda_decouple, model.alpha, model.beta) == (0.7, 0.1, 0.1)
    assert model.weight_unimodal == 0.0 and model.club_softplus is False
    assert model.text_encoder == "bert-base-uncased" and model.text_encoder_trainable_layers == -1
    # the BERT folder is a path: absent, building the model says so in one sentence
    from moodlens.models import build_model

    with pytest.raises(AssetError, match="path 'bert-base-uncased' does not exist"):
        build_model("dar", train.model_overrides)


def test_missing_rate_sweep_json_to_a_file(capsys, tmp_path):
    """`--json FILE` (the CLI convention): the same document in FILE, the table on stdout."""
    from moodlens.train.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    out = tmp_path / "sweep.json"
    args = parser.parse_args(["--data", "synthetic", "--missing-rates", "0,0.5", "--json", str(out), "--device", "cpu"])
    assert evaluate.main(args) == 0
    saved = json.loads(out.read_text())
    assert [row["rate"] for row in saved["by_missing_rate"]] == [0.0, 0.5] and "mean" in saved
    assert "mean" in capsys.readouterr().out  # the per-rate table, with its mean column
