"""HCRL-MFD's product additions for the default weights (models/hcrl_mfd.py docstring): pooled-statistics
heads for voice and face and the late fusion (2, 1, 1). Off in every paper config; on, an absent modality
never changes any output, a text-only input scores as the paper model's words-only prediction, the pooled
term is masked per head, and the running statistics survive a float16 checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataclasses import replace

import torch

from moodlens.models import build_model
from moodlens.models.hcrl_mfd import MODALITIES, PooledHead

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = {"pooled_heads": ["audio", "vision"], "pooled_std": ["audio"], "pooled_linear": ["audio"],
           "pooled_hidden": 16, "pooled_members": 2, "pooled_share_audio": 0.5, "late_fusion": [2.0, 1.0, 1.0],
           "dropout": 0.0, "pooled_dropout": 0.0}


def product_model(seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model("hcrl_mfd", {**PRODUCT, **extra}).eval()


def scores(model, batch):
    with torch.no_grad():
        return model(*batch.tensors())


def assert_onnx_matches_eager(model, path) -> None:
    """Export `model` with a dynamic batch through torch.export to ONNX at `path`; ONNX Runtime must give
    every output of eager on a batch with mixed modality presence (within 1e-3)."""
    import numpy as np
    import onnxruntime as ort
    from torch.export import Dim

    from moodlens.models.batch import MultimodalBatch, SentimentOutput
    from test_models_contract import OUTPUT_NAMES, mixed_presence

    batch = model.example_inputs(2)
    program = torch.export.export(model, batch.tensors(), dynamic_shapes=batch.dynamic_shapes(Dim("batch")))
    torch.onnx.export(program, batch.tensors(), str(path), dynamo=True, input_names=list(MultimodalBatch.FIELDS),
                      output_names=OUTPUT_NAMES)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    test = mixed_presence(model, 6, seed=3, text_len=11, audio_len=40, vision_len=7)
    eager = scores(model, test)
    feeds = {k: v.numpy() for k, v in zip(MultimodalBatch.FIELDS, test.tensors())}
    for field, got, want in zip(SentimentOutput._fields, session.run(OUTPUT_NAMES, feeds), eager):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-3, err_msg=field)


def test_paper_configs_leave_the_additions_off():
    from moodlens.core.options import read_yaml

    paper = build_model("hcrl_mfd")
    assert len(paper.pooled_heads) == 0 and not paper.config.late_fusion
    for path in sorted((ROOT / "configs" / "train").glob("hcrl_mfd_paper_*.yaml")):
        overrides = read_yaml(path).get("model_overrides") or {}
        assert not {k for k in overrides if k.startswith("pooled") or k == "late_fusion"}, path
    # off, the outputs are the paper's: the fusion MLP and MLP_m on the core features
    batch = paper.example_inputs(4, seed=1)
    paper.eval()
    with torch.no_grad():
        t = paper.clean_inputs(*batch.tensors())
        hidden = paper.encode_unimodal(*t[:6])
        masks = {"text": t[1], "audio": t[3], "vision": t[5]}
        core = {m: paper.core[m](hidden[m], masks[m]) for m in MODALITIES}
        raw = paper.predict(paper.pool(core, masks, t[6]))
    out = scores(paper, batch)
    for key in ("fused", "text", "audio", "vision"):
        assert torch.allclose(getattr(out, key), getattr(raw, key).clamp(-3, 3), atol=1e-6), key


def test_late_fusion_is_the_label_rule_over_present_modalities():
    model = product_model()
    batch = model.example_inputs(5, seed=2)
    present = torch.tensor([[True, True, True], [True, False, True], [True, True, False], [False, False, True],
                            [True, False, False]])
    out = scores(model, batch.replace(present=present))
    t, a, v = out.text, out.audio, out.vision
    expected = torch.stack([(2 * t[0] + a[0] + v[0]) / 4, (2 * t[1] + v[1]) / 3, (2 * t[2] + a[2]) / 3, v[3], t[4]])
    assert torch.allclose(out.fused, expected.clamp(-3, 3), atol=1e-5)


def test_an_absent_modality_never_changes_any_output():
    model = product_model(seed=3)
    batch = model.example_inputs(4, seed=3)
    present = torch.tensor([[True, False, True], [True, True, False], [True, False, False], [False, True, True]])
    batch = batch.replace(present=present)
    reference = scores(model, batch)
    g = torch.Generator().manual_seed(9)
    audio, vision = batch.audio.clone(), batch.vision.clone()
    audio[[0, 2]] = torch.randn(audio[[0, 2]].shape, generator=g) * 50       # rows whose audio is absent
    vision[[1, 2]] = torch.randn(vision[[1, 2]].shape, generator=g) * 50     # rows whose face is absent
    changed = scores(model, batch.replace(audio=audio, vision=vision))
    for key in ("fused", "text", "audio", "vision"):
        assert torch.equal(getattr(reference, key), getattr(changed, key)), key


def test_text_only_input_scores_as_the_paper_model_from_words_alone():
    """Same weights, additions off vs on: with audio and vision absent, fused and text are the paper
    model's fused prediction (its words-only prediction); MOSI text quality is the paper part's."""
    product = product_model(seed=4)
    paper = build_model("hcrl_mfd", {"dropout": 0.0}).eval()
    paper.load_state_dict({k: v for k, v in product.state_dict().items() if not k.startswith("pooled_heads.")})
    batch = product.example_inputs(3, seed=4).replace(present=torch.tensor([[True, False, False]] * 3))
    ours, theirs = scores(product, batch), scores(paper, batch)
    assert torch.allclose(ours.fused, theirs.fused, atol=1e-6)
    assert torch.allclose(ours.text, theirs.fused, atol=1e-6)


def test_audio_output_blends_the_pooled_head_and_the_paper_head():
    product = product_model(seed=5)
    paper = build_model("hcrl_mfd", {"dropout": 0.0}).eval()
    paper.load_state_dict({k: v for k, v in product.state_dict().items() if not k.startswith("pooled_heads.")})
    batch = product.example_inputs(3, seed=5)
    with torch.no_grad():
        t = product.clean_inputs(*batch.tensors())
        pooled = product.pooled_heads["audio"](t[2], t[3], t[6][:, 1])
        vision = product.pooled_heads["vision"](t[4], t[5], t[6][:, 2])
    ours, theirs = scores(product, batch), scores(paper, batch)
    assert torch.allclose(ours.audio, (0.5 * pooled + 0.5 * theirs.audio).clamp(-3, 3), atol=1e-5)
    assert torch.allclose(ours.vision, vision.clamp(-3, 3), atol=1e-5)


def test_pooled_term_is_masked_per_head():
    """Only rows with the modality present and its label known teach a pooled head; NaN is never a 0."""
    model = product_model(seed=6).train()
    batch = model.example_inputs(6, seed=6)
    nan = float("nan")
    labels = torch.full((6, 4), nan)
    labels[:, 1] = torch.linspace(-2, 2, 6)               # text labels only
    terms = model.loss(batch, labels)
    assert terms["pooled"].item() == 0.0
    model.zero_grad()
    terms["total"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.pooled_heads.parameters())
    labels[2, 2] = 1.5                                     # one known audio label
    terms = model.loss(batch, labels)
    model.eval()
    with torch.no_grad():
        t = model.clean_inputs(*batch.tensors())
        expected = (model.pooled_heads["audio"](t[2], t[3], t[6][:, 1])[2] - 1.5) ** 2
    assert terms["pooled"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_running_statistics_use_present_frames_only_and_survive_float16():
    head = PooledHead(3, use_std=True, hidden=0, dropout=0.0).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 3, generator=g) * 1e-3 + 7.0     # small spread: the log-std keeps it in float16
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[0, 3:] = False
    x[0, 3:] = 1e6                                         # padding frames: never counted
    present = torch.tensor([True, True, True, False])
    x[3] = -1e6                                            # absent row: never counted
    head(x, mask, present)
    stats = head.statistics(x[:3], mask[:3])
    assert torch.allclose(head.stat_mean, stats.mean(0), atol=1e-5)
    assert torch.allclose(head.stat_log_std.exp(), stats.std(0, unbiased=False).clamp_min(1e-4), rtol=1e-3)
    half = {k: v.half().float() for k, v in head.state_dict().items()}
    assert all(torch.isfinite(v).all() for v in half.values())
    assert torch.allclose(half["stat_log_std"].exp(), head.stat_log_std.exp(), rtol=1e-2)
    before = head.stat_mean.clone()
    head.eval()(x * 3, mask, present)                      # evaluation never moves them
    assert torch.equal(head.stat_mean, before)


@pytest.mark.parametrize("overrides, words", [
    ({"pooled_heads": ["text"]}, "pooled_heads takes audio and vision"),
    ({"pooled_heads": ["audio"], "pooled_std": ["vision"]}, "subsets of them"),
    ({"late_fusion": [2.0, 1.0]}, "late_fusion needs three weights"),
    ({"pooled_share_audio": 1.5}, "pooled_share_* in [0, 1]"),
])
def test_bad_product_settings_are_refused_in_one_sentence(overrides, words):
    from moodlens.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_model("hcrl_mfd", overrides, load_text_weights=False)
    assert words in " ".join(str(err.value).split())


def test_absent_modalities_with_junk_and_nan_change_nothing():
    """The model contract's check (tests/test_models_contract.py) with the additions on."""
    from test_models_contract import mixed_presence, scramble_absent

    model = product_model(seed=7)
    batch = mixed_presence(model, 6, seed=7)
    reference = scores(model, batch)
    for use_nan in (False, True):
        scrambled = scores(model, scramble_absent(batch, seed=8, use_nan=use_nan))
        for a, b in zip(reference, scrambled):
            assert torch.isfinite(a).all() and torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.export
