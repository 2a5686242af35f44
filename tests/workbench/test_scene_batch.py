"""The batch engine on its own, with a task of a few lines (no model): each scene mapped once, a
finished batch maps nothing, a lost output is mapped again, a refusal stops the batch before
anything is written, and the JSON report lists every scene in order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench import distributed, scene_batch
from workbench.errors import WorkbenchError
from workbench.files import replacing

ONE = distributed.Ranks()


def scenes_in(folder: Path, n: int = 3) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"s{i}.tif").write_text(f"scene {i}")
    return folder


def copying_task(calls: list[str], refuse: str | None = None) -> scene_batch.Batch:
    """A task whose 'map' of a scene is its text upper-cased, written atomically."""
    def check(mine):
        if refuse and any(s.name == refuse for s in mine):
            raise WorkbenchError(f"{refuse}: cannot be read")

    def predict(scene, out: Path, progress: bool):
        calls.append(scene.name)
        with replacing(out) as tmp:
            tmp.write_text(Path(scene.path).read_text().upper())
        return str(out), {"chars": len(Path(scene.path).read_text())}

    return scene_batch.Batch(run="/runs/r", identity={"run": "/runs/r", "option": 1}, suffix="_up.txt", check=check,
                             predict=predict, columns=["scene", "chars"], row=lambda e: [e["name"],
                                                                                        e["summary"]["chars"]])


def test_each_scene_once_then_nothing_then_only_what_was_lost(tmp_path, capsys):
    src, out, calls = scenes_in(tmp_path / "in"), tmp_path / "out", []
    scenes = scene_batch.list_scenes(src, out, "_up.txt", "copies")
    assert [s.name for s in scenes] == ["s0", "s1", "s2"]
    assert scene_batch.run(copying_task(calls), scenes, out, ONE, as_json=True, progress=False) == 0
    assert calls == ["s0", "s1", "s2"] and (out / "s1_up.txt").read_text() == "SCENE 1"
    report = json.loads(capsys.readouterr().out)
    assert [(Path(s["scene"]).name, s["chars"], s["rank"]) for s in report["scenes"]] == [
        ("s0.tif", 7, 0), ("s1.tif", 7, 0), ("s2.tif", 7, 0)]
    assert report["catalog_rows_added"] is None and report["manifest"] == str(out / "manifest.json")

    calls.clear()
    scene_batch.run(copying_task(calls), scenes, out, ONE, progress=False)
    assert calls == [] and "3 scene(s) finished" in capsys.readouterr().out
    (out / "s2_up.txt").write_text("changed")       # no longer the file its entry describes
    scene_batch.run(copying_task(calls), scenes, out, ONE, progress=False)
    assert calls == ["s2"] and (out / "s2_up.txt").read_text() == "SCENE 2"


def test_a_refusal_or_a_catalog_the_task_has_no_rows_for_stops_before_anything_is_written(tmp_path):
    src, out, calls = scenes_in(tmp_path / "in"), tmp_path / "out", []
    scenes = scene_batch.list_scenes(src, out, "_up.txt", "copies")
    with pytest.raises(WorkbenchError, match="s1: cannot be read"):
        scene_batch.run(copying_task(calls, refuse="s1"), scenes, out, ONE, progress=False)
    with pytest.raises(WorkbenchError, match="no catalog rows"):
        scene_batch.run(copying_task(calls), scenes, out, ONE, to_catalog=True, progress=False)
    assert calls == [] and not out.exists()


def test_outputs_never_replace_inputs(tmp_path):
    src = scenes_in(tmp_path / "in")
    with pytest.raises(WorkbenchError, match="new folder for the copies"):
        scene_batch.list_scenes(src, src, "_up.txt", "copies")
    (tmp_path / "x").write_text("")
    with pytest.raises(WorkbenchError, match="not a file"):
        scene_batch.list_scenes(src, tmp_path / "x", "_up.txt", "copies")
    earlier = tmp_path / "out" / "s0_up.tif"           # an earlier batch's output, listed as a scene
    earlier.parent.mkdir()
    earlier.write_text("")
    listing = tmp_path / "l.txt"
    listing.write_text(f"{src / 's0.tif'}\n{earlier}\n")
    with pytest.raises(WorkbenchError, match="s0_up.tif: is one of the batch's outputs"):
        scene_batch.list_scenes(listing, tmp_path / "out", "_up.tif", "copies")
