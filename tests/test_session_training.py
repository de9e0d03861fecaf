"""Annotate and train: labels in the exported csv turn recorded sessions into training data.

Bad labels are refused with one sentence naming the row; labelled windows are featurized from the
recorded media with the session's featurizer config; several sessions combine; and the round trip
record (real pipeline over espeak-ng speech) -> export csv -> label -> `moodlens train` works.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.cli import run_cli
from helpers.media import demo_face_frames
from helpers.sessions import record_synthetic

SR = 16_000


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    record_synthetic(root / "monday", seconds=3.1, video="none")
    record_synthetic(root / "tuesday", seconds=2.1, video="none")
    return root


def labelled_csv(path: Path, sessions: list[Path], label_of=lambda i, row: f"{(i % 7) - 3}",
                 edit=None) -> Path:
    """Export each session's csv (as a user would) and fill the label column."""
    rows = []
    for folder in sessions:
        out = path.parent / f"{folder.name}.csv"
        code, err = run_cli("export", str(folder), "--format", "csv", "--out", str(out))
        assert code == 0, err
        with out.open(newline="") as f:
            rows += list(csv.DictReader(f))
    for i, row in enumerate(rows):
        row["label"] = label_of(i, row)
    if edit:
        edit(rows)
    with path.open("w", newline="") as f:
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _set(index, key, value):
    def edit(rows):
        rows[index][key] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set(2, "label", "very happy"), "row 4: the label 'very happy' is not a number"),
    (_set(0, "label", "3.5"), "row 2: the label 3.5 is outside -3 to +3"),
    (_set(5, "label", "nan"), "row 7: the label nan is outside -3 to +3"),
    (_set(3, "id", "41"), "row 5: session monday has no window with id 41"),
    (_set(1, "id", "1.5"), "row 3: the window id '1.5' is not a whole number"),
    (_set(7, "session", "friday"), "row 9: session 'friday' is not among the given sessions"),
    (_set(8, "session", ""), "row 10 has no session name, and 2 sessions were given"),
    (lambda rows: rows.__setitem__(4, dict(rows[0])), "row 6 labels window 0 of session monday again "
                                                      "(first labelled in row 2)"),
    (_set(6, "split", "holdout"), "row 8: the split 'holdout' is not train, valid or test"),
])
def test_bad_labels_name_the_row(two_sessions, tmp_path, edit, message):
    from moodlens.core.errors import DataError
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.train.sessions import read_labels

    folders = [two_sessions / "monday", two_sessions / "tuesday"]
    labels = labelled_csv(tmp_path / "labels.csv", folders, edit=edit)
    with pytest.raises(DataError) as err:
        read_labels(labels, [open_session(f) for f in folders])
    text = str(err.value)
    assert message in text and str(labels) in text and "\n" not in text


def test_labels_saved_by_a_spreadsheet_with_semicolons(two_sessions, tmp_path):
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.train.sessions import read_labels

    labels = labelled_csv(tmp_path / "labels.csv", [two_sessions / "monday"], label_of=lambda i, row: f"{i - 2}")
    rows = list(csv.reader(labels.read_text().splitlines()))
    labels.write_text("\ufeff" + "\r\n".join(";".join(r) for r in rows) + "\r\n", encoding="utf-8")
    items = read_labels(labels, [open_session(two_sessions / "monday")])
    assert [it.label for it in items] == [-2, -1, 0, 1, 2, 3] and [it.window.id for it in items] == list(range(6))


