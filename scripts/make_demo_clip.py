"""Make the bundled demo clip realtime/assets/demo.mp4 (and its sentence list demo.json).

English sentences that are clearly positive, negative or neutral, spoken by espeak-ng and
separated by ~1 s of silence, over scikit-image's public-domain astronaut portrait (NASA photo
of Eileen Collins) with a slow zoom so the video is not frozen. H.264 + AAC through PyAV,
25 fps, 640x480, well under 2 MB.

    .venv/bin/pip install scikit-image      # only to run this script; not a runtime dependency
    .venv/bin/python scripts/make_demo_clip.py [--out realtime/assets/demo.mp4]

The script checks that MediaPipe's face landmarker finds the face and that the file decodes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16_000
FPS = 25
WIDTH, HEIGHT = 640, 480
LEAD_IN_S = 0.8
GAP_S = 1.2

# (sentence, expected sign): +1 positive, -1 negative, 0 neutral.
SENTENCES = [
    ("I love this, it is absolutely wonderful and it makes me so happy.", 1),
    ("This is terrible, I hate it and it makes me really angry.", -1),
    ("The meeting is on Tuesday at three o'clock in room four.", 0),
    ("What a fantastic day, everything went great and I feel amazing.", 1),
    ("I feel awful and sad, everything went wrong and it is horrible.", -1),
]


def speak(text: str, words_per_minute: int = 150) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32."""
    import librosa
    import soundfile as sf

    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng is not installed (apt-get install espeak-ng).")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run([exe, "-v", "en-us", "-s", str(words_per_minute), "-w", str(wav), text], check=True)
        audio, sr = sf.read(str(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(1)
    audio = librosa.resample(audio, orig_sr=sr, target_sr=SAMPLE_RATE)
    # espeak pads each utterance with a little silence; trim it so the spans are the speech itself.
    trimmed, (a, b) = librosa.effects.trim(audio, top_db=40)
    return (0.8 * trimmed / max(1e-6, np.abs(trimmed).max())).astype(np.float32)


def build_audio() -> tuple[np.ndarray, list[dict]]:
    parts = [np.zeros(int(LEAD_IN_S * SAMPLE_RATE), np.float32)]
    t = LEAD_IN_S
    spans = []
    for text, sign in SENTENCES:
        speech = speak(text)
        spans.append({"text": text, "sign": sign, "start": round(t, 3),
                      "end": round(t + len(speech) / SAMPLE_RATE, 3)})
        parts += [speech, np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)]
        t += len(speech) / SAMPLE_RATE + GAP_S
    return np.concatenate(parts), spans


def portrait() -> np.ndarray:
    """The astronaut photo cropped to 4:3 around the face (640x480 after resizing)."""
    from PIL import Image
    from skimage import data

    image = data.astronaut()            # (512, 512, 3) uint8, public domain (NASA)
    crop = image[0:384, 0:512]          # the face sits in the upper half
    return np.asarray(Image.fromarray(crop).resize((WIDTH + 64, HEIGHT + 48), Image.LANCZOS))


def frame_at(base: np.ndarray, t: float, duration: float) -> np.ndarray:
    """A slow zoom-and-drift (Ken Burns) window into the slightly larger portrait."""
    phase = t / max(duration, 1e-6)
    dx = int(round(32 + 30 * np.sin(2 * np.pi * phase)))
    dy = int(round(24 + 20 * np.sin(4 * np.pi * phase)))
    return np.ascontiguousarray(base[dy:dy + HEIGHT, dx:dx + WIDTH])


def encode(out: Path, audio: np.ndarray) -> None:
    import av

    duration = len(audio) / SAMPLE_RATE
    base = portrait()
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"crf": "30", "preset": "slow", "tune": "stillimage"}
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        sound.bit_rate = 48_000
        n_frames = int(np.ceil(duration * FPS))
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_at(base, i / FPS, duration), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        step = 1024
        for start in range(0, len(pcm), step):
            chunk = pcm[start:start + step]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)


def check_face(out: Path) -> int:
    """Count the sampled frames in which MediaPipe's face landmarker finds a face."""
    import av
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    from moodlens.core.assets import FACE_LANDMARKER, resolve_path

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(resolve_path(FACE_LANDMARKER))), num_faces=1)
    found = total = 0
    with vision.FaceLandmarker.create_from_options(options) as landmarker, av.open(str(out)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 25:
                continue
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=frame.to_ndarray(format="rgb24"))
            total += 1
            found += bool(landmarker.detect(image).face_landmarks)
    return found, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "realtime" / "assets" / "demo.mp4")
    args = parser.parse_args()
    audio, spans = build_audio()
    encode(args.out, audio)
    manifest = {"file": args.out.name, "duration": round(len(audio) / SAMPLE_RATE, 3),
                "fps": FPS, "size": [WIDTH, HEIGHT], "sentences": spans,
                "image": "scikit-image data.astronaut() (NASA, public domain)", "voice": "espeak-ng en-us"}
    args.out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    found, total = check_face(args.out)
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out} ({size_kb:.0f} KiB, {manifest['duration']:.1f} s); "
          f"face found in {found}/{total} sampled frames")
    if found < total:
        print("warning: MediaPipe missed the face in some frames", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
