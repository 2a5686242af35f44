"""The manifest of a batch: what a many-scene run is, and which of its scenes are finished.

    OUT/manifest.json          the batch's identity: run, checkpoint checksum, the options that
                               change outputs, the scene list (written once, by the main rank)
    OUT/done/<name>.json       one entry per finished scene: its output's size and sha256 and the
                               summary of the map (written by the rank that mapped it)

Why files and not a table: the ranks of a batch run on several processes or nodes that share
only the output folder; several writers on one file (or one SQLite database on a network
file system) lose or corrupt updates. Here no two processes ever write one file: the entry of
a scene is written, atomically (a temporary name, then a rename), by the one rank whose share
holds that scene, after its output is in place; a rank killed half-way leaves either no entry
or a whole one.

Resuming: a scene whose entry is valid (the output exists and has the entry's size and
checksum) is skipped; everything else is mapped again. A manifest whose identity is not this
batch's (another run, other options, other scenes) is refused, one line naming the manifest
and what differs, before anything is written: mixing two batches' maps in one folder would
give a set of maps no single run made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.files import write_json_atomic

VERSION = 1


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Manifest:
    """The manifest of the batch ``identity`` in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path, identity: Mapping[str, Any]):
        self.folder = Path(folder)
        self.identity = {"version": VERSION, **identity}
        self.path = self.folder / "manifest.json"
        self.done = self.folder / "done"
        self.batch = hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ---- the batch ------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a manifest of another batch in this folder (nothing is written)."""
        if not self.path.exists():
            return
        try:
            theirs = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise WorkbenchError(f"{self.path}: not a batch manifest ({getattr(exc, 'msg', exc)}); give another --out "
                                 "or remove it") from None
        if not isinstance(theirs, dict) or "identity" not in theirs:
            raise WorkbenchError(f"{self.path}: not a batch manifest (no identity); give another --out")
        diff = differences(self.identity, theirs["identity"])
        if diff:
            raise WorkbenchError(f"{self.path}: a manifest of another batch ({diff}); give another --out, or remove "
                                 f"{self.folder} to start over")

    def write(self) -> None:
        """Write the identity once (the main rank, after :meth:`check`): a resumed batch keeps it."""
        if not self.path.exists():
            write_json_atomic(self.path, {"batch": self.batch, "identity": self.identity})

    # ---- scenes ---------------------------------------------------------------------------
    def entry_path(self, name: str) -> Path:
        return self.done / f"{name}.json"

    def entry(self, name: str, verify: bool = True) -> dict | None:
        """The entry of a finished scene, or None when it is missing or no longer matches its output
        (its size, and with ``verify`` its sha256: what a resume decides by; the end of a batch,
        reading entries its ranks have just written, checks the size only)."""
        p = self.entry_path(name)
        try:
            e = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(e, dict) or e.get("batch") != self.batch:
            return None
        out = Path(str(e.get("out", "")))
        try:
            if out.stat().st_size != e.get("size") or (verify and file_sha256(out) != e.get("sha256")):
                return None
        except OSError:
            return None
        return e

    def record(self, name: str, scene: str, out: str | Path, summary: Mapping[str, Any]) -> dict:
        """The entry of a scene whose output ``out`` is written, itself written atomically."""
        out = Path(out)
        e = {"batch": self.batch, "name": name, "scene": scene, "out": str(out), "size": out.stat().st_size,
             "sha256": file_sha256(out), "summary": dict(summary)}
        write_json_atomic(self.entry_path(name), e)
        return e

    def entries(self, names: Iterable[str], verify: bool = True) -> dict[str, dict]:
        """The valid entries among ``names`` (a missing or stale one left out; see ``entry``)."""
        out = {}
        for n in names:
            e = self.entry(n, verify)
            if e is not None:
                out[n] = e
        return out

    def finished(self) -> int:
        """How many entries exist (cheap: no checksum), for a progress count across ranks."""
        return sum(1 for _ in self.done.glob("*.json")) if self.done.is_dir() else 0


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """What differs between two identities, in words: ``window 256 here, 128 there; 2 scenes not
    in it``."""
    said = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str):
            continue
        if key == "scenes" and isinstance(a, list) and isinstance(b, list):
            new, gone = len(set(a) - set(b)), len(set(b) - set(a))
            said.append(f"scenes: {new} here not in it, {gone} in it not here")
        else:
            said.append(f"{key} {_short(a)} here, {_short(b)} there")
    return "; ".join(said)


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."
