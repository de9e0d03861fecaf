"""Recorded sessions made without a camera or microphone: synthetic audio, frames and window events fed
to the real recorder as the pipeline would (the camera, microphone and scorer are the stand-ins)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

SENTENCES = ["I really like how this is going", "this part is honestly terrible", "well it is fine I guess",
             "what a wonderful surprise", "", "the results look quite bad today", "okay"]


WINDOW_S = 0.5


CHUNK = 512


def synthetic_items(seconds: float, t0: float = 5000.0, fps: float = 10.0, windows_every: float = WINDOW_S,
                    size=(96, 128), seed: int = 0, images: list[np.ndarray] | None = None):
    """Stand-in for the camera, microphone and scorer: (kind, item) in pipeline order. `images`:
    real frames to show instead of the drawn ones."""
    from moodlens.realtime.engine.events import WindowEvent
    from moodlens.core.types import AudioChunk, VideoFrame

    rng = np.random.default_rng(seed)
    n_chunks = int(seconds * 16000 / CHUNK)
    next_frame, next_window, wid = 0.0, windows_every, 0
    for i in range(n_chunks):
        rel = i * CHUNK / 16000
        tone = 0.2 * np.sin(2 * np.pi * (220 + 40 * (i // 20)) * (np.arange(CHUNK) + i * CHUNK) / 16000)
        yield "audio", AudioChunk(t0 + rel, tone.astype(np.float32))
        while next_frame <= rel:
            if images:
                image = images[int(round(next_frame * fps)) % len(images)]
            else:
                image = np.zeros((*size, 3), np.uint8)
                x = int(next_frame * 40) % (size[1] - 20)
                image[30:60, x:x + 20] = (255, 200, 40)
                image[:, :, 2] = rng.integers(0, 30, size, dtype=np.uint8)
            yield "frame", VideoFrame(t0 + next_frame, image, int(next_frame * fps))
            next_frame += 1 / fps
        end = rel + CHUNK / 16000
        if end >= next_window:
            text = SENTENCES[wid % len(SENTENCES)]
            fused = float(np.clip(2.5 * np.sin(wid * 0.7), -3, 3))
            vision_on = wid % 3 != 0
            yield "event", WindowEvent(
                id=wid, start=t0 + next_window - windows_every, end=t0 + next_window, text=text, fused=fused,
                text_score=(fused * 0.8 if text else None), audio_score=fused * 0.3 - 0.2,
                vision_score=(fused * 0.5 + 0.1 if vision_on else None),
                present={"text": bool(text), "audio": True, "vision": vision_on},
                latency_ms={"asr": 80.0, "features": 12.0, "model": 5.0, "total": 110.0 + wid},
                backend="eager", interim=False)
            wid += 1
            next_window += windows_every


def record_synthetic(folder: Path, seconds: float, pace: float = 0.0, video: str = "mp4",
                     session_info: dict | None = None, close: bool = True, images=None):
    """Feed the recorder like the pipeline does. `pace` 1.0 = real time, 0 = as fast as possible."""
    from moodlens.realtime.sessions.writer import RecordingOptions, SessionRecorder

    info = session_info or {"checkpoint": "default", "config": {"window": "synthetic"},
                            "devices": {"camera": "synthetic stand-in", "microphone": "synthetic stand-in"}}
    recorder = SessionRecorder(folder, info, RecordingOptions(video=video, block_when_busy=pace == 0))
    start = time.monotonic()
    events = 0
    try:
        for kind, item in synthetic_items(seconds, images=images):
            if kind == "audio":
                recorder.on_audio(item)
                if pace:
                    due = start + (item.t - 5000.0) / pace
                    time.sleep(max(0.0, due - time.monotonic()))
            elif kind == "frame":
                recorder.on_frame(item)
            else:
                recorder.on_event(item)
                events += 1
                print(f"event {item.id}", flush=True)
    finally:
        if close:
            recorder.close()
    return recorder, events
