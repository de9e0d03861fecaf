"""docs/img/window_path.svg is drawn from the code: every box names a file and a function or class that
exist, and the committed SVG is what scripts/draw_architecture.py draws now."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("draw_architecture", REPO / "scripts" / "draw_architecture.py")
draw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(draw)


def defined(path: Path, qualname: str) -> bool:
    scope = ast.parse(path.read_text()).body
    for part in qualname.split("."):
        found = [n for n in scope if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part]
        if not found:
            return False
        scope = found[0].body
    return True


@pytest.mark.parametrize("stage, path, name, note", draw.STEPS, ids=[s[2] for s in draw.STEPS])
def test_every_box_names_real_code(stage, path, name, note):
    assert (REPO / path).exists(), path
    assert defined(REPO / path, name), f"{path} defines no {name}"
    top = path.split("/")[0] if path.split("/")[0] != "realtime" else path.split("/")[1]
    assert top == stage, f"{name} is drawn as {stage} but lives in {top}"


def test_the_svg_is_up_to_date():
    assert draw.OUT.read_text() == draw.draw(), "run .venv/bin/python scripts/draw_architecture.py"
