"""Content remedies of the voice head (issue 10, session 5; scripts/probe_voice_content.py has the study):
the nuisance-attribute projection of the voice statistics (`pooled_nap_audio`, models/hcrl_mfd.py, default off),
the probe's NAP estimate, content augmentation in the probe's fitter, and the folding of several fitted heads
into one checkpoint head (`ship`). All inputs synthesized."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from moodlens.core.errors import ConfigError
from moodlens.models import build_model
from moodlens.models.hcrl_mfd import PooledHead
from test_models_hcrl_mfd_product import PRODUCT, assert_onnx_matches_eager, scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import probe_voice_content as probe

WIDTH = 2 * 384


def _basis(k: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((WIDTH, k)))
    return q.T.astype(np.float32)


def _stats_head(nap: int) -> PooledHead:
    head = PooledHead(384, True, 0, 0.0, 1, nap=nap).eval()
    head.statistics = lambda x, mask: x[:, 0]   # the inputs are the statistics already (as the probes do)
    return head


def test_nap_is_off_by_default_and_a_zero_basis_changes_nothing():
    assert not any("nap" in k for k in PooledHead(384, True, 0, 0.2).state_dict())
    torch.manual_seed(3)
    base = build_model("hcrl_mfd", {**PRODUCT}).eval()
    assert not any("nap" in k for k in base.state_dict())
    torch.manual_seed(3)
    on = build_model("hcrl_mfd", {**PRODUCT, "pooled_nap_audio": 4}).eval()
    assert {k for k in on.state_dict() if "nap" in k} == {f"pooled_heads.audio.nap_{n}" for n in ("mean", "scale", "basis")}
    assert not any("nap" in k for k in on.state_dict() if "vision" in k)
    on.load_state_dict({**on.state_dict(), **base.state_dict()})   # same weights; nap buffers stay at identity
    batch = base.example_inputs(3, seed=3)
    a, b = scores(base, batch), scores(on, batch)
    for key in ("fused", "text", "audio", "vision"):
        assert torch.allclose(getattr(a, key), getattr(b, key), atol=1e-6), key


def test_nap_makes_the_voice_score_blind_to_the_projected_directions_only():
    torch.manual_seed(0)
    head = _stats_head(3)
    rng = np.random.default_rng(1)
    mean, scale = rng.standard_normal(WIDTH).astype(np.float32), rng.uniform(0.5, 2, WIDTH).astype(np.float32)
    basis = _basis(3)
    head.set_nap(mean, scale, basis)
    s = torch.tensor(rng.standard_normal((5, WIDTH)), dtype=torch.float32)
    along = torch.tensor(scale * (2.0 * basis[0] - 3.0 * basis[2]), dtype=torch.float32)   # in the standardised space
    ones = (torch.ones(5, 1, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
    with torch.no_grad():
        y = head(s[:, None], *ones)
        assert torch.allclose(head((s + along)[:, None], *ones), y, atol=1e-4)
        other = torch.tensor(scale * _basis(1, seed=9)[0], dtype=torch.float32) * 5
        other = other - torch.tensor(scale) * ((other / torch.tensor(scale)) @ torch.tensor(basis).T @ torch.tensor(basis))
        assert not torch.allclose(head((s + other)[:, None], *ones), y, atol=1e-2)   # everything else still counts
        # the probe's projection (used by its CV) is the model's
        assert np.allclose(probe.nap_apply(s.numpy(), mean, scale, basis), head.project(s).numpy(), atol=1e-4)


def test_nap_misconfiguration_is_one_sentence():
    with pytest.raises(ConfigError, match="pooled_nap_audio needs an audio pooled head"):
        build_model("hcrl_mfd", {**PRODUCT, "pooled_heads": ["vision"], "pooled_std": [], "pooled_linear": [],
                                 "pooled_nap_audio": 4})
    with pytest.raises(ConfigError) as err:
        PooledHead(384, True, 0, 0.0, nap=4).set_nap(np.zeros(WIDTH), np.ones(WIDTH), _basis(8))
    assert "basis of shape (8, 768) for a head built with nap = 4" in re.sub(r"\s+", " ", str(err.value))


def test_nap_basis_removes_sentence_variation_not_voice_identity():
    rng = np.random.default_rng(2)
    voice_dir, word_dir = np.zeros(WIDTH), np.zeros(WIDTH)
    voice_dir[0], word_dir[1] = 1.0, 1.0
    voices, sentences = 6, 30
    voice = np.repeat(np.arange(voices), sentences)
    # voice identity: large offsets along dim 0; the words: variation along dim 1 that repeats across voices
    words = rng.standard_normal(sentences)
    synth = (20 * rng.standard_normal(voices)[voice, None] * voice_dir + 3 * words[np.tile(np.arange(sentences), voices),
             None] * word_dir + 0.1 * rng.standard_normal((len(voice), WIDTH)))
    train = rng.standard_normal((200, WIDTH))
    mean, scale, basis = probe.nap_basis(train, synth, voice, 1)
    assert basis.shape == (1, WIDTH)
    assert abs(basis[0, 1]) > 0.95 and abs(basis[0, 0]) < 0.1     # the words' direction, not the voices'
    projected = probe.nap_apply(synth, mean, scale, basis)
    assert np.std(projected[:, 1]) < 0.2 and np.std(projected[:, 0]) > 5


def _toy(n=160, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, WIDTH)).astype(np.float32)
    y = np.clip(np.round(2 * x[:, 0] + 0.3 * rng.standard_normal(n)), -3, 3)
    synth = (rng.standard_normal((24, WIDTH)) + 2.0).astype(np.float32)   # "neutral" clips far off the training data
    return x, y, synth, np.repeat(np.arange(3), 8)


def test_content_augmentation_pulls_the_added_clips_towards_neutral():
    x, y, synth, voice = _toy()
    base = probe.fit(x, y, synth, 0, synth=synth, voice=voice, return_head=False)
    aug = probe.fit(x, y, synth, 0, synth=synth, voice=voice, aug=0.2)
    assert np.abs(aug).mean() < 0.7 * np.abs(base).mean()
    # ... while the labelled clips keep their fit (in-sample correlation within 0.1 of the plain head's)
    corr = [np.corrcoef(probe.fit(x, y, x, 0, synth=synth, voice=voice, **kw), y)[0, 1] for kw in ({}, {"aug": 0.2})]
    assert corr[0] > 0.5 and corr[1] > corr[0] - 0.1


def test_shipped_head_is_the_mean_of_the_fitted_heads():
    x, y, synth, voice = _toy(seed=4)
    opt = {"aug": 0.2}
    state = probe.head_state(x, y, opt, synth, voice, members=3)
    head = PooledHead(384, True, 0, 0.2, 3).eval()
    head.load_state_dict(state)
    head.statistics = lambda s, mask: s[:, 0]
    xs = np.random.default_rng(5).standard_normal((7, WIDTH)).astype(np.float32)
    each = [probe.fit(x, y, xs, seed, synth=synth, voice=voice, **opt) for seed in range(3)]
    with torch.no_grad():
        got = head(torch.tensor(xs)[:, None], torch.ones(7, 1, dtype=torch.bool), torch.ones(7, dtype=torch.bool))
    assert np.allclose(got.numpy(), np.mean(each, 0), atol=1e-4)


@pytest.mark.export
def test_nap_model_exports_to_onnx_and_matches_eager(tmp_path):
    torch.manual_seed(14)
    model = build_model("hcrl_mfd", {**PRODUCT, "pooled_nap_audio": 2}).eval()
    rng = np.random.default_rng(14)
    head = model.pooled_heads["audio"]
    head.set_nap(rng.standard_normal(len(head.stat_mean)), rng.uniform(0.5, 2, len(head.stat_mean)),
                 np.linalg.qr(rng.standard_normal((len(head.stat_mean), 2)))[0].T)
    assert_onnx_matches_eager(model, tmp_path / "nap.onnx")
