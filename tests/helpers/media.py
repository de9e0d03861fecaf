"""Real media for tests: espeak-ng speech, frames of the bundled demo clip (a photographed face), and
a talking-face clip muxed from both with PyAV."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "realtime" / "assets" / "demo.mp4"
SR = 16_000


def synthesize(text: str, out_wav: Path, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Speak `text` with espeak-ng into a 16 kHz mono WAV (real English speech with known words)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed; `make setup` (or .ci/run) installs it with apt")
    raw = out_wav.with_suffix(".raw.wav")
    subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text], check=True)
    import soundfile as sf
    import librosa

    audio, sr = sf.read(str(raw), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(1)
    audio = librosa.resample(audio, orig_sr=sr, target_sr=16000)
    sf.write(str(out_wav), audio, 16000, subtype="PCM_16")
    raw.unlink()
    return out_wav


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.float32)


def demo_face_frames(n: int, size=(240, 180)) -> list[np.ndarray]:
    """Frames of the bundled demo clip: a real photographed face."""
    import av

    frames = []
    with av.open(str(DEMO)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            if len(frames) == n:
                break
    return frames


def talking_face_clip(path: Path, wav: Path, fps: int = 8) -> Path:
    """espeak-ng speech over the face frames of the bundled demo clip (a real photo), H.264 + AAC."""
    speech, _ = sf.read(str(wav), dtype="float32")
    audio = np.concatenate([np.zeros(SR // 2, np.float32), speech, np.zeros(SR, np.float32)])
    return write_clip(path, audio, demo_face_frames(int(len(audio) / SR * fps), size=(240, 180)), fps)


def write_clip(path: Path, audio: np.ndarray | None, frames: list[np.ndarray] | None, fps: int = 10, *,
               options: dict | None = None) -> Path:
    """H.264 + AAC (either stream optional) with PyAV; `options`: the muxer's (e.g. movflags)."""
    import av

    with av.open(str(path), "w", options=options or {}) as c:
        video = audio_stream = None
        if frames:
            video = c.add_stream("libx264", rate=fps)
            video.height, video.width = frames[0].shape[:2]
            video.pix_fmt = "yuv420p"
        if audio is not None:
            audio_stream = c.add_stream("aac", rate=SR, layout="mono")
        for i, img in enumerate(frames or []):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in video.encode(f):
                c.mux(p)
        if video is not None:
            for p in video.encode():
                c.mux(p)
        if audio is not None:
            pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            for s in range(0, len(pcm), 1024):
                f = av.AudioFrame.from_ndarray(pcm[None, s:s + 1024], format="s16", layout="mono")
                f.sample_rate, f.pts, f.time_base = SR, s, Fraction(1, SR)
                for p in audio_stream.encode(f):
                    c.mux(p)
            for p in audio_stream.encode():
                c.mux(p)
    return path


def spoken_sentence(folder: Path) -> np.ndarray:
    """One espeak-ng sentence (16 kHz mono float32) for the tests that run real Whisper on known speech."""
    import soundfile as sf

    path = synthesize("The weather is nice today, so we are going to the park after lunch.", Path(folder) / "s.wav")
    audio, sr = sf.read(str(path), dtype="float32")
    assert sr == 16000
    return audio



def demo_still_dataset(folder: Path) -> tuple[np.ndarray, Path, Path]:
    """The demo clip's first frame as one still in the MMSA-FET raw layout (raw/faces/f.png, label 2, train):
    (the frame, the raw folder, the labels file) for `moodlens featurize` tests."""
    import av
    from PIL import Image

    with av.open(str(DEMO)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    raw = folder / "raw"
    (raw / "faces").mkdir(parents=True)
    Image.fromarray(frame).save(raw / "faces" / "f.png")
    labels = folder / "label.csv"
    labels.write_text("video_id,clip_id,label,label_V,mode\nfaces,f,2,2,train\n")
    return frame, raw, labels
