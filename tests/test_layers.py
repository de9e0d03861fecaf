"""The layering rule, checked: imports only go down.

    core < models < realtime < train
    inside realtime: capture < perception < scoring < engine < {sessions, ui} < app < {commands, cli}

Every import counts, deferred ones (inside functions) included. train may use of realtime only what
training needs from serving: perception (one featurizer for training and serving, no train/serve skew),
the session reader (training on recorded sessions) and the media-file decoder (the offline dataset
writer decodes files as `moodlens run` does). The CLI dispatches to train's commands by module name
(a string), which is not an import. The base imports no torch, so light modules stay light.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "models", "realtime", "train")
RANK = {"core": 0, "configs": 0, "models": 1, "realtime": 2, "train": 3}
STAGES = {"capture": 0, "perception": 1, "scoring": 2, "engine": 3, "sessions": 4, "ui": 4, "app": 5,
          "commands": 6, "cli": 6, "__init__": 6}
TRAIN_MAY_USE = ("moodlens.realtime.perception", "moodlens.realtime.sessions.reader",
                 "moodlens.realtime.sessions.format", "moodlens.realtime.capture.media")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return "moodlens." + ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, deferred ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from moodlens.realtime import backends` imports the sub-module
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module.startswith("moodlens")]
    return found


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else "__init__"


def violation(importer: str, imported: str) -> str | None:
    if not imported.startswith("moodlens."):
        return "the base imports torch" if importer.startswith("moodlens.core") and imported.split(".")[0] == "torch" else None
    src, dst = importer.split(".")[1], imported.split(".")[1]
    if dst not in RANK:
        return None
    if RANK[dst] > RANK[src]:
        if src == "realtime" and dst == "train":
            return "serving must not depend on training"
        return f"{src} sits below {dst}"
    if src == "train" and dst == "realtime" and not imported.startswith(TRAIN_MAY_USE):
        if not any(allowed.startswith(imported + ".") for allowed in TRAIN_MAY_USE):  # a parent package
            return "train may use only realtime's perception, session reader and media decoder"
    if src == dst == "realtime":
        a, b = stage(importer), stage(imported)
        if a in STAGES and b in STAGES and a != b:
            if STAGES[b] > STAGES[a]:
                return f"realtime.{a} sits below realtime.{b}"
            if STAGES[b] == STAGES[a]:
                return f"realtime.{a} and realtime.{b} are side by side"
    return None


def all_violations() -> list[str]:
    out = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            importer = module_name(path)
            for line, imported in imports(path):
                why = violation(importer, imported)
                if why:
                    out.append(f"{path.relative_to(ROOT)}:{line} imports {imported}: {why}")
    return out


def test_imports_only_go_down():
    found = all_violations()
    assert not found, "upward imports:\n" + "\n".join(found)


@pytest.mark.parametrize("importer, imported", [
    ("moodlens.models.base", "moodlens.realtime.perception.features.config"),
    ("moodlens.realtime.scoring.scorer", "moodlens.train.trainer"),
    ("moodlens.realtime.perception.vad", "moodlens.realtime.engine.pipeline"),
    ("moodlens.realtime.sessions.replay", "moodlens.realtime.ui.dashboard"),
    ("moodlens.train.trainer", "moodlens.realtime.engine.pipeline"),
    ("moodlens.core.options", "moodlens.models.config"),
    ("moodlens.core.types", "torch"),
])
def test_the_checker_catches_upward_edges(importer, imported):
    assert violation(importer, imported)


@pytest.mark.parametrize("importer, imported", [
    ("moodlens.realtime.scoring.scorer", "moodlens.models.checkpoint"),
    ("moodlens.train.sessions", "moodlens.realtime.sessions.reader"),
    ("moodlens.train.data", "moodlens.realtime.perception.features.text"),
    ("moodlens.realtime.app.session", "moodlens.realtime.engine.pipeline"),
    ("moodlens.models.config", "moodlens.core.options"),
])
def test_the_checker_allows_downward_edges(importer, imported):
    assert violation(importer, imported) is None


def test_deferred_imports_count(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from moodlens.train.checkpoint import load\n")
    assert imports(path) == [(2, "moodlens.train.checkpoint"), (2, "moodlens.train.checkpoint.load")]
