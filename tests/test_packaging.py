"""The wheel holds every module and data file of the source tree (package discovery cannot lose one).

The editable install finds modules by path, so a package missing from the wheel would pass every
other test; this one builds the real wheel from a copy of the tracked files and compares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("core", "models", "realtime", "train", "configs")


def source_files() -> list[str]:
    """Files of the five package folders that git tracks or would track (all files outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *TOPS], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        files = [str(p.relative_to(ROOT)) for top in TOPS for p in (ROOT / top).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return [f for f in files if (ROOT / f).exists()]


@pytest.mark.slow
def test_wheel_holds_every_module_and_data_file(tmp_path):
    tree = tmp_path / "src"
    files = source_files() + ["pyproject.toml", "setup.py", "README.md"]
    for rel in files:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tree / rel)
    out = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(tree)], capture_output=True, text=True)
    assert built.returncode == 0, f"pip wheel failed: {built.stderr[-2000:]}"
    (wheel,) = out.glob("moodlens-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"moodlens/{rel}" for rel in source_files()}
    missing = sorted(expected - names)
    assert not missing, f"{len(missing)} files of the source tree are not in the wheel, e.g. {missing[:5]}"
    # every sub-package is importable by its moodlens name
    assert "moodlens/realtime/capture/__init__.py" in names and "moodlens/core/options.py" in names


def test_source_files_are_found():
    files = source_files()
    assert "core/errors.py" in files and "models/weights/default.pt" in files
    assert any(f.startswith("configs/live/") for f in files)