def test_bad_labels_through_the_train_command(two_sessions, tmp_path):
    labels = labelled_csv(tmp_path / "labels.csv", [two_sessions / "monday", two_sessions / "tuesday"],
                          edit=_set(2, "label", "+7"))
    code, err = run_cli("train", "--model", "hcrl_mfd", "--data", str(two_sessions), "--labels", str(labels),
                        "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "row 4: the label +7 is outside -3 to +3" in " ".join(err.split())
    assert "Traceback" not in err
    empty = labelled_csv(tmp_path / "empty.csv", [two_sessions / "monday"], label_of=lambda i, row: "")
    code, err = run_cli("train", "--model", "hcrl_mfd", "--data", str(two_sessions / "monday"),
                        "--labels", str(empty), "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "labels no window" in " ".join(err.split())


def test_session_dataset_features_match_the_recording(two_sessions, tmp_path):
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.perception.features.featurizer import Featurizer
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.train.data import load_dataset

    # Unlabelled rows (empty label) are skipped; the split column pins rows to a split.
    def label_of(i, row):
        return "" if i == 3 else f"{(i % 5) - 2}.5"

    def edit(rows):
        rows[0]["split"], rows[1]["split"] = "test", "valid"
        for row in rows[2:]:
            row["split"] = ""

    labels = labelled_csv(tmp_path / "labels.csv", [two_sessions / "monday", two_sessions / "tuesday"],
                          label_of=label_of, edit=edit)
    data = load_dataset(str(two_sessions), labels=str(labels))      # train/data.py's one entry point
    assert data.kind == "sessions" and data.has_audio and not data.has_vision
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sum(sizes.values()) == 6 + 4 - 1
    assert "monday:0" in data.test.ids and "monday:1" in data.valid.ids
    all_ids = [i for split in data.splits.values() for i in split.ids]
    assert "monday:3" not in all_ids and any(i.startswith("tuesday:") for i in all_ids)

    # Each sample holds exactly what featurizing the recorded window directly gives.
    session = open_session(two_sessions / "tuesday")
    featurizer = Featurizer(FeaturizerConfig.from_dict(session.featurizer_config) if session.featurizer_config
                            else FeaturizerConfig())
    for split in data.splits.values():
        for row, sample_id in enumerate(split.ids):
            if not sample_id.startswith("tuesday:"):
                continue
            window = next(w for w in session.windows if f"tuesday:{w.id}" == sample_id)
            expected = featurizer.sample(window.text, session.read_audio(window.start, window.end), [])
            n = len(expected.audio)
            got = split.batch.audio[row].numpy()
            assert split.batch.audio_mask[row].sum() == n
            np.testing.assert_allclose(got[:n], expected.audio, rtol=1e-5, atol=1e-5)
            ids = split.batch.text_ids[row][split.batch.text_mask[row]].numpy()
            np.testing.assert_array_equal(ids, expected.text_ids)
            label = float(split.labels[row])
            assert -3 <= label <= 3 and label % 1 == 0.5


def test_the_session_featurizer_config_is_used(tmp_path):
    """Features are made as the live model made them: a session recorded with 50 audio frames/s
    (hop 320) trains on 50 frames/s; sessions recorded with different features are not mixed."""
    from moodlens.core.errors import ConfigError
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.train.sessions import load_session_dataset

    fine = FeaturizerConfig(audio_hop_length=320).to_dict()
    record_synthetic(tmp_path / "fine", seconds=2.1, video="none", session_info={"featurizer_config": fine})
    record_synthetic(tmp_path / "plain", seconds=2.1, video="none",
                     session_info={"featurizer_config": FeaturizerConfig().to_dict()})
    labels = labelled_csv(tmp_path / "fine.csv", [tmp_path / "fine"], label_of=lambda i, row: "-1")
    data = load_session_dataset([tmp_path / "fine"], labels, show_progress=False)
    assert data.featurizer_config["audio_hop_length"] == 320
    frames = [int(split.batch.audio_mask[i].sum()) for split in data.splits.values() for i in range(len(split))]
    assert all(abs(n - 0.5 * 50) <= 2 for n in frames), frames        # 0.5 s windows at 50 frames/s
    # The checkpoint trained on it carries that config (what the scorer checks live features against),
    # not the live default.
    from moodlens.models.checkpoint import load_checkpoint
    from moodlens.train.trainer import Trainer, TrainConfig

    tiny = {"text_hidden": 8, "audio_hidden": 8, "vision_hidden": 8, "shared_dim": 8, "fusion_hidden": 8,
            "heads": 2, "encoder_layers": 1, "decouple_layers": 1}
    Trainer(TrainConfig(model_overrides=tiny, epochs=1, batch_size=8, seeds=[1], num_threads=1), data,
            tmp_path / "run", show_progress=False).run()
    loaded = load_checkpoint(tmp_path / "run" / "best.pt")
    assert loaded.featurizer_config["audio_hop_length"] == 320
    assert loaded.featurizer_config == data.featurizer_config
    assert loaded.extra["trained_modalities"] == ["text", "audio"]     # recorded without video or faces
    both = labelled_csv(tmp_path / "both.csv", [tmp_path / "fine", tmp_path / "plain"],
                        label_of=lambda i, row: "1")
    with pytest.raises(ConfigError, match="audio_hop_length"):
        load_session_dataset([tmp_path / "fine", tmp_path / "plain"], both, show_progress=False)


def test_faces_come_from_the_recorded_video_or_the_recorded_features(tmp_path):
    """The same face recorded as H.264 video and as face features only: both sessions give vision
    features to training, and they agree (up to video compression)."""
    from moodlens.train.sessions import load_session_dataset

    from moodlens.realtime.sessions.reader import open_session

    images = demo_face_frames(16)
    root = tmp_path / "faces"
    record_synthetic(root / "video", seconds=1.6, video="mp4", images=images)
    recorder, _ = record_synthetic(root / "private", seconds=1.6, video="faces", images=images)
    # Privacy mode keeps no pixels: MediaPipe's features per frame go to faces.bin.
    assert recorder.error is None, recorder.error
    private = open_session(root / "private")
    assert private.video_path is None and not (root / "private" / "video.mp4").exists()
    faces = private.read_faces()
    assert recorder.stats.faces_written == len(faces) >= 10, (recorder.stats, len(faces))
    found = [f.face_present for f in faces]
    assert sum(found) >= len(faces) - 1, found                  # the demo face is found
    assert all(f.values.shape == (64,) and np.isfinite(f.values).all() for f in faces if f.face_present)
    assert faces[0].t == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip([f.t for f in faces], [f.t for f in faces][1:]))
    vision = {}
    for name in ("video", "private"):
        labels = labelled_csv(tmp_path / f"{name}.csv", [root / name], label_of=lambda i, row: "1",
                              edit=lambda rows: [r.__setitem__("split", "train") for r in rows])
        data = load_session_dataset([root / name], labels, show_progress=False)
        assert data.has_vision
        split = data.train
        assert split.batch.present[:, 2].all() and split.batch.vision_mask.any(1).all()
        vision[name] = split.batch
    a, b = vision["video"], vision["private"]
    assert a.vision.shape == b.vision.shape
    both = a.vision_mask & b.vision_mask
    assert both.sum() >= 10
    diff = (a.vision[both] - b.vision[both]).abs()
    assert float(diff.median()) < 0.05, float(diff.median())


@pytest.mark.e2e
def test_round_trip_record_export_label_train(tts, tmp_path):
    """The real pipeline records espeak-ng speech; the exported csv is labelled; `moodlens train`
    fine-tunes on it and writes a checkpoint that loads."""
    from moodlens.models import build_model
    from moodlens.realtime.perception.asr import AsrOptions, Transcriber
    from moodlens.realtime.perception.features.config import FeaturizerConfig
    from moodlens.realtime.engine.pipeline import PipelineOptions
    from moodlens.realtime.engine.build import build_pipeline
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder
    from moodlens.realtime.sessions.reader import open_session
    from moodlens.realtime.capture.media import MediaFileSource

    sentences = ["I love this.", "This is awful.", "What a great day.", "I hate waiting."]
    parts = [np.zeros(SR // 2, np.float32)]
    for s in sentences:
        audio, _ = sf.read(str(tts(s)), dtype="float32")
        parts += [audio, np.zeros(int(1.2 * SR), np.float32)]
    wav = tmp_path / "talk.wav"
    sf.write(str(wav), np.concatenate(parts), SR)

    from moodlens.realtime.scoring.scorer import Scorer

    scorer = Scorer.from_model(build_model("hcrl_mfd").eval(), FeaturizerConfig().to_dict(), backend="eager",
                               quiet=True)
    source = MediaFileSource(wav, pace="fast", origin=0.0)
    pipe = build_pipeline(source, scorer, PipelineOptions(realtime=False),
                    transcriber=Transcriber(AsrOptions(cpu_threads=2)))
    folder = tmp_path / "sessions" / "talk"
    pipe.sinks.append(SessionRecorder(folder, {"featurizer_config": pipe.featurizer_config.to_dict()},
                                      RecordingOptions(video="none")))
    pipe.run()
    session = open_session(folder)
    assert len(session.windows) == len(sentences)

    assert "love" in session.windows[0].text.lower() and "great" in session.windows[2].text.lower()
    # Label each window by the sentence spoken in it (the annotator's judgement).
    truth = [2.5, -2.5, 2.0, -2.0]

    def label_of(i, row):
        return str(truth[int(row["id"]) - session.windows[0].id])

    labels = labelled_csv(tmp_path / "labels.csv", [folder], label_of=label_of)
    out = tmp_path / "run"
    code, err = run_cli("train", "--model", "hcrl_mfd", "--data", str(folder), "--labels", str(labels),
                        "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet")
    assert code == 0, err
    from moodlens.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(out / "best.pt")
    assert loaded.model_name == "hcrl_mfd"

    # Every labelled window pinned to the test split: `moodlens evaluate` scores the checkpoint on all of them.
    all_test = labelled_csv(tmp_path / "all_test.csv", [folder], label_of=label_of,
                            edit=lambda rows: [r.__setitem__("split", "test") for r in rows])
    code, err = run_cli("evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(folder),
                        "--labels", str(all_test), "--json")
    assert code == 0, err

    # The fine-tuned model rescores the recorded media (the user's next step).
    from moodlens.realtime.engine.events import read_jsonl

    rescored = tmp_path / "rescored.jsonl"
    code, err = run_cli("replay", str(folder), "--rescore", "--checkpoint", str(out / "best.pt"),
                        "--backend", "eager", "--headless", "--jsonl", str(rescored))
    assert code == 0, err
    events = read_jsonl(rescored)
    assert [e.text for e in events] == [w.text for w in session.windows]
    assert all(e.backend == "eager" and np.isfinite(e.fused) for e in events)