def test_product_model_exports_to_onnx_and_matches_eager(tmp_path):
    """The live scorer may run the default weights in ONNX Runtime: the additions must export."""
    assert_onnx_matches_eager(product_model(seed=8), tmp_path / "product.onnx")


def test_the_live_scorer_can_fingerprint_the_product_model():
    """The ONNX Runtime backend keys its export cache by the weights' bytes (a 0-d buffer broke it)."""
    from moodlens.realtime.scoring.backends import model_fingerprint

    a, b = product_model(seed=1), product_model(seed=1)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.pooled_heads["vision"].stat_mean += 1.0
    assert model_fingerprint(a) != model_fingerprint(b)


def test_face_mirror_follows_the_live_feature_names():
    """FACE_MIRROR_PAIRS is every Left/Right (right_/left_) pair of VISION_FEATURE_NAMES; yaw, roll and x
    translation change sign; mirroring twice is the identity."""
    from moodlens.models.hcrl_mfd import FACE_MIRROR_NEGATE, FACE_MIRROR_PAIRS, mirror_face
    from moodlens.realtime.perception.features.config import VISION_FEATURE_NAMES as names

    def partner(name):
        for a, b in (("Left", "Right"), ("Right", "Left"), ("right_", "left_"), ("left_", "right_")):
            if a in name:
                return name.replace(a, b)
        return name

    expected = {tuple(sorted((i, names.index(partner(n))))) for i, n in enumerate(names) if partner(n) != n}
    assert set(FACE_MIRROR_PAIRS) == expected and len(expected) == 22
    assert [names[i] for i in FACE_MIRROR_NEGATE] == ["head_yaw_rad", "head_roll_rad", "head_tx_dm"]
    x = torch.randn(3, 5, 64)
    m = mirror_face(x)
    assert torch.equal(mirror_face(m), x)
    smile_l, smile_r = names.index("mouthSmileLeft"), names.index("mouthSmileRight")
    assert torch.equal(m[..., smile_l], x[..., smile_r]) and torch.equal(m[..., 52], -x[..., 52])
    assert torch.equal(m[..., 53], x[..., 53])             # pitch is unchanged by a horizontal flip


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "faces").is_dir(), reason="../shared/data/faces absent")
def test_mirror_matches_the_live_featurizer_on_flipped_real_faces():
    """The live featurizer on a real face and on its horizontally flipped copy: mirror_face of the first
    is closer to the second than the first is, and the pose agrees closely (MediaPipe's blendshapes are
    not exactly mirror-symmetric, so the rest agrees only roughly)."""
    import numpy as np
    from PIL import Image

    from moodlens.models.hcrl_mfd import mirror_face
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    def featurize(image):
        with VisionFeaturizer() as f:
            return [f.process_image(image, k / 15) for k in range(3)][-1].values

    raw, mapped = [], []
    for path in ("muxspace/Goran_Persson_0001.jpg", "muxspace/Rose_Marie_0001.jpg",
                 "ckplus48/happy/S076_006_00000018.png"):
        image = np.asarray(Image.open(ROOT.parent / "shared" / "data" / "faces" / path).convert("RGB"))
        a, b = featurize(image), featurize(np.ascontiguousarray(image[:, ::-1]))
        assert a is not None and b is not None, path
        m = mirror_face(torch.tensor(a)).numpy()
        raw.append(np.abs(a - b))
        mapped.append(np.abs(m - b))
        assert np.abs(m[[52, 54]] - b[[52, 54]]).max() < 0.05, path      # yaw and roll, radians
    assert np.mean(mapped) < 0.8 * np.mean(raw)


