"""The window stage's face gate (issue 12, session 2): the VAD hears audio as soon as it arrives; a
window waits for the face stream only up to its own end, and a speculative window goes to Whisper
before the face stream has passed it (its faces are attached when it does, for pre-scoring).

Real parts: espeak-ng speech, Silero VAD. The window stage is driven directly with the messages the
capture and vision stages would send (no camera or microphone here); the source, scorer and
featurizer below are stand-ins the window stage never calls.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from moodlens.core.types import AudioChunk, FaceFeatures
from moodlens.realtime.engine.pipeline import AudioIn, FaceClock, FaceIn, Pipeline, PipelineOptions, StreamEnd
from moodlens.realtime.perception.vad import UtteranceWindower, VadOptions

SR = 16_000


def speech(tts, text: str) -> np.ndarray:
    audio, sr = sf.read(str(tts(text)), dtype="float32")
    assert sr == SR
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0]:loud[-1] + 1]


def window_stage(face_wait_s: float = 30.0) -> Pipeline:
    """A pipeline whose window stage alone runs (realtime, a video stream that has not ended)."""
    source = SimpleNamespace(has_audio=True, has_video=True, duration=None, origin=0.0, close=lambda: None)
    scorer = SimpleNamespace(backend_name="not used", device="cpu")
    featurizer = SimpleNamespace(config=SimpleNamespace(vision_fps=15.0), wants_encoder_states=False)
    windower = UtteranceWindower(VadOptions(speculative_silence_s=0.2, interim_every_s=0))
    pipe = Pipeline(source, scorer, PipelineOptions(realtime=True, face_wait_s=face_wait_s),
                    featurizer=featurizer, windower=windower, transcriber=None,
                    vision=SimpleNamespace(close=lambda: None))
    thread = threading.Thread(target=pipe._window_stage, daemon=True)
    thread.start()
    pipe._test_thread = thread
    return pipe


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def utterance(tts):
    return np.concatenate([np.zeros(SR // 2, np.float32), speech(tts, "The weather is lovely today."),
                           np.zeros(int(1.5 * SR), np.float32)])


def test_speculative_window_reaches_whisper_before_the_face_stream_passes_it(utterance):
    pipe = window_stage()
    try:
        face_t = [i / 15 for i in range(int(len(utterance) / SR * 15))]
        faces = [FaceFeatures(t=t, values=np.zeros(4, np.float32), face_present=True) for t in face_t]
        now = time.monotonic()
        # Every audio chunk arrives; the face stream has sent nothing yet (MediaPipe is behind).
        for i in range(0, len(utterance), 512):
            pipe._window_in.put(AudioIn(AudioChunk(t=i / SR, samples=utterance[i:i + 512]), now))
        assert wait_for(lambda: pipe.stats.snapshot().spec_emitted == 1)
        spec = pipe._spec_waiting
        assert spec is not None and spec.kind == "speculative"
        # Whisper may start on it, but it has no faces yet and cannot be pre-scored; no final is out.
        assert not pipe._has_faces(spec) and spec.faces == []
        assert pipe.stats.snapshot().windows_closed == 0
        # The face stream passes the window's end, though not the end of the audio: the final (whose
        # span ends pad_s after the speech) is released with the faces of its span, and the speculation
        # gets the same face results.
        end = spec.end
        for face in faces:
            if face.t <= end + 0.1:
                pipe._window_in.put(FaceIn(face))
        pipe._window_in.put(FaceClock(end + 0.1))
        assert end + 0.1 < len(utterance) / SR - 0.5
        assert wait_for(lambda: pipe.stats.snapshot().windows_closed == 1)
        final = pipe._asr_in.get(1.0)
        assert final.kind == "final" and (final.start, final.end) == (spec.start, spec.end)
        want = [f for f in faces if final.start <= f.t < final.end]
        assert len(want) > 10 and final.faces == want
        assert pipe._has_faces(spec)
        assert len(spec.faces) == len(final.faces) and all(a is b for a, b in zip(spec.faces, final.faces))
        np.testing.assert_array_equal(spec.audio, final.audio)
    finally:
        pipe._window_in.put(StreamEnd("audio"))
        pipe._window_in.put(StreamEnd("vision"))
        pipe._test_thread.join(5)
        pipe._stop.set()


def test_a_window_the_face_stream_never_passes_goes_after_face_wait_s(utterance):
    pipe = window_stage(face_wait_s=0.3)
    try:
        now = time.monotonic()
        for i in range(0, len(utterance), 512):
            pipe._window_in.put(AudioIn(AudioChunk(t=i / SR, samples=utterance[i:i + 512]), now))
        # No face message at all: the final still goes once it has waited face_wait_s since it closed.
        assert wait_for(lambda: pipe.stats.snapshot().windows_closed == 1, timeout=5.0)
        assert time.monotonic() - now >= 0.3
        final = pipe._asr_in.get(1.0)
        assert final.kind == "final" and final.faces == []
    finally:
        pipe._window_in.put(StreamEnd("audio"))
        pipe._window_in.put(StreamEnd("vision"))
        pipe._test_thread.join(5)
        pipe._stop.set()
