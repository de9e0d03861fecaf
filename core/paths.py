"""Output paths, checked before any work starts.

Every command that writes a file or a folder calls `check_output_file` / `check_output_dir` on
it first, so a path under a regular file, on a read-only mount or in a folder the user cannot
write to is refused with one sentence (`OutputError`, exit 2) before minutes of work whose
result would then be lost. Nothing is created: the check writes an anonymous temporary file in
the nearest existing folder (works for root too, where permission bits say nothing) and the
file disappears with its handle.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from moodlens.core.errors import OutputError


def _reason(err: OSError) -> str:
    if err.errno == errno.EROFS:
        return "the file system is read-only"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    return (err.strerror or type(err).__name__).lower()


def _nearest_existing(path: Path, what: str) -> Path:
    """The closest ancestor that exists; refuses a regular file anywhere on the way."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{what} '{path}' cannot be written: '{parent}' is a file, not a folder.")
            return parent
        if parent.is_symlink():   # a dangling link: mkdir would fail on it later
            raise OutputError(f"{what} '{path}' cannot be written: '{parent}' is a broken link.")
    return Path.cwd()


def _probe_writable(folder: Path, path: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"{what} '{path}' cannot be written: folder '{folder}': {_reason(err)}.") from None


def check_output_file(path: str | os.PathLike, what: str = "The output", suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse a file path that cannot be written (a folder, under a file, read-only, not writable).

    `what` names the flag in the sentence (e.g. "--json"); `suffixes`, when given, are the accepted
    endings. Returns the path (user-expanded); creates nothing."""
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        raise OutputError(f"{what} needs a file name.")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{what} '{path}' must end in {' or '.join(suffixes)}.")
    if path.is_dir():
        raise OutputError(f"{what} '{path}' is a folder; give a file path.")
    if path.exists():
        if not os.path.isfile(path) and not _is_char_device(path):
            raise OutputError(f"{what} '{path}' exists and is not a regular file.")
        if _is_char_device(path):   # /dev/null and friends: writing is fine
            return path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)   # opening for append changes nothing
            os.close(fd)
        except OSError as err:
            raise OutputError(f"{what} '{path}' cannot be written: {_reason(err)}.") from None
    _probe_writable(_nearest_existing(path, what), path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "The output folder") -> Path:
    """Refuse a folder path that is a file, lies under a file, or cannot be created / written."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} '{path}' is a file, not a folder; give a folder path.")
    folder = path if path.is_dir() else _nearest_existing(path, what)
    _probe_writable(folder, path, what)
    return path


def _is_char_device(path: Path) -> bool:
    import stat

    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


__all__ = ["check_output_dir", "check_output_file", "check_outputs"]


def check_outputs(args, outputs: dict[str, tuple[str, str]]) -> None:
    """The one output check every command gets from the CLI before its work starts.

    `outputs` maps an argparse dest to (kind, flag), kind "file" or "dir" (a command module's
    `OUTPUTS`); values None, "" or "-" (stdout) are skipped."""
    for dest, (kind, flag) in outputs.items():
        value = getattr(args, dest, None)
        if value is None or str(value) in ("", "-") or isinstance(value, bool):
            continue
        if kind == "dir":
            check_output_dir(value, flag)
        else:
            check_output_file(value, flag)