def test_mirrored_faces_and_independent_members_in_the_pooled_term():
    model = product_model(seed=7, pooled_mirror_training=["vision"], pooled_independent=True).train()
    batch = model.example_inputs(4, seed=7)
    labels = torch.full((4, 4), float("nan"))
    labels[1, 3] = -2.0                                    # one known vision label
    terms = model.loss(batch, labels)
    from moodlens.models.hcrl_mfd import mirror_face

    head = model.pooled_heads["vision"].eval()
    with torch.no_grad():
        t = model.clean_inputs(*batch.tensors())
        x, mask, on = t[4][1:2], t[5][1:2], t[6][1:2, 2]
        both = torch.cat([head.member_outputs(x, mask, on), head.member_outputs(mirror_face(x), mask, on)], 1)
    assert both.shape == (2, 2)                            # members x (face, mirror)
    assert terms["pooled"].item() == pytest.approx((both + 2.0).pow(2).mean().item(), rel=1e-4)
    joint = product_model(seed=7, pooled_mirror_training=["vision"]).train()
    joint.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = (both.mean(0) + 2.0).pow(2).mean()      # joint: the members' mean fits the label
    assert joint.loss(batch, labels)["pooled"].item() == pytest.approx(expected.item(), rel=1e-3)


def test_with_pooled_mirror_a_face_and_its_mirror_image_score_alike():
    from moodlens.models.hcrl_mfd import mirror_face

    batch = product_model(seed=3).example_inputs(3, seed=3)
    mirrored = replace(batch, vision=mirror_face(batch.vision))
    plain = product_model(seed=3)
    assert not torch.allclose(scores(plain, batch).vision, scores(plain, mirrored).vision, atol=1e-4)
    sym = product_model(seed=3, pooled_mirror=["vision"])
    assert torch.allclose(scores(sym, batch).vision, scores(sym, mirrored).vision, atol=1e-5)


def test_mirror_is_refused_for_the_voice():
    from moodlens.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_model("hcrl_mfd", {"pooled_heads": ["audio"], "pooled_mirror": ["audio"]}, load_text_weights=False)
    assert "pooled_mirror(_training) only vision" in " ".join(str(err.value).split())
