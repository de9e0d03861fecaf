"""Package discovery: the five top-level folders install as moodlens.<folder>, each with every
sub-package found under it (so a new sub-package can never be left out of the wheel). The rest of
the metadata is in pyproject.toml."""

from setuptools import find_packages, setup

TOP = ("core", "models", "realtime", "train", "configs")

setup(
    package_dir={f"moodlens.{top}": top for top in TOP},
    packages=[f"moodlens.{name}" for name in find_packages(include=[*TOP, *(f"{top}.*" for top in TOP)])],
)
