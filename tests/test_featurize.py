"""`moodlens featurize` on media made in the test: espeak speech muxed into mp4, and a tiny raw dataset."""

from __future__ import annotations

import csv
import pickle

import av
import numpy as np
import pytest
import soundfile as sf

from moodlens.realtime.cli import main as cli_main
from moodlens.realtime.perception.features.config import FeaturizerConfig
from moodlens.train.datasets import FeaturizeOptions, featurize_file, featurize_raw_dataset

FAST = FeaturizerConfig(vision_fps=5.0)


def write_mp4(path, audio: np.ndarray | None, seconds: float, fps: int = 10, size=(160, 120)) -> None:
    """H.264 gradient/noise video (no face) plus AAC audio of `audio` (16 kHz mono), muxed with PyAV."""
    rng = np.random.default_rng(0)
    w, h = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio is not None else None
        for i in range(int(seconds * fps)):
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            step = 1024
            for start in range(0, len(pcm), step):
                frame = av.AudioFrame.from_ndarray(pcm[None, start:start + step], format="s16", layout="mono")
                frame.sample_rate = 16000
                frame.pts = start
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)


def speech(tts, text: str) -> np.ndarray:
    audio, sr = sf.read(str(tts(text)), dtype="float32")
    assert sr == 16000
    return audio


@pytest.mark.e2e
def test_featurize_file_gives_one_sample_per_utterance(tmp_path, tts):
    first = speech(tts, "The weather is lovely today.")
    second = speech(tts, "I am very happy with this result.")
    gap = np.zeros(16000, np.float32)
    audio = np.concatenate([gap[:4000], first, gap, second, gap[:4000]])
    clip = tmp_path / "talk.mp4"
    write_mp4(clip, audio, seconds=len(audio) / 16000)
    out = tmp_path / "talk.pkl"
    assert cli_main(["featurize", str(clip), "--out", str(out), "--vision-fps", "5"]) == 0
    with out.open("rb") as f:
        data = pickle.load(f)
    n = len(data["id"])
    assert n == 2
    text = " ".join(data["raw_text"]).lower()
    assert "lovely" in text and "happy" in text
    assert data["text_bert"].shape[:2] == (2, 3) and data["text_bert"].dtype == np.int64
    assert (data["text_bert"][:, 1].sum(1) > 4).all()           # real tokens in each window
    assert data["audio"].shape[0] == 2 and data["audio"].shape[2] == 40
    assert data["vision"].shape[0] == 2 and data["vision"].shape[2] == 64
    assert data["vision_mask"].dtype == bool and not data["vision_mask"].any()   # no face in noise
    assert (data["vision_lengths"] > 0).all()                    # frames were processed at 5 fps
    assert data["present"].tolist() == [[True, True, False]] * 2
    assert (data["start"] < data["end"]).all() and data["end"][0] <= data["start"][1]
    for i in range(2):
        duration = data["end"][i] - data["start"][i]
        assert abs(data["audio_lengths"][i] - duration * 25) <= 2
        assert np.isfinite(data["audio"][i]).all()
    assert FeaturizerConfig.from_dict(data["meta"]).vision_fps == 5.0


