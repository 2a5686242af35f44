"""Many scenes, many processes: ``segment predict --input DIR|LIST.txt|COLLECTION.json --out DIR``
maps each scene once, resumes a killed batch from its manifest, shards over torchrun ranks (one
node or two) and records the maps in the catalog once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import sentinel2 as s2
from tests.support.batch import N_SCENES, accelerate_launch, child_env, free_port, snapshot, torchrun, write_scenes
from tests.support.segmentation import trained_on_scene
from workbench.data import geotiff


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("manyhome")
    run, cli = trained_on_scene(home)
    return home, run, cli


def predicted_rows(home: Path, out: Path) -> list[tuple]:
    """The catalog's ``predicted`` rows of the masks in ``out``."""
    with sqlite3.connect(home / "data" / "catalog.sqlite") as conn:
        rows = conn.execute("SELECT path, model_id, water_fraction, width, extra FROM tiles "
                            "WHERE source = 'predicted' ORDER BY path").fetchall()
    return [r for r in rows if Path(r[0]).parent == out]


def test_a_list_of_scenes_maps_each_once_and_resumes(trained, tmp_path):
    home, run, cli = trained
    scenes = write_scenes(tmp_path / "in", n=3)
    listing = tmp_path / "scenes.txt"
    listing.write_text("# three scenes\n\nin/scene0.tif\n" + f"{scenes[1]}\n" + "  in/scene2.tif  \n")
    out = tmp_path / "maps"
    code, stdout, err = cli("segment", "predict", "--run", run, "--input", listing, "--out", out, "--no-progress",
                            "--to-catalog")
    assert code == 0, err
    masks = sorted(p.name for p in out.glob("*_mask.tif"))
    assert masks == ["scene0_mask.tif", "scene1_mask.tif", "scene2_mask.tif"]
    entries = {p.stem: json.loads(p.read_text()) for p in (out / "done").glob("*.json")}
    assert sorted(entries) == ["scene0", "scene1", "scene2"]
    assert entries["scene0"]["size"] == (out / "scene0_mask.tif").stat().st_size
    rows = predicted_rows(home, out)
    assert [Path(r[0]).name for r in rows] == masks and {r[1] for r in rows} == {run.name}
    assert all(r[3] == 128 for r in rows) and json.loads(rows[0][4])["input"] == str(scenes[0])
    assert "3 row(s) added" in stdout

    before = snapshot(out)
    (out / "scene1_mask.tif").unlink()                     # lost: mapped again; the others are kept
    code, stdout, err = cli("segment", "predict", "--run", run, "--input", listing, "--out", out, "--no-progress",
                            "--to-catalog")
    assert code == 0, err
    after = snapshot(out)
    for name in ("scene0_mask.tif", "scene2_mask.tif", "done/scene0.json", "done/scene2.json"):
        assert after[name] == before[name], name
    assert after["scene1_mask.tif"][0] == before["scene1_mask.tif"][0]       # the same map, written again
    assert after["scene1_mask.tif"][1:] != before["scene1_mask.tif"][1:]
    assert predicted_rows(home, out) == rows and "0 row(s) added (source predicted), 3 already there" in stdout


def test_a_manifest_of_another_batch_is_refused_and_nothing_changes(trained, tmp_path):
    home, run, cli = trained
    write_scenes(tmp_path / "in", n=2)
    out = tmp_path / "maps"
    code, _, err = cli("segment", "predict", "--run", run, "--input", tmp_path / "in", "--out", out, "--no-progress")
    assert code == 0, err
    before = snapshot(out)
    code, stdout, err = cli("segment", "predict", "--run", run, "--input", tmp_path / "in", "--out", out,
                            "--window", "64", "--no-progress")
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
    assert str(out / "manifest.json") in err and "window 64 here, 256 there" in err and "Traceback" not in err
    s2.write_dn_geotiff(tmp_path / "in" / "extra.tif", s2.ground(64, seed=3))     # another scene list
    code, _, err = cli("segment", "predict", "--run", run, "--input", tmp_path / "in", "--out", out, "--no-progress")
    assert code == 2 and "scenes: 1 here not in it, 0 in it not here" in err, err
    assert snapshot(out) == before


