"""The trainer on small synthetic data: learning, outputs, resume, hooks, and the evaluate command."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers.training import TINY, tiny_config, tiny_data
from moodlens.core.errors import ConfigError, DataError
from moodlens.models.checkpoint import load_checkpoint
from moodlens.realtime.cli import main as cli_main
from moodlens.train.data import DataOptions, make_synthetic
from moodlens.train.trainer import Trainer, evaluate_split, load_train_config

_data = tiny_data
_config = tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    data = _data()
    trainer = Trainer(_config(), data, out, show_progress=False)
    summary = trainer.run()
    return out, data, trainer, summary


def test_training_improves_validation_loss_and_writes_outputs(trained):
    out, data, trainer, summary = trained
    torch.manual_seed(7)
    untrained = trainer.build_model()
    before, _ = evaluate_split(untrained, data.valid)
    rows = list(csv.DictReader((out / "seed_7" / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    best_valid = min(float(r["valid_loss"]) for r in rows)
    assert best_valid < before["loss"] - 0.1, (best_valid, before["loss"])
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7",
                 "MAE", "Corr"):
        assert 0 <= abs(metrics[name]) <= 5 and name in metrics["std"]
    assert metrics["seeds"] == [7] and metrics["best_seed"] == 7
    # best.pt is complete: reloaded, it reproduces the reported test metrics
    loaded = load_checkpoint(out / "best.pt")
    assert loaded.model_name == "hcrl_mfd" and loaded.model_config["audio_dim"] == 6
    assert loaded.featurizer_config["audio_dim"] == 6 and "MAE" in loaded.metrics
    assert loaded.extra["trained_modalities"] == ["text", "audio", "vision"]
    again, _ = evaluate_split(loaded.model, data.test)
    assert again["MAE"] == pytest.approx(metrics["MAE"], abs=1e-5)


def test_resume_continues_where_it_stopped(trained, tmp_path):
    out, data, _, summary = trained
    Trainer(_config(epochs=1), data, tmp_path, show_progress=False).run()
    (tmp_path / "seed_7" / "metrics.json").unlink()  # as if the run had been stopped after epoch 1
    Trainer(_config(epochs=2), data, tmp_path, resume=True, show_progress=False).run()
    rows = list(csv.DictReader((tmp_path / "seed_7" / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    reference = list(csv.DictReader((out / "seed_7" / "log.csv").open()))
    # deterministic: the resumed run reproduces the uninterrupted one epoch for epoch
    for got, want in zip(rows, reference):
        assert float(got["valid_loss"]) == pytest.approx(float(want["valid_loss"]), abs=1e-4)


def test_auxiliary_parameters_get_their_own_optimizer(tmp_path, monkeypatch):
    """A stand-in for DAR's CLUB: an extra parameter with its own loss, stepped alternately."""
    data = _data()
    trainer = Trainer(_config(epochs=1, seeds=[3]), data, tmp_path, show_progress=False)
    model = trainer.build_model()
    critic = torch.nn.Parameter(torch.zeros(1))
    model.register_parameter("critic", critic)
    model.auxiliary_parameters = lambda: [critic]
    model.auxiliary_loss = lambda batch, labels: (critic - 1.0).pow(2).sum()
    calls = {"training_batch": 0}
    original = model.training_batch

    def counting(batch, labels, generator=None):
        calls["training_batch"] += 1
        assert generator is not None
        return original(batch, labels, generator)

    model.training_batch = counting
    main, aux = trainer.optimizers(model)
    assert all(p is not critic for g in main.param_groups for p in g["params"])
    assert aux is not None and aux.param_groups[0]["params"][0] is critic
    monkeypatch.setattr(trainer, "build_model", lambda: model)
    trainer.run()
    assert 0.0 < float(critic.detach()) < 1.0          # moved only by its own loss, towards 1
    assert calls["training_batch"] == 8       # 64 samples / 8 per batch


