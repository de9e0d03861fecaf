"""configs/data/neutral_statements_v1.tsv (text, label, mode): loads as a text dataset, label 0, and shares nothing with the sentences
the project evaluates neutral words on (RAVDESS, CREMA-D, the demo clip)."""

import sys
import re
from pathlib import Path

import numpy as np
import pytest

from moodlens.train.data import read_text_rows

ROOT = Path(__file__).resolve().parents[1]
STATEMENTS = ROOT / "configs" / "data" / "neutral_statements_v1.tsv"


def _probe():
    sys.path.insert(0, str(ROOT / "scripts"))   # as tests/test_combine_checkpoints.py imports a script
    import probe_neutral_text

    return probe_neutral_text


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def splits():
    return {s: read_text_rows(STATEMENTS, s, only_mode=s) for s in ("train", "valid", "test")}


def test_every_label_is_zero_and_splits_are_disjoint(splits):
    assert [len(splits[s][0]) for s in ("train", "valid", "test")] == [169, 40, 40]
    for texts, labels in splits.values():
        assert np.all(labels == 0)
    seen = [t.lower() for texts, _ in splits.values() for t in texts]
    assert len(seen) == len(set(seen)), "a sentence is in two splits (or twice in one)"


def test_no_evaluation_sentence_or_its_content_words(splits):
    probe = _probe()
    evaluated = {t.lower().rstrip(".") for t in probe.RAVDESS + probe.CREMA_D + probe.DEMO}
    banned = {"door", "jacket", "kids", "dogs"}
    for texts, _ in splits.values():
        for t in texts:
            assert t.lower().rstrip(".") not in evaluated, t
            assert not (_words(t) & banned), t


def test_loads_through_the_trainer_as_text_only(tmp_path):
    from moodlens.train.data import DataOptions, load_dataset

    data = load_dataset(str(STATEMENTS), DataOptions(audio_dim=4, vision_dim=4))
    train = data.split("train")
    assert len(train) == 169 and len(data.split("valid")) == 40 and len(data.split("test")) == 40
    assert bool(train.batch.present[:, 0].all()) and not bool(train.batch.present[:, 1:].any())


@pytest.mark.slow
def test_shipped_weights_read_held_out_neutral_statements_near_zero():
    """The default weights' words-only score on the 40 held-out test statements (never trained on, never used to
    choose): stage 7 reads them mean |s_T| 0.10, 95 % within ±0.5; stage 6 (no neutral statements) 0.52, 50 %."""
    from moodlens.models.checkpoint import load_checkpoint

    probe = _probe()
    model = load_checkpoint("default").model.eval()
    texts, _ = read_text_rows(STATEMENTS, "test", only_mode="test")
    scores = probe.words_only_scores(model, texts)
    assert np.abs(scores).mean() < 0.3
    assert np.mean(np.abs(scores) < 0.5) >= 0.8
    opinions = probe.words_only_scores(model, ["I love this, it is wonderful.", "This is terrible, I hate it."])
    assert opinions[0] > 1.0 and opinions[1] < -1.0   # neutral, not flattened


def test_a_mode_column_with_an_unknown_split_is_one_sentence(tmp_path):
    from moodlens.core.errors import DataError
    from moodlens.train.data import DataOptions, load_dataset

    bad = tmp_path / "statements.tsv"
    bad.write_text("text\tlabel\tmode\nthe bus is late\t0\ttrain\nthe door is open\t0\tholdout\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"statements\.tsv line 3: key 'mode' is 'holdout', expected train, valid or test"):
        load_dataset(str(bad), DataOptions(audio_dim=4, vision_dim=4))
