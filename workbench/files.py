"""Writing files so that nothing is ever half-written: a temporary name beside the target, then a rename."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


def temporary_name(path: str | Path, keep_suffix: bool = False) -> Path:
    """``.name.tmp-PID`` beside ``path`` (``.stem.tmp-PID.suffix`` with ``keep_suffix``, for
    writers that pick their format by the extension): the same folder, so the rename is atomic."""
    path = Path(path)
    if keep_suffix:
        return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def replacing(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """``with replacing(out) as tmp: write(tmp)``: the block writes (and checks) ``tmp``; when it
    ends without an error ``tmp`` replaces ``path``, else it is removed and ``path`` is left as it
    was. A full disk or an unwritable folder is one line naming ``path``."""
    path = Path(path)
    tmp = temporary_name(path, keep_suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise WorkbenchError(f"{path}: could not be written ({exc.strerror or exc})") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:             # a name the file system refused was never created
            pass


def may_write(p: Path, by_anyone: bool = False) -> bool:
    """May this process write ``p`` (a file or folder), and does ``p`` carry a write bit at all?
    A file or folder without any write bit was made read-only on purpose: the workbench
    leaves it alone even as root, whom the permission bits do not stop. ``by_anyone``: only
    the bits (could some user write it?), not this process's own access."""
    try:
        bits = p.stat().st_mode & 0o222
    except OSError:
        return False
    return bool(bits) and (by_anyone or os.access(p, os.W_OK))


def check_can_create(path: str | Path, label: str, folder: bool = True) -> None:
    """Refuse, before any work, an output folder (``folder``) or file that cannot be made: one
    under a regular file, a folder that is a file, or one in a folder this process cannot write.
    The nearest existing ancestor decides (what ``mkdir -p`` and the final rename will meet), so
    an hour of work never ends in "Not a directory"."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() and (probe != path or folder):
        raise WorkbenchError(f"{label} {path}: {probe} is a file, not a folder")
    folder = probe if probe.is_dir() else probe.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WorkbenchError(f"{label} {path}: {folder} cannot be written")


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON under a temp name then rename, so readers never see half a file."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)