def test_file_mode_refuses_bad_input(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    assert cli_main(["featurize", str(bad), "--out", str(tmp_path / "x.pkl")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert cli_main(["featurize", str(bad), "--out", str(tmp_path / "x.txt")]) == 2
    assert cli_main(["featurize", "--out", str(tmp_path / "x.pkl")]) == 2


def build_raw_dataset(root, tts) -> None:
    """Raw/<video_id>/<clip_id>.mp4 + label.csv, one corrupt clip and one row without a file."""
    rows = [
        ("vid_a", "0001", "what a great day", 2.0, "train"),
        ("vid_a", "0002", "", -1.0, "train"),                 # no label text -> Whisper
        ("vid_b", "0001", "this is terrible", -2.4, "valid"),
        ("vid_b", "0002", "it is fine", 0.2, "test"),
        ("vid_c", "0001", "broken clip", 1.0, "test"),        # corrupt file
        ("vid_c", "0002", "missing clip", 1.0, "test"),       # no file at all
    ]
    spoken = {"vid_a/0001": "What a great day.", "vid_a/0002": "I really do not like rainy weather.",
              "vid_b/0001": "This is terrible.", "vid_b/0002": "It is fine."}
    for video_id, clip_id, *_ in rows:
        folder = root / "Raw" / video_id
        folder.mkdir(parents=True, exist_ok=True)
        key = f"{video_id}/{clip_id}"
        if key in spoken:
            audio = speech(tts, spoken[key])
            write_mp4(folder / f"{clip_id}.mp4", audio, seconds=len(audio) / 16000, fps=5, size=(96, 64))
        elif clip_id == "0001":
            (folder / f"{clip_id}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    with (root / "label.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"])
        for video_id, clip_id, text, label, mode in rows:
            writer.writerow([video_id, clip_id, text, label, label, label / 2, "", "Positive", mode])


@pytest.mark.e2e
def test_raw_dataset_with_failures_and_resumable_cache(tmp_path, tts, capsys):
    build_raw_dataset(tmp_path, tts)
    out = tmp_path / "data.pkl"
    options = FeaturizeOptions(workers=2, progress=False)
    report = featurize_raw_dataset(tmp_path, tmp_path / "label.csv", out, FAST, options)
    assert report.clips == 6 and report.computed == 4 and report.cached == 0
    failed = {(v, c): reason for v, c, _, reason in report.failed}
    assert set(failed) == {("vid_c", "0001"), ("vid_c", "0002")}
    assert "0001.mp4" in failed[("vid_c", "0001")] and "no media file" in failed[("vid_c", "0002")]
    with report.failed_path.open() as f:
        assert len(list(csv.DictReader(f))) == 2

    with out.open("rb") as f:
        data = pickle.load(f)
    assert set(data) == {"train", "valid", "test", "meta"}
    assert data["train"]["id"] == ["vid_a/0001", "vid_a/0002"]
    assert data["train"]["raw_text"][0] == "what a great day"            # label text, not ASR
    assert "weather" in data["train"]["raw_text"][1].lower()             # ASR where the label had none
    assert data["train"]["regression_labels"].tolist() == [2.0, -1.0]
    assert data["train"]["regression_labels_A"].tolist() == [1.0, -0.5]
    # an empty column means "unknown for that head": NaN, never left out (the loader would fall back to label)
    assert np.isnan(data["train"]["regression_labels_V"]).all()
    assert data["valid"]["audio"].shape[2] == 40 and data["test"]["vision"].shape[2] == 64
    assert data["test"]["id"] == ["vid_b/0002"]
    for split in ("train", "valid", "test"):
        part = data[split]
        assert part["present"][:, :2].all() and np.isfinite(part["audio"]).all()
    cache_files = sorted((tmp_path / "data.pkl.cache").glob("*.npz"))
    assert len(cache_files) == 4
    stamps = [p.stat().st_mtime_ns for p in cache_files]

    # resumed run through the command: everything comes from the cache, failed clips are tried again
    code = cli_main(["featurize", "--raw", str(tmp_path), "--out", str(out), "--workers", "1", "--vision-fps", "5"])
    assert code == 0
    message = " ".join(capsys.readouterr().err.split())
    assert "4 of 6 clips" in message and "0 featurized now, 4 from the cache" in message
    assert "2 clips failed" in message
    assert [p.stat().st_mtime_ns for p in cache_files] == stamps
    with out.open("rb") as f:
        resumed = pickle.load(f)
    np.testing.assert_array_equal(resumed["train"]["audio"], data["train"]["audio"])

    # the train loader reads the result directly
    from moodlens.train.data import load_dataset

    splits = load_dataset(str(out))
    assert splits.audio_dim == 40 and splits.vision_dim == 64
    assert len(splits.train) == 2 and splits.kind == "featurize"


def test_raw_dataset_bad_labels_are_refused(tmp_path):
    from moodlens.core.errors import DataError

    (tmp_path / "Raw").mkdir()
    (tmp_path / "label.csv").write_text("video_id,clip_id,text\nv,1,hi\n")
    with pytest.raises(DataError, match="lacks the column 'label'"):
        featurize_raw_dataset(tmp_path, tmp_path / "label.csv", tmp_path / "d.pkl", FAST,
                              FeaturizeOptions(progress=False))


def test_file_without_video_or_without_audio(tmp_path, tts):
    wav = tts("Good morning everyone.")                  # audio only: vision absent
    data = featurize_file(wav, tmp_path / "a.pkl", FAST, FeaturizeOptions(progress=False))
    assert len(data["id"]) == 1 and "morning" in data["raw_text"][0].lower()
    assert data["present"].tolist() == [[True, True, False]] and data["vision_lengths"].tolist() == [0]

    silent = tmp_path / "silent.mp4"                      # video only: one window, no text, no audio
    write_mp4(silent, None, seconds=1.0, fps=10, size=(96, 64))
    data = featurize_file(silent, None, FAST, FeaturizeOptions(progress=False))
    assert len(data["id"]) == 1 and data["raw_text"] == [""]
    assert data["present"].tolist() == [[False, False, False]]
    assert data["audio_lengths"].tolist() == [0] and data["vision_lengths"][0] >= 4


def test_egemaps_extra_is_refused_cleanly_without_opensmile(tmp_path, capsys):
    from moodlens.realtime.perception.features.audio import opensmile_available

    if opensmile_available():
        pytest.skip("opensmile is installed here; the refusal path cannot be exercised")
    wav = tmp_path / "tone.wav"
    sf.write(str(wav), (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32), 16000)
    assert cli_main(["featurize", str(wav), "--egemaps", "--out", str(tmp_path / "x.pkl")]) == 2
    assert "non-commercial" in capsys.readouterr().err
    (tmp_path / "Raw").mkdir()
    assert cli_main(["featurize", "--raw", str(tmp_path), "--egemaps", "--out", str(tmp_path / "d.pkl")]) == 2
    assert not (tmp_path / "d.pkl").exists()


def test_extra_arrays_are_padded_with_lengths():
    from moodlens.realtime.perception.features.featurizer import Sample
    from moodlens.train.datasets import samples_to_mmsa

    def sample(frames):
        s = Sample(text="hi", text_ids=np.array([101, 102]), audio=np.zeros((3, 40), np.float32),
                   vision=np.zeros((0, 64), np.float32), vision_mask=np.zeros(0, bool),
                   present=np.array([True, True, False]))
        s.extras["audio_egemaps"] = np.ones((frames, 25), np.float32)
        return s

    data = samples_to_mmsa([sample(7), sample(0)], ["a", "b"], FAST)
    assert data["audio_egemaps"].shape == (2, 7, 25) and data["audio_egemaps_lengths"].tolist() == [7, 0]
    assert data["audio_egemaps"][1].sum() == 0


@pytest.mark.shared
def test_raw_dataset_of_real_face_clips(shared_data, tmp_path):
    """The CH-SIMS-like shared clips (real faces, 1920x804 and 640x360) in the raw layout: faces found."""
    import shutil

    raw = tmp_path / "Raw" / "video_0001"
    raw.mkdir(parents=True)
    rows = []
    for i, name in enumerate(["zh_0001.mp4", "zh_raw_video.mp4"], start=1):
        shutil.copy(shared_data / "clips" / name, raw / f"{i:04d}.mp4")
        rows.append(f"video_0001,{i:04d},你好,{0.4 * i},{0.2 * i},{-0.2 * i},{0.6 * i},Positive,train")
    (tmp_path / "label.csv").write_text(
        "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n" + "\n".join(rows) + "\n")
    report = featurize_raw_dataset(tmp_path, tmp_path / "label.csv", tmp_path / "sims.pkl", FAST,
                                   FeaturizeOptions(workers=1, progress=False))
    assert not report.failed and report.split_sizes == {"train": 2}
    with (tmp_path / "sims.pkl").open("rb") as f:
        train = pickle.load(f)["train"]
    assert train["present"].all()
    assert (train["vision_mask"].sum(1) >= 0.8 * train["vision_lengths"]).all()
    assert train["regression_labels_V"].tolist() == pytest.approx([0.6, 1.2])
    assert train["raw_text"] == ["你好", "你好"]