def test_train_config_files_and_errors(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: hcrl_mfd\nepochs: 4\nseeds: [1, 2]\n")
    config = load_train_config(cfg, overrides={"batch_size": 8})
    assert (config.epochs, config.seeds, config.batch_size) == (4, [1, 2], 8)
    cfg.write_text("epocs: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'epocs'"):
        load_train_config(cfg)
    only_test = make_synthetic(DataOptions(synthetic_sizes=(4, 4, 4)))
    del only_test.splits["valid"]
    with pytest.raises(DataError, match="no 'valid' split"):
        Trainer(_config(), only_test, tmp_path)
    text_only = _data()
    text_only.train.batch.present[:, 1:] = False
    assert Trainer(_config(), text_only, tmp_path).trained_modalities() == ["text"]
    with pytest.raises(DataError, match="key 'audio' has 6 features per frame"):
        Trainer(_config(model_overrides={**TINY, "audio_dim": 7}), _data(), tmp_path).model_overrides()


def test_cli_evaluate_json_and_train_errors(trained, capsys):
    out, _, _, summary = trained
    code = cli_main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", "synthetic", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["model"] == "hcrl_mfd" and result["samples"] == 128
    assert set(result) >= {"Non0_acc_2", "MAE", "Corr", "Mult_acc_7"}
    assert cli_main(["train", "--data", str(out / "nowhere.tsv"), "--out", str(out / "x")]) == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())
    assert cli_main(["evaluate", "--checkpoint", str(out / "seed_7" / "log.csv"), "--data", "synthetic"]) == 2
    assert "cannot be read" in " ".join(capsys.readouterr().err.split())


