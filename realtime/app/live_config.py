"""The live config: configs/live/default.yaml (or `--config FILE`) -> typed option dataclasses.

Every section is an option dataclass read with `Options.from_dict(values, where)` (core/options.py):
typed, unknown keys refused, then its own `check(where)`.

Sections: sources, vad (VadOptions), asr (AsrOptions), features (overrides of the checkpoint's
FeaturizerConfig), engine, pipeline (PipelineOptions), dashboard (DashboardOptions), recording
(RecordingOptions, used by `--record DIR`). Every key is
checked: an unknown section or key is refused with a sentence naming the file and the key.
A user file only needs the keys it changes; the rest come from the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moodlens.core.options import Options, configs_root, fill_dataclass, read_yaml
from moodlens.realtime.ui.dashboard import DashboardOptions
from moodlens.core.errors import ConfigError
from moodlens.core.schema import BACKEND_CHOICES
from moodlens.realtime.engine.pipeline import PipelineOptions
from moodlens.realtime.perception.vad import VadOptions

SECTIONS = ("sources", "vad", "asr", "features", "engine", "pipeline", "dashboard", "recording")


@dataclass
class SourceOptions(Options):
    camera: int = 0                   # webcam index for `moodlens live` (--camera)
    mic: str | None = None            # microphone name or index (--mic); None = the system default
    width: int = 640                  # webcam capture size
    height: int = 480
    camera_fps: float = 30.0
    video_fps: float | None = None    # files: keep at most this many frames per second (None = all)
    max_size: int | None = 640        # frames with a longer side are scaled down (face tracking cost)

    def check(self, where: str = "sources") -> None:
        if self.video_fps is not None and self.video_fps <= 0:
            raise ConfigError(f"{where}: video_fps must be positive or null.")
        if self.max_size is not None and self.max_size < 32:
            raise ConfigError(f"{where}: max_size must be at least 32 or null.")


@dataclass
class EngineOptions(Options):
    checkpoint: str = "default"       # "default" (shipped weights) or a checkpoint path (--checkpoint)
    backend: str = "auto"             # auto | tensorrt | compile | onnxruntime | eager (--backend)
    device: str | None = None         # None = CUDA when available, else CPU

    def check(self, where: str = "engine") -> None:
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"{where}: backend '{self.backend}' is unknown; choose one of: "
                              f"{', '.join(BACKEND_CHOICES)}.")


@dataclass
class LiveConfig:
    sources: SourceOptions = field(default_factory=SourceOptions)
    vad: VadOptions = field(default_factory=VadOptions)
    asr: Any = None                   # AsrOptions (imported lazily: faster-whisper is heavy)
    features: dict[str, Any] = field(default_factory=dict)
    engine: EngineOptions = field(default_factory=EngineOptions)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    dashboard: DashboardOptions = field(default_factory=DashboardOptions)
    recording: Any = None             # RecordingOptions for `--record DIR` (realtime/sessions/writer.py)
    path: str = ""                    # where it was read from

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the session recorder's session.json)."""
        out = {}
        for name in SECTIONS:
            value = getattr(self, name)
            out[name] = dict(value) if isinstance(value, dict) else dataclasses.asdict(value)
        return out


def default_config_path() -> Path:
    return configs_root() / "live" / "default.yaml"


def _section_class(name: str):
    if name == "asr":
        from moodlens.realtime.perception.asr import AsrOptions

        return AsrOptions
    if name == "recording":
        from moodlens.realtime.sessions.writer import RecordingOptions

        return RecordingOptions
    return {"sources": SourceOptions, "vad": VadOptions, "engine": EngineOptions,
            "pipeline": PipelineOptions, "dashboard": DashboardOptions}[name]


def _check_features(values: dict[str, Any], source: str) -> dict[str, Any]:
    from moodlens.realtime.perception.features.config import FeaturizerConfig

    # Validate keys and value types against the dataclass; keep only the overrides themselves.
    fill_dataclass(FeaturizerConfig, values, source)
    return dict(values)


def load_live_config(path: str | Path | None = None) -> LiveConfig:
    """Read the defaults, then `path` (if given) over them, section by section."""
    default_path = default_config_path()
    layers = [(default_path, read_yaml(default_path) if default_path.exists() else {})]
    if path is not None:
        user = Path(path).expanduser()
        layers.append((user, read_yaml(user)))
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for file, data in layers:
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(f"{file}: unknown section '{section}' (known sections: {', '.join(SECTIONS)}).")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{file}: section '{section}' must hold keys and values, got {values!r}.")
            merged[section].update(values)
            merged.setdefault("_where", {})[section] = str(file)  # type: ignore[index]
    where = merged.pop("_where", {})  # type: ignore[arg-type]
    config = LiveConfig(path=str(layers[-1][0]))
    for section in SECTIONS:
        source = f"{where.get(section, default_path)} [{section}]"
        values = merged[section]
        if section == "features":
            config.features = _check_features(values, source)
            continue
        setattr(config, section, _section_class(section).from_dict(values, source))
    return config
