"""Unimodal corpora: valence mapping, label files, featurizing audio-only files and still images,
Whisper encoder states, multi-dataset mixtures with per-head labels, and per-head metrics.

Inputs are synthesized (espeak-ng speech, a frame of the bundled demo clip as a still, random
bytes as a broken image); the tests on the real RAVDESS / faces data skip when ../shared is absent."""

from __future__ import annotations

import csv
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from moodlens.core.errors import DataError
from moodlens.train.unimodal_labels import (face_person, load_valence_map, make_faces_labels,
                                            make_ravdess_labels)


# ---- valence mapping ---------------------------------------------------------------------------
def test_valence_map_v1_values_and_ambiguous_categories():
    v = load_valence_map()
    assert v.name == "emotion_valence_v1"
    assert v.valence("happy") == 2.0 and v.valence("happy", "strong") == 2.5
    for negative in ("sad", "angry", "fearful", "disgust", "contempt", "anger"):
        assert v.valence(negative) == -2.0
    assert v.valence("neutral") == 0.0
    assert v.valence("surprised") is None and v.valence("calm") is None   # dropped as ambiguous
    with pytest.raises(KeyError):
        v.valence("bored")


def test_fused_rule_follows_strong_words_and_else_voice_and_face():
    v = load_valence_map()
    # strongly negative words, neutral face, even a happy voice: the words win
    assert v.fused(text=-2.5, audio=2.0, vision=0.0) < 0
    assert v.fused(text=2.5, vision=0.0) > 0
    # neutral words: voice and face decide
    assert v.fused(text=0.0, audio=-2.0, vision=-2.0) < 0
    assert v.fused(text=0.0, audio=2.0, vision=2.0) > 0
    assert v.fused(vision=-2.0) == -2.0
    with pytest.raises(DataError):
        v.fused()


# ---- label files -------------------------------------------------------------------------------
def _ravdess_like(root: Path, tts) -> Path:
    """A RAVDESS-shaped folder: 4 actors x (happy, sad, surprised) + a row with an unknown emotion
    and a row naming a missing file."""
    rows = []
    for actor in (1, 2, 17, 19):
        for code, emotion in ((3, "happy"), (4, "sad"), (8, "surprised")):
            rel = f"Actor_{actor:02d}/03-01-{code:02d}-01-01-01-{actor:02d}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(tts("Kids are talking by the door").read_bytes())
            rows.append([rel, f"{actor:02d}", "M", emotion, "normal", "Kids are talking by the door", "01"])
    rows.append(["Actor_01/03-01-09-01-01-01-01.wav", "01", "M", "bored", "normal", "Kids", "01"])
    rows.append(["Actor_02/missing.wav", "02", "F", "happy", "strong", "Dogs", "01"])
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "actor", "gender", "emotion", "intensity", "statement", "repetition"])
        w.writerows(rows)
    return root


def test_make_ravdess_labels_splits_by_actor_and_names_bad_rows(tmp_path, tts):
    src = _ravdess_like(tmp_path / "rav", tts)
    report = make_ravdess_labels(src, tmp_path / "label.csv")
    assert report.written == 8 and report.dropped == {"surprised": 4}
    assert len(report.refused) == 2
    assert "row 14" in report.refused[0] and "bored" in report.refused[0]
    assert "row 15" in report.refused[1] and "does not exist" in report.refused[1]
    rows = list(csv.DictReader((tmp_path / "label.csv").open()))
    split_of = {r["group"]: r["mode"] for r in rows}
    assert split_of == {"actor01": "train", "actor02": "train", "actor17": "valid", "actor19": "test"}
    happy = next(r for r in rows if r["annotation"].startswith("happy"))
    assert happy["label_T"] == "" and happy["label_V"] == "" and float(happy["label_A"]) == 2.0
    assert float(happy["label"]) == pytest.approx(2.0 / 3.0, abs=1e-5)   # neutral words count double in the fused rule


