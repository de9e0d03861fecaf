"""One CLI convention: `--json [FILE]` and `--device` mean the same in every command (old spellings
keep working), and `moodlens --help` stays light (no torch import)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.cli import run_cli
from moodlens.realtime.cli import COMMANDS, build_parser

LIGHT = ("torch", "transformers", "faster_whisper", "mediapipe", "onnxruntime", "av")


def imported_by_help(argv: list[str]) -> set[str]:
    code = ("import sys, contextlib, io\n"
            "from moodlens.realtime.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main({argv!r})\n"
            f"print(','.join(m for m in {LIGHT!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m for m in out.strip().split(",") if m}


def test_top_level_help_imports_no_heavy_library():
    assert imported_by_help(["--help"]) == set()


@pytest.mark.parametrize("command", ["run", "demo", "replay", "bench", "featurize", "export", "train"])
def test_command_help_imports_no_heavy_library(command):
    assert imported_by_help([command, "--help"]) == set()


def test_help_states_the_conventions(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--json [FILE]" in out and "--device D" in out and "exit status 2" in out


@pytest.mark.parametrize("command, extra", [("bench", []), ("train", ["--data", "synthetic"]), ("models", [])])
def test_json_is_bare_for_stdout_or_takes_a_file(command, extra):
    parse = lambda *a: build_parser(command).parse_args([command, *extra, *a])  # noqa: E731
    assert parse().json is None
    assert parse("--json").json == "-"
    assert parse("--json", "out.json").json == "out.json"


def test_old_spellings_keep_working():
    assert build_parser("bench").parse_args(["bench", "--json-out", "r.json"]).json == "r.json"
    assert build_parser("bench").parse_args(["bench", "--json", "r.json"]).json == "r.json"


def test_device_defaults_to_auto_everywhere():
    for command in ("run", "demo", "live", "replay", "bench", "train"):
        parser = build_parser(command)
        sub = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(command))
        device = next(a for a in sub._actions if "--device" in a.option_strings)
        assert device.default in (None, "auto") and "auto" in device.help, command


def test_every_command_is_listed():
    assert set(COMMANDS) >= {"demo", "live", "run", "bench", "featurize", "replay", "export", "models", "train",
                             "evaluate"}


def test_models_json_to_stdout_and_to_a_file(tmp_path, capsys):
    code, _ = run_cli("models", "--json", "dlf")          # the old `--json NAME` order: a name, not a file
    listed = json.loads(capsys.readouterr().out)
    assert code == 0 and [m["name"] for m in listed] == ["dlf"]
    out = tmp_path / "zoo.json"
    code, err = run_cli("models", "dlf", "--json", str(out))
    assert code == 0 and json.loads(out.read_text()) == listed