def test_two_scenes_with_one_output_name_are_refused(trained, tmp_path):
    _, run, cli = trained
    a = s2.write_dn_geotiff(tmp_path / "a" / "x.tif", s2.ground(64, seed=1))
    b = s2.write_dn_geotiff(tmp_path / "b" / "X.tif", s2.ground(64, seed=2))
    listing = tmp_path / "l.txt"
    listing.write_text(f"{a}\n{b}\n")
    code, _, err = cli("segment", "predict", "--run", run, "--input", listing, "--out", tmp_path / "o", "--no-progress")
    assert code == 2 and "x_mask.tif" in err.lower() and str(a) in err and not (tmp_path / "o").exists(), err
    listing.write_text(f"{a}\nmissing.tif\n")
    code, _, err = cli("segment", "predict", "--run", run, "--input", listing, "--out", tmp_path / "o", "--no-progress")
    assert code == 2 and f"{listing}:2: missing.tif" in err and not (tmp_path / "o").exists(), err


def test_a_batch_that_cannot_write_its_outputs_is_refused_before_it_maps(trained, tmp_path):
    """--to-catalog with --catalog-immutable (a reader's promise), --out under a file: one line each,
    before the run loads; nothing is written and the catalog is unchanged."""
    home, run, cli = trained
    write_scenes(tmp_path / "in", n=2, size=64)
    (tmp_path / "file").write_bytes(b"x")
    catalog = home / "data" / "catalog.sqlite"
    before = catalog.stat().st_mtime_ns
    for args, words in (
            (("--out", tmp_path / "o", "--to-catalog", "--catalog-immutable"),
             ("--catalog-immutable", "--to-catalog writes the catalog")),
            (("--out", tmp_path / "file" / "maps"), ("--out", "is a file, not a folder"))):
        code, _, err = cli("segment", "predict", "--run", run, "--input", tmp_path / "in", "--no-progress", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), err
    assert not (tmp_path / "o").exists() and catalog.stat().st_mtime_ns == before


def _items(tmp_path: Path, n: int) -> list[Path]:
    """``n`` STAC items over COGs, each in a folder of its own, with ids of their own."""
    paths = []
    for i in range(n):
        p = s2.write_stac_item(tmp_path / f"item{i}" / "item.json", s2.ground(96, seed=20 + i))
        d = json.loads(p.read_text())
        d["id"] = f"S2B_T33TUL_2023041{i}"
        p.write_text(json.dumps(d))
        paths.append(p)
    return paths


def test_a_stac_collection_and_an_item_collection_each_map_their_items(trained, tmp_path):
    import pystac

    _, run, cli = trained
    items = _items(tmp_path, 2)
    collection = pystac.Collection("scenes", "two scenes", pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])))
    for p in items:
        collection.add_item(pystac.Item.from_file(str(p)))
    collection.normalize_hrefs(str(tmp_path / "stac"))
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    # saving moved the items' JSON beside the collection; their assets stay where they were
    code, _, err = cli("segment", "predict", "--run", run, "--input", tmp_path / "stac" / "collection.json",
                       "--out", tmp_path / "a", "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "a").glob("*_mask.tif")) == [
        "S2B_T33TUL_20230410_mask.tif", "S2B_T33TUL_20230411_mask.tif"]

    features = [json.loads(p.read_text()) for p in items]
    for f, p in zip(features, items):            # one file: the asset hrefs made absolute
        for asset in f["assets"].values():
            asset["href"] = str((p.parent / asset["href"]).resolve())
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    code, _, err = cli("segment", "predict", "--run", run, "--input", search, "--out", tmp_path / "b", "--no-progress")
    assert code == 0, err
    for name in ("S2B_T33TUL_20230410_mask.tif", "S2B_T33TUL_20230411_mask.tif"):
        assert np.array_equal(geotiff.read(tmp_path / "a" / name), geotiff.read(tmp_path / "b" / name))
    entry = json.loads((tmp_path / "b" / "done" / "S2B_T33TUL_20230410.json").read_text())
    assert entry["scene"] == f"{search}#S2B_T33TUL_20230410"
    assert entry["summary"]["scene_id"] == "S2B_T33TUL_20230410"


# ------------------------------------------------------------------------ many processes


def predict_args(run: Path, src: Path, out: Path) -> list[str]:
    # 4 flips on 64 px windows: a second or two a scene, so the kill lands mid-batch
    # the run as a word, not --run: torchrun's parser would refuse --run as an abbreviation of its --run-path
    return ["-m", "workbench", "segment", "predict", str(run), "--input", str(src), "--out", str(out),
            "--window", "64", "--tta", "flips", "--no-progress", "--to-catalog"]


