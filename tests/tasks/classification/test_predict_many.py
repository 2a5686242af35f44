"""Many scenes: ``classify predict --input DIR|LIST.txt|COLLECTION.json --out DIR`` gives each scene
the class map a one-scene run gives it, once, resumes from its manifest, refuses another batch's
manifest and bad outputs in one line, and shards over two torchrun processes."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support import sentinel2 as s2
from tests.support.batch import N_SCENES, child_env, free_port, snapshot, torchrun, write_scenes
from tests.support.classification import trained_classifier
from workbench.data import geotiff


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("clsmany")
    run, cli = trained_classifier(home)
    return home, run, cli


def same_map(a: Path, b: Path) -> None:
    ia, ib = geotiff.read_info(a), geotiff.read_info(b)
    assert (ia.crs, ia.transform, ia.width, ia.height) == (ib.crs, ib.transform, ib.width, ib.height), (a, b)
    assert np.array_equal(geotiff.read(a), geotiff.read(b)), (a, b)


def predicted_rows(home: Path, out: Path) -> list[tuple]:
    with sqlite3.connect(home / "data" / "catalog.sqlite") as conn:
        rows = conn.execute("SELECT path, model_id, pred_label, width, bands, extra FROM tiles "
                            "WHERE source = 'predicted' ORDER BY path").fetchall()
    return [r for r in rows if Path(r[0]).parent == out]


def test_a_batch_gives_each_scene_its_one_scene_map_once_and_a_rerun_maps_nothing(trained, tmp_path,
                                                                                  one_torch_thread):
    home, run, cli = trained
    scenes = write_scenes(tmp_path / "in", n=3)
    listing = tmp_path / "scenes.txt"
    listing.write_text("# three scenes\nin/scene0.tif\n" + f"{scenes[1]}\n" + "in/scene2.tif\n")
    out = tmp_path / "maps"
    code, stdout, err = cli("classify", "predict", "--run", run, "--input", listing, "--out", out, "--no-progress",
                            "--to-catalog")
    assert code == 0, err
    names = sorted(p.name for p in out.glob("*_classes.tif"))
    assert names == ["scene0_classes.tif", "scene1_classes.tif", "scene2_classes.tif"]
    for scene in scenes:                         # the very map a one-scene run writes
        one = tmp_path / "one" / f"{scene.stem}.tif"
        code, _, err = cli("classify", "predict", "--run", run, "--input", scene, "--out", one, "--no-progress")
        assert code == 0, err
        same_map(out / f"{scene.stem}_classes.tif", one)
    entries = {p.stem: json.loads(p.read_text()) for p in (out / "done").glob("*.json")}
    assert sorted(entries) == ["scene0", "scene1", "scene2"]
    classes = json.loads((run / "classes.json").read_text())["classes"]
    labels = geotiff.read(out / "scene0_classes.tif")[0]
    assert entries["scene0"]["summary"]["counts"] == {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    assert stdout.splitlines()[2].split()[:len(classes) + 2] == ["scene", *classes, "no"]

    rows = predicted_rows(home, out)              # a row per map: the run, no scene-wide label
    assert [Path(r[0]).name for r in rows] == names and {r[1] for r in rows} == {run.name}
    assert {r[2] for r in rows} == {None} and all(r[3] == 4 and json.loads(r[4]) == ["class"] for r in rows)
    extra = json.loads(rows[0][5])
    assert extra["input"] == str(scenes[0]) and extra["windows"] == entries["scene0"]["summary"]["counts"]
    assert extra["classes"] == classes and extra["stride"] == extra["size"] == 32
    assert "3 row(s) added" in stdout

    before = snapshot(out)
    code, stdout, err = cli("classify", "predict", "--run", run, "--input", listing, "--out", out, "--no-progress",
                            "--to-catalog")
    assert code == 0, err
    assert snapshot(out) == before                # nothing mapped, nothing rewritten
    assert "3 scene(s) finished" in stdout and "0 row(s) added (source predicted), 3 already there" in stdout
    assert predicted_rows(home, out) == rows


def test_a_manifest_of_another_run_or_other_options_is_refused_and_nothing_changes(trained, tmp_path):
    home, run, cli = trained
    write_scenes(tmp_path / "in", n=2)
    out = tmp_path / "maps"
    code, _, err = cli("classify", "predict", "--run", run, "--input", tmp_path / "in", "--out", out, "--no-progress")
    assert code == 0, err
    before = snapshot(out)
    other = run.parent / f"{run.name}-copy"       # the same weights, another run
    shutil.copytree(run, other)
    code, stdout, err = cli("classify", "predict", "--run", other, "--input", tmp_path / "in", "--out", out,
                            "--no-progress")
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(out / "manifest.json") in err and "a manifest of another batch (run " in err
    code, _, err = cli("classify", "predict", "--run", run, "--input", tmp_path / "in", "--out", out,
                       "--stride", "16", "--no-progress")
    assert code == 2 and "stride 16 here, 32 there" in err, err
    assert snapshot(out) == before


def test_bad_batch_inputs_are_one_line_and_nothing_is_written(trained, tmp_path):
    _, run, cli = trained
    scenes = write_scenes(tmp_path / "in", n=2)
    (tmp_path / "file.tif").write_bytes(b"x")
    old = tmp_path / "old"
    old.mkdir()
    previous = shutil.copy(scenes[1], old / "scene0_classes.tif")       # a map of an earlier batch, listed
    listed = tmp_path / "l.txt"
    listed.write_text(f"{scenes[0]}\n{previous}\n")
    small = tmp_path / "small"
    s2.write_dn_geotiff(small / "a.tif", s2.ground(128, seed=1))
    geotiff.write(small / "b.tif", s2.ground(64, seed=2).dn()[:, :24, :24], s2.ground(64, seed=2).transform,
                  s2.ground(64, seed=2).crs, nodata=0, band_names=list(s2.DEFAULT_BANDS))
    fresh = tmp_path / "fresh"
    cases = [
        (("--input", tmp_path / "in", "--out", tmp_path / "file.tif"), ("--out", "file.tif", "not a file")),
        (("--input", tmp_path / "in", "--out", tmp_path / "in"), ("new folder", "not the input folder")),
        (("--input", listed, "--out", old), (str(previous), "one of the batch's outputs")),
        (("--input", tmp_path / "in", "--out", fresh, "--probabilities", fresh / "p.tif"),
         ("--probabilities", "one scene")),
        (("--input", scenes[0], "--out", fresh / "x.tif", "--to-catalog"), ("--to-catalog", "many scenes")),
        (("--input", small, "--out", fresh), ("b.tif", "24x24", "32 px")),
        (("--input", tmp_path / "in", "--out", fresh, "--stride", "40"), ("stride 40",)),
        (("--to-catalog",), ("--to-catalog", "--input")),
        (("--input", tmp_path / "in", "--out", tmp_path / "file.tif" / "maps"), ("--out", "is a file, not a folder")),
    ]
    for args, words in cases:
        code, stdout, err = cli("classify", "predict", "--run", run, "--no-progress", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (args, err)
        assert all(w in lines[0] for w in words), (words, lines[0])
        assert not fresh.exists() and sorted(p.name for p in old.iterdir()) == ["scene0_classes.tif"], args


@pytest.mark.slow
def test_two_processes_classify_each_scene_once_as_one_process_does(trained, tmp_path, one_torch_thread):
    home, run, cli = trained
    src = tmp_path / "in"
    write_scenes(src)
    code, _, err = cli("classify", "predict", "--run", run, "--input", src, "--out", tmp_path / "one",
                       "--no-progress")
    assert code == 0, err
    out = tmp_path / "two"

    def launch() -> subprocess.CompletedProcess:
        # the run as a word, not --run: torchrun's parser would take --run for its --run-path
        return subprocess.run([*torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                                         str(free_port())), "-m", "workbench", "classify", "predict", str(run),
                               "--input", str(src), "--out", str(out), "--no-progress", "--to-catalog"],
                              env=child_env(home), capture_output=True, text=True, timeout=180)

    p = launch()
    assert p.returncode == 0, p.stdout + p.stderr
    for i in range(N_SCENES):
        same_map(out / f"scene{i}_classes.tif", tmp_path / "one" / f"scene{i}_classes.tif")
    entries = [json.loads(q.read_text()) for q in sorted((out / "done").glob("*.json"))]
    assert {e["name"]: e["summary"]["rank"] for e in entries} == {f"scene{i}": i % 2 for i in range(N_SCENES)}
    assert p.stdout.count(f"{N_SCENES} scene(s) finished") == 1 and f"{N_SCENES} row(s) added" in p.stdout
    rows = predicted_rows(home, out)
    assert len(rows) == N_SCENES and len({r[0] for r in rows}) == N_SCENES

    before = snapshot(out)
    p = launch()                                    # a finished batch: nothing to map, no row to add
    assert p.returncode == 0, p.stdout + p.stderr
    assert snapshot(out) == before and f"0 row(s) added (source predicted), {N_SCENES} already there" in p.stdout