def test_several_seeds_report_mean_and_std(tmp_path):
    summary = Trainer(_config(epochs=1, seeds=[1, 2]), _data(), tmp_path, show_progress=False).run()
    per_seed = [summary["per_seed"][s]["test"]["MAE"] for s in ("1", "2")]
    assert per_seed[0] != per_seed[1]
    assert summary["MAE"] == pytest.approx(sum(per_seed) / 2)
    assert summary["std"]["MAE"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
    assert " ± " in summary["report"]["MAE"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    best = min((1, 2), key=lambda s: summary["per_seed"][str(s)]["valid"]["loss"])
    assert saved["best_seed"] == best and (tmp_path / "seed_1" / "best.pt").exists()


@pytest.mark.slow
def test_fused_model_beats_every_unimodal_head_on_synthetic(tmp_path):
    """The synthetic label needs all three modalities: HCRL-MFD's fused output must beat each of its
    own unimodal heads (trained jointly on the same data)."""
    import numpy as np
    from moodlens.train.trainer import predict

    data = make_synthetic(DataOptions(synthetic_sizes=(384, 64, 128), audio_dim=6, vision_dim=5,
                                      synthetic_text_len=8, synthetic_audio_len=8, synthetic_vision_len=6))
    Trainer(_config(epochs=12, batch_size=32, learning_rate=3e-3, early_stop=12), data, tmp_path,
            show_progress=False).run()
    preds = predict(load_checkpoint(tmp_path / "best.pt").model, data.test)
    mae = {k: float(np.mean(np.abs(v - data.test.labels.numpy()))) for k, v in preds.items()}
    assert all(mae["fused"] < mae[m] - 0.1 for m in ("text", "audio", "vision")), mae


def test_restamp_featurizer_config_keeps_weights(trained, tmp_path):
    import shutil

    from moodlens.models.checkpoint import restamp_featurizer_config

    out, data, _, _ = trained
    copy = tmp_path / "copy.pt"
    shutil.copyfile(out / "best.pt", copy)
    before = load_checkpoint(copy)
    restamp_featurizer_config(copy, {**before.featurizer_config, "note": "restamped"})
    after = load_checkpoint(copy)
    assert after.featurizer_config["note"] == "restamped" and after.metrics == before.metrics
    for (k, a), (_, b) in zip(before.model.state_dict().items(), after.model.state_dict().items()):
        assert torch.equal(a, b), k


def _log_rows(folder):
    return list(csv.DictReader((folder / "seed_7" / "log.csv").open()))


def test_fine_tuning_starts_from_the_checkpoint_weights(trained, tmp_path):
    """--init-from: with learning rates 0 the first epoch's validation loss is the checkpoint's own,
    and the model config comes from the checkpoint (no TINY overrides given here)."""
    out, data, trainer, _ = trained
    init = load_checkpoint(out / "best.pt")
    torch.manual_seed(7)
    fresh, _ = evaluate_split(trainer.build_model(), data.valid)
    config = _config(model_overrides={}, init_from=str(out / "best.pt"), epochs=1, learning_rate=0.0,
                     text_learning_rate=0.0)
    Trainer(config, data, tmp_path, show_progress=False).run()
    first = float(_log_rows(tmp_path)[0]["valid_loss"])
    assert first == pytest.approx(init.metrics["valid"]["loss"], abs=1e-5)
    assert abs(first - fresh["loss"]) > 0.05        # a freshly built model would not give it
    tuned = load_checkpoint(tmp_path / "best.pt")
    assert tuned.model_config == init.model_config
    assert tuned.extra["train_config"]["init_from"] == str(out / "best.pt")


def test_trained_modalities_text_only_tsv_vs_trimodal_and_union_when_fine_tuning(trained, tmp_path, capsys):
    """A text-only TSV run records ['text']; the synthetic trimodal run (fixture) recorded all three;
    fine-tuning the trimodal checkpoint on the TSV keeps all three and the checkpoint's featurizer
    config (the TSV has none of its own); a --model naming another model is refused in one sentence."""
    out, _, _, _ = trained
    folder = tmp_path / "tsv"
    folder.mkdir()
    words = ["good", "bad", "great", "awful", "fine", "poor"]
    for split, n in (("train", 16), ("dev", 8), ("test", 8)):
        lines = [f"this film is {words[i % 6]} number {i}\t{(-1) ** i * (i % 3):.1f}" for i in range(n)]
        (folder / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(lines) + "\n")
    common = ["--data", str(folder), "--epochs", "1", "--batch-size", "8", "--threads", "1", "--quiet", "--json"]
    tiny = [f"--set={k}={v}" for k, v in TINY.items()]
    assert cli_main(["train", "--model", "hcrl_mfd", *tiny, *common, "--out", str(tmp_path / "text")]) == 0
    text_only = load_checkpoint(tmp_path / "text" / "best.pt")
    assert text_only.extra["trained_modalities"] == ["text"]
    assert load_checkpoint(out / "best.pt").extra["trained_modalities"] == ["text", "audio", "vision"]

    assert cli_main(["train", "--init-from", str(out / "best.pt"), *common, "--out", str(tmp_path / "ft")]) == 0
    tuned = load_checkpoint(tmp_path / "ft" / "best.pt")
    assert tuned.extra["trained_modalities"] == ["text", "audio", "vision"]
    assert tuned.featurizer_config == load_checkpoint(out / "best.pt").featurizer_config
    capsys.readouterr()

    code = cli_main(["train", "--model", "dlf", "--init-from", str(out / "best.pt"), *common,
                     "--out", str(tmp_path / "bad")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--model dlf does not match checkpoint" in err and "holds model 'hcrl_mfd'" in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_fine_tuning_on_data_with_other_dims_is_refused(trained, tmp_path):
    out, _, _, _ = trained
    other = make_synthetic(DataOptions(synthetic_sizes=(16, 8, 8), audio_dim=7, vision_dim=5,
                                       synthetic_text_len=8, synthetic_audio_len=8, synthetic_vision_len=6))
    with pytest.raises(DataError, match="has 7 features per frame but checkpoint .* audio_dim=6"):
        Trainer(_config(init_from=str(out / "best.pt")), other, tmp_path).build_model()