def same_maps(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*_mask.tif"))
    assert names == sorted(p.name for p in b.glob("*_mask.tif")) and len(names) == N_SCENES
    for n in names:
        ia, ib = geotiff.read_info(a / n), geotiff.read_info(b / n)
        assert (ia.crs, ia.transform, ia.width, ia.height) == (ib.crs, ib.transform, ib.width, ib.height), n
        assert np.array_equal(geotiff.read(a / n), geotiff.read(b / n)), n


@pytest.mark.slow
def test_a_killed_two_process_batch_resumes_and_maps_every_scene_once(trained, tmp_path, one_torch_thread):
    home, run, cli = trained
    src = tmp_path / "in"
    write_scenes(src)
    env = child_env(home)
    code, _, err = cli(*predict_args(run, src, tmp_path / "one")[2:])      # one process, one thread, as the ranks
    assert code == 0, err

    out = tmp_path / "two"
    launch = torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    p = subprocess.Popen([*launch, *predict_args(run, src, out)], env=env, start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not list((out / "done").glob("*.json")):
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    finished = sorted(q.stem for q in (out / "done").glob("*.json"))
    assert 1 <= len(finished) < N_SCENES, finished
    kept = {n: snapshot(out)[f"{n}_mask.tif"] for n in finished}
    assert predicted_rows(home, out) == []                       # the killed batch never reached the catalog

    again = subprocess.run([*torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                                      str(free_port())), *predict_args(run, src, out)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    after = snapshot(out)
    for n, before in kept.items():
        assert after[f"{n}_mask.tif"] == before, n              # finished scenes not redone
    entries = [json.loads(q.read_text()) for q in sorted((out / "done").glob("*.json"))]
    assert len(entries) == N_SCENES and {e["summary"]["rank"] for e in entries} == {0, 1}
    assert not [q for q in out.iterdir() if q.name.startswith(".")]      # no temporaries left
    same_maps(out, tmp_path / "one")
    rows = predicted_rows(home, out)
    assert len(rows) == N_SCENES and len({r[0] for r in rows}) == N_SCENES


@pytest.mark.slow
def test_two_nodes_rendezvousing_on_localhost_map_every_scene_once(trained, tmp_path):
    home, run, _ = trained
    src = tmp_path / "in"
    write_scenes(src, size=96)
    out, port, env = tmp_path / "maps", free_port(), child_env(home)
    args = [*predict_args(run, src, out)]
    args[args.index("--tta") + 1] = "none"
    nodes = [subprocess.Popen([*torchrun("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                                         "--master-addr", "127.0.0.1", "--master-port", str(port)), *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [n.communicate(timeout=120)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], logs
    entries = [json.loads(q.read_text()) for q in sorted((out / "done").glob("*.json"))]
    assert len(entries) == N_SCENES
    ranks = {e["name"]: e["summary"]["rank"] for e in entries}
    assert ranks == {f"scene{i}": i % 2 for i in range(N_SCENES)}         # the sorted list, round robin
    assert f"{N_SCENES} scene(s) finished" in logs[0] and "scene(s) finished" not in logs[1]


@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes_maps_every_scene_once(trained, tmp_path, one_torch_thread):
    """``accelerate launch --multi_gpu --num_processes 2`` on CPUs: accelerate 1.x starts the ranks
    with torchrun's agent only for --multi_gpu (with --cpu it runs ONE process, no RANK, unless
    an MPI hostfile is given), and with no GPU the ranks run on the CPU; ``--device cpu`` keeps
    them there where a GPU is present too."""
    home, run, cli = trained
    src = tmp_path / "in"
    write_scenes(src, size=96)
    args = [*predict_args(run, src, tmp_path / "one")[2:], "--device", "cpu"]
    args[args.index("--tta") + 1] = "none"
    code, _, err = cli(*args)                                       # one process, one thread, as the ranks
    assert code == 0, err

    out = tmp_path / "two"
    env = {**child_env(home), "HF_HOME": str(tmp_path / "hf")}     # no user accelerate config applies
    launch = accelerate_launch("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
                               "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()))
    wb = [*predict_args(run, src, out), "--device", "cpu"]
    wb[wb.index("--tta") + 1] = "none"
    p = subprocess.run([*launch, *wb], env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    same_maps(out, tmp_path / "one")
    entries = [json.loads(q.read_text()) for q in sorted((out / "done").glob("*.json"))]
    assert {e["name"]: e["summary"]["rank"] for e in entries} == {f"scene{i}": i % 2 for i in range(N_SCENES)}
    assert p.stdout.count(f"{N_SCENES} scene(s) finished") == 1
    rows = predicted_rows(home, out)
    assert len(rows) == N_SCENES and len({r[0] for r in rows}) == N_SCENES