def test_face_person_groups_images_of_one_person():
    assert face_person("muxspace/George_W_Bush_0012.jpg", "muxspace", "contributor302") == "mux:George_W_Bush"
    assert face_person("ckplus48/anger/S010_004_00000017.png", "ckplus48", "S010") == "ck:S010"
    assert face_person("muxspace/facial-expressions_2868585k.jpg", "muxspace", "c") != \
        face_person("muxspace/facial-expressions_2868586k.jpg", "muxspace", "c")


# ---- featurize: audio-only files and stills ----------------------------------------------------
@pytest.fixture(scope="module")
def demo_face_png(tmp_path_factory) -> Path:
    """A real face: the first frame of the bundled demo clip, written as a PNG still."""
    import av
    from PIL import Image

    from moodlens.core.assets import DEMO_CLIP, resolve_path

    with av.open(str(resolve_path(DEMO_CLIP, None))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    path = tmp_path_factory.mktemp("still") / "face.png"
    Image.fromarray(frame).save(path)
    return path


def _raw_dataset(tmp_path: Path, tts, face_png: Path) -> tuple[Path, Path]:
    raw = tmp_path / "raw"
    (raw / "voices").mkdir(parents=True)
    (raw / "faces").mkdir()
    import soundfile as sf

    audio, sr = sf.read(str(tts("I really love this wonderful film")), dtype="float32")
    sf.write(str(raw / "voices" / "a.flac"), audio, sr)
    (raw / "faces" / "f.png").write_bytes(face_png.read_bytes())
    (raw / "faces" / "broken.png").write_bytes(np.random.default_rng(0).bytes(500))
    labels = tmp_path / "label.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"])
        w.writerow(["voices", "a", "", "0.67", "", "2", "", "happy", "train"])     # text from Whisper
        w.writerow(["faces", "f", "", "2", "", "", "2", "happy", "train"])
        w.writerow(["faces", "broken", "", "-2", "", "", "-2", "sad", "train"])
        w.writerow(["faces", "gone", "", "-2", "", "", "-2", "sad", "test"])
    return raw, labels


def test_featurize_audio_only_and_still_images(tmp_path, tts, demo_face_png):
    from moodlens.train.datasets import FeaturizeOptions, featurize_raw_dataset
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.train.data import load_dataset

    raw, labels = _raw_dataset(tmp_path, tts, demo_face_png)
    config = FeaturizerConfig.for_audio_features("whisper_encoder")
    report = featurize_raw_dataset(raw, labels, tmp_path / "out.pkl", config,
                                   FeaturizeOptions(workers=1, progress=False, still_window_s=2.0))
    reasons = [r[3] for r in report.failed]
    assert len(reasons) == 2
    assert any("line 4 of label.csv" in r and "broken.png cannot be read" in r for r in reasons)
    assert any("line 5 of label.csv" in r and "no media file faces/gone" in r for r in reasons)
    data = pickle.loads((tmp_path / "out.pkl").read_bytes())
    train = data["train"]
    voice, face = train["id"].index("voices/a"), train["id"].index("faces/f")
    assert train["present"][voice].tolist() == [True, True, False]          # Whisper text + audio, no vision
    assert "love" in train["raw_text"][voice].lower()
    assert train["present"][face].tolist() == [False, False, True]          # the held face only
    assert train["vision_lengths"][face] == 30 and train["vision_mask"][face, :30].all()
    assert np.allclose(train["vision"][face, :30], train["vision"][face, 0])  # a still: every frame the same
    assert train["audio"].shape[-1] == 384 and train["audio_lengths"][face] == 0
    duration = float(train["end"][voice])
    assert abs(train["audio_lengths"][voice] - duration * 25) <= 2          # 40 ms frames
    assert math.isnan(train["regression_labels_T"][voice]) and train["regression_labels_A"][voice] == 2.0
    assert math.isnan(train["regression_labels_A"][face]) and train["regression_labels_V"][face] == 2.0
    # the loader turns them into per-head labels, NaN = unknown
    split = load_dataset(tmp_path / "out.pkl").train
    assert split.has_head_labels and split.training_labels().shape == (2, 4)


