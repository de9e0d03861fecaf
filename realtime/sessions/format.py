"""The session folder format: file names, the WAV header, the face-record layout, atomic JSON writes
and the versions recorded with a session.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from moodlens.core.schema import SESSION_LIBRARIES
from moodlens.core.schema import versions as library_versions
from moodlens.core.types import AUDIO_SAMPLE_RATE, FaceFeatures

SESSION_FORMAT = "moodlens-session/1"
SESSION_FILE = "session.json"
WINDOWS_FILE = "windows.jsonl"
AUDIO_FILE = "audio.wav"
VIDEO_FILE = "video.mp4"
FACES_FILE = "faces.bin"
RESERVE_FILE = ".space.reserve"  # freed at the end so the last session.json fits on a full disk
RESERVE_BYTES = 16 * 1024     # at least; the recorder keeps twice session.json's size
LOCK_FILE = ".recording.lock"   # held (flock) while a recorder writes; the kernel drops it when the process dies
VIDEO_MODES = ("mp4", "faces", "none")
WAV_HEADER_BYTES = 44
# The video writer repeats the newest frame this soon after it to close a fragment at a window.
REPEAT_FRAME_S = 0.002

# ------------------------------------------------------------------------------------------
# small file helpers


def _atomic_write_json(path: Path, data: dict[str, Any], fsync: bool = True) -> None:
    """Write JSON to a temporary file in the same folder, then rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    payload = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default).encode("utf-8")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)   # a full disk must not leave a 0-byte temporary behind
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN: a non-finite score becomes null instead of an unreadable line."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def wav_header(data_bytes: int, sample_rate: int = AUDIO_SAMPLE_RATE, channels: int = 1,
               bits: int = 16) -> bytes:
    data_bytes = min(data_bytes, 0xFFFFFFFF - 36)
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes))


def _patch_wav_sizes(fd: int, data_bytes: int) -> None:
    # Past 4 GiB (37 h) the 32-bit sizes saturate; readers here go by the file size anyway.
    data_bytes = min(data_bytes, 0xFFFFFFFF - 36)
    os.pwrite(fd, struct.pack("<I", 36 + data_bytes), 4)
    os.pwrite(fd, struct.pack("<I", data_bytes), 40)


def versions() -> dict[str, str]:
    """Versions of what shaped the recording (no heavy imports: read from package metadata)."""
    return library_versions(SESSION_LIBRARIES, absent=None, runtime=True)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")

# ------------------------------------------------------------------------------------------
# face features file: fixed-size records, so a torn last record is simply left off


def _faces_dtype(dim: int = 64) -> np.dtype:
    return np.dtype([("t", "<f8"), ("present", "u1"), ("values", "<f4", (dim,))])


def _faces_dtype_spec(dim: int = 64) -> dict[str, Any]:
    return {"fields": ["t:<f8", "present:u1", f"values:<f4[{dim}]"], "dim": dim}


def encode_faces(faces: list[FaceFeatures], dim: int = 64) -> bytes:
    records = np.zeros(len(faces), dtype=_faces_dtype(dim))
    for i, face in enumerate(faces):
        records[i]["t"] = face.t
        records[i]["present"] = bool(face.face_present and face.values is not None)
        if face.values is not None:
            records[i]["values"] = np.asarray(face.values, dtype=np.float32).reshape(-1)[:dim]
    return records.tobytes()


# ------------------------------------------------------------------------------------------