def test_still_window_matches_tracking_every_frame(demo_face_png):
    """The shortcut (track 3 frames, hold the rest) gives what tracking all 30 frames gives."""
    from PIL import Image

    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.vision import VisionFeaturizer

    image = np.asarray(Image.open(demo_face_png).convert("RGB"))
    with VisionFeaturizer(FeaturizerConfig()) as vision:
        values = [vision.process_image(image, k / 15).values for k in range(30)]
    assert all(v is not None for v in values)
    assert max(float(np.abs(v - values[2]).max()) for v in values[2:]) < 1e-5


def test_featurize_where_every_clip_fails_exits_nonzero(tmp_path, capsys):
    from moodlens.realtime.cli import main

    raw = tmp_path / "raw" / "faces"
    raw.mkdir(parents=True)
    (raw / "bad.jpg").write_bytes(b"not an image")
    labels = tmp_path / "label.csv"
    labels.write_text("video_id,clip_id,label,label_V,mode\nfaces,bad,2,2,train\nfaces,none,1,1,train\n")
    code = main(["featurize", "--raw", str(tmp_path / "raw"), "--labels", str(labels),
                 "--out", str(tmp_path / "x.pkl"), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 1   # exit policy: the run finished, nothing it was asked for could be made
    assert "None of the 2 clips" in err and "Traceback" not in err
    assert not (tmp_path / "x.pkl").exists()


def test_transcription_shares_its_encoder_states(tts):
    import soundfile as sf

    from moodlens.realtime.perception.asr import AsrOptions, Transcriber
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.featurizer import Featurizer

    audio, _ = sf.read(str(tts("This is a terrible and sad story")), dtype="float32")
    transcriber = Transcriber(AsrOptions(warmup=False))
    transcript = transcriber.transcribe(audio, keep_encoder_states=True)
    assert transcript.encoder_states.shape == (math.ceil(len(audio) / 320), 384)
    assert np.array_equal(transcript.encoder_states, transcriber.encoder_states(audio))
    featurizer = Featurizer(FeaturizerConfig.for_audio_features("whisper_encoder"), transcriber=transcriber)
    shared = featurizer.sample(transcript.text, audio, [], audio_states=transcript.encoder_states)
    own = featurizer.sample(transcript.text, audio, [])
    assert shared.audio.shape == (math.ceil(len(audio) / 640), 384)
    assert np.array_equal(shared.audio, own.audio)
    assert transcriber.transcribe(audio).encoder_states is None   # not kept unless asked


# ---- mixtures and per-head labels --------------------------------------------------------------
def _tiny_pickle(path: Path, kind: str, n: int, seed: int) -> None:
    """A featurize-layout pickle of n voice-only or face-only samples with per-head labels."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([-2.0, 0.0, 2.0], n).astype(np.float32)
    nan = np.full(n, np.nan, np.float32)
    voice = kind == "voice"
    split = {
        "id": [f"{kind}{i}" for i in range(n)], "raw_text": ["kids are talking by the door" if voice else ""] * n,
        "text_bert": np.zeros((n, 3, 8), np.int64), "audio": rng.standard_normal((n, 12 if voice else 2, 6)).astype(np.float32),
        "audio_lengths": np.full(n, 12 if voice else 0), "audio_mask": np.full((n, 12 if voice else 2), voice),
        "vision": rng.standard_normal((n, 2 if voice else 5, 4)).astype(np.float32),
        "vision_lengths": np.full(n, 0 if voice else 5), "vision_mask": np.full((n, 2 if voice else 5), not voice),
        "present": np.tile([voice, voice, not voice], (n, 1)),
        "regression_labels": labels / 3 if voice else labels,
        "regression_labels_T": nan, "regression_labels_A": labels if voice else nan,
        "regression_labels_V": nan if voice else labels,
    }
    if voice:
        split["text_bert"][:, 0, :4] = [101, 2336, 2024, 102]
        split["text_bert"][:, 1, :4] = 1
    with path.open("wb") as f:
        pickle.dump({"train": split, "valid": dict(split), "test": dict(split), "meta": None}, f)


def _mixture(tmp_path, *, voices: int, faces: int, compose: str, text_weight: str = "", face_weight: str = "",
             neutral: str = "OK"):
    """A data config mixing a text TSV folder, a voice pickle and a face pickle; returns its path."""
    _tiny_pickle(tmp_path / "voice.pkl", "voice", voices, 0)
    _tiny_pickle(tmp_path / "face.pkl", "face", faces, 1)
    (tmp_path / "text").mkdir()
    for name in ("train", "dev", "test"):
        (tmp_path / "text" / f"{name}.tsv").write_text(f"text\tlabel\nI LOVE IT\t2.5\nI HATE IT\t-2.8\n{neutral}\t0.2\n")
    (tmp_path / "mix.yaml").write_text(
        f"datasets:\n  - {{path: {tmp_path / 'text'}{text_weight}, name: text}}\n"
        f"  - {{path: {tmp_path / 'voice.pkl'}, neutral_text: true, name: voice}}\n"
        f"  - {{path: {tmp_path / 'face.pkl'}{face_weight}, name: face}}\n"
        f"compose: {compose}\n")
    return tmp_path / "mix.yaml"


def test_mixture_gives_per_head_labels_weights_and_composed_samples(tmp_path):
    from moodlens.models.losses import label_for
    from moodlens.train.data import load_dataset

    data = load_dataset(_mixture(tmp_path, voices=10, faces=20, text_weight=", weight: 2.0",
                                 face_weight=", weight: 0.5", compose="{train: 40, valid: 5, test: 5, seed: 3}"))
    train = data.train
    assert len(train) == 3 + 10 + 20 + 40 and data.audio_dim == 6 and data.vision_dim == 4
    labels = train.training_labels()
    assert labels.shape == (73, 4)
    origin = np.array(train.origin)
    # text rows: every head gets the label (text head known); voice rows: text unknown; composed: fused only
    assert torch.isfinite(labels[origin == "text"][:, 1]).all()
    assert torch.isnan(labels[origin == "voice"][:, 1]).all() and torch.isfinite(labels[origin == "voice"][:, 2]).all()
    composed = labels[origin == "composed"]
    assert torch.isfinite(composed[:, 0]).all() and torch.isnan(composed[:, 1:]).all()
    present = train.batch.present[torch.from_numpy(origin == "composed")]
    assert present[:, 0].all() and (present[:, 1] | present[:, 2]).all()
    # weights: text x2, face x0.5 per epoch
    rows = train.epoch_rows(torch.Generator().manual_seed(0)).numpy()
    counts = {name: int(np.isin(rows, np.nonzero(origin == name)[0]).sum()) for name in ("text", "voice", "face")}
    assert counts["text"] == 6 and counts["voice"] == 10 and 4 <= counts["face"] <= 16
    # mini-batches pad per batch and carry (B, 4) labels
    batch, y = next(train.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (batch.batch_size, 4)
    assert torch.isnan(labels[origin == "face"][:, 2]).all()   # a face never teaches the audio head
    values, known = label_for(y, "vision")
    assert known.any() and torch.isfinite(values).all()
    # with_index (dataset-level samplers): the indices name the rows the batch holds
    from moodlens.train.data import trim

    batch, y, idx = next(train.batches(8, shuffle=True, generator=torch.Generator().manual_seed(1), with_index=True))
    again = trim(train.batch.index(idx))
    assert torch.equal(again.present, batch.present) and torch.equal(again.audio, batch.audio)
    assert torch.equal(torch.nan_to_num(y, 99.0), torch.nan_to_num(labels[idx], 99.0))


def test_hcrl_mfd_masks_unknown_head_labels():
    from moodlens.models import build_model

    torch.manual_seed(0)
    model = build_model("hcrl_mfd", {"audio_dim": 6, "vision_dim": 4, "text_encoder_trainable_layers": 0})
    batch = model.example_inputs(batch_size=6, audio_len=8, vision_len=5)
    labels = torch.tensor([[1.0, 1.0, float("nan"), float("nan")]] * 3 + [[-1.0, float("nan"), float("nan"), -2.0]] * 3)
    terms = model.loss(batch, labels)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    # no audio label anywhere: the audio head gets no gradient from the unimodal term
    grads = [p.grad for p in model.unimodal_heads["audio"].parameters()]
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)
    # a (B,) label tensor still works (the papers' setting)
    assert torch.isfinite(model.loss(batch, labels[:, 0])["total"])


def test_by_head_metrics_and_balanced_accuracy():
    from moodlens.train.head_metrics import balanced_acc_2, by_head

    truth = np.array([2.0, -2, -2, -2, -2, 0.0])
    assert balanced_acc_2(np.array([1.0, -1, -1, -1, -1, 3]), truth) == 1.0
    assert balanced_acc_2(np.full(6, -1.0), truth) == 0.5          # always "negative": plain acc 0.8
    assert math.isnan(balanced_acc_2(np.array([1.0]), np.array([2.0])))

    class FakeSplit:
        labels = torch.tensor([2.0, -2.0, 1.0, -1.0])
        batch = type("B", (), {"present": torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]]).bool()})()

        def head_labels(self):
            nan = float("nan")
            return torch.tensor([[2.0, 2.0, nan, nan], [-2.0, -2.0, nan, nan], [1.0, nan, 1.0, nan], [-1.0, nan, -1.0, nan]])

    preds = {"fused": np.array([1.0, -1, 1, 1]), "text": np.array([1.0, -1, 9, 9]),
             "audio": np.array([9.0, 9, 1, -1]), "vision": np.zeros(4)}
    heads = by_head(preds, FakeSplit())
    assert heads["text"]["samples"] == 2 and heads["text"]["balanced_acc_2"] == 1.0
    assert heads["audio"]["samples"] == 2 and heads["audio"]["balanced_acc_2"] == 1.0
    assert heads["vision"] == {"samples": 0}
    assert heads["fused"]["samples"] == 4 and heads["fused"]["balanced_acc_2"] == 0.75


# ---- the real corpora (skip without ../shared) -------------------------------------------------
def test_real_label_files_never_share_a_speaker_or_face(shared_data, tmp_path):
    rav = make_ravdess_labels(shared_data / "ravdess_speech", tmp_path / "rav.csv")
    faces = make_faces_labels(shared_data / "faces", tmp_path / "faces.csv")
    assert rav.written == 968 and not rav.refused and rav.dropped == {"calm": 176, "surprised": 176}
    assert faces.written == 4490 and not faces.refused
    for out in (tmp_path / "rav.csv", tmp_path / "faces.csv"):
        rows = list(csv.DictReader(out.open()))
        splits_of: dict[str, set] = {}
        for r in rows:
            splits_of.setdefault(r["group"], set()).add(r["mode"])
        assert all(len(s) == 1 for s in splits_of.values())
        assert {r["mode"] for r in rows} == {"train", "valid", "test"}


def test_training_on_a_mixture_supervises_each_head_and_records_modalities(tmp_path):
    from moodlens.models.checkpoint import read_checkpoint
    from moodlens.train.data import load_dataset
    from moodlens.train.trainer import TrainConfig, Trainer, set_seed

    data = load_dataset(_mixture(tmp_path, voices=12, faces=12, neutral="IT IS OK",
                                 compose="{train: 16, valid: 4, test: 4}"))
    config = TrainConfig(model="hcrl_mfd", epochs=1, batch_size=8, seeds=[1], num_threads=1,
                         model_overrides={"text_encoder_trainable_layers": 0},
                         freeze=["text_proj."])
    trainer = Trainer(config, data, tmp_path / "run", show_progress=False)
    set_seed(1, True)          # as train_seed does before building: the same initial weights
    model = trainer.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("text_proj.")}
    summary = trainer.run()
    assert summary["test_size"] == len(data.test)
    payload, _ = read_checkpoint(str(tmp_path / "run" / "best.pt"))
    assert payload["trained_modalities"] == ["text", "audio", "vision"]
    assert payload["model_config"]["audio_dim"] == 6 and payload["model_config"]["vision_dim"] == 4
    # frozen parameters did not move
    for key, value in before.items():
        assert torch.equal(payload["state_dict"][key].float(), value.float())
