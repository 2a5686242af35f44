"""What scenes an input names: a folder, a text list, a STAC catalog / collection / item collection;
each scene's output name, and two scenes with one name refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import sentinel2 as s2
from workbench.data.inputs import describe
from workbench.data.scene_list import Scene, is_many, scene_name, scenes_of
from workbench.errors import WorkbenchError


def _raster(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")                      # listing never opens a scene
    return path


def test_a_text_list_names_paths_relative_to_itself_and_keeps_gdal_paths(tmp_path):
    a = _raster(tmp_path / "data" / "b.tif")
    _raster(tmp_path / "data" / "a.tif")
    listing = tmp_path / "lists" / "scenes.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my scenes\n\n  ../data/a.tif\n{a}\n/vsicurl/https://host/x/T33TUL.tif\n"
                       "SENTINEL2_L2A:/p/S2B_MSIL2A_X.SAFE/MTD_MSIL2A.xml:10m:EPSG_32633\n")
    got = scenes_of(listing)
    assert got == sorted([Scene(str(tmp_path / "lists" / ".." / "data" / "a.tif"), "a"), Scene(str(a), "b"),
                          Scene("/vsicurl/https://host/x/T33TUL.tif", "T33TUL"),
                          Scene("SENTINEL2_L2A:/p/S2B_MSIL2A_X.SAFE/MTD_MSIL2A.xml:10m:EPSG_32633", "S2B_MSIL2A_X")],
                         key=lambda s: s.path)
    assert is_many(listing) and is_many(tmp_path / "data") and not is_many(a)


def test_a_missing_listed_file_is_one_line_naming_the_list_and_line(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("# none\nnot-here.tif\n")
    with pytest.raises(WorkbenchError, match=r"l\.txt:2: not-here\.tif: no such file or folder"):
        scenes_of(listing)
    listing.write_text("# only comments\n\n")
    with pytest.raises(WorkbenchError, match="no scene to predict"):
        scenes_of(listing)


def test_two_scenes_with_one_output_name_are_refused(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text(f"{_raster(tmp_path / 'a' / 'x.tif')}\n{_raster(tmp_path / 'b' / 'x.vrt')}\n")
    with pytest.raises(WorkbenchError, match="would both be written as x_mask.tif"):
        scenes_of(listing)


def test_names_are_file_names():
    assert scene_name("/d/S2B_MSIL2A_20230415.SAFE") == "S2B_MSIL2A_20230415"
    assert scene_name("/vsicurl/https://h/a b/T33TUL.tif?sig=1") == "T33TUL"
    assert scene_name("https://h/x/scene one.tif") == "scene_one"


def _items(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = s2.write_stac_item(tmp_path / f"i{i}" / "item.json", s2.ground(48, seed=i), extras=False, scl=False)
        d = json.loads(p.read_text())
        d["id"] = f"scene-{i}"
        p.write_text(json.dumps(d))
        paths.append(p)
    return paths


def test_a_catalog_with_a_child_collection_names_every_item(tmp_path):
    import pystac

    root = pystac.Catalog("root", "scenes")
    child = pystac.Collection("child", "some", pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                                             pystac.TemporalExtent([[None, None]])))
    root.add_child(child)
    items = _items(tmp_path, 3)
    root.add_item(pystac.Item.from_file(str(items[0])))
    for p in items[1:]:
        child.add_item(pystac.Item.from_file(str(p)))
    root.normalize_hrefs(str(tmp_path / "stac"))
    root.save(pystac.CatalogType.SELF_CONTAINED)
    got = scenes_of(tmp_path / "stac" / "catalog.json")
    assert [s.name for s in sorted(got, key=lambda s: s.name)] == ["scene-0", "scene-1", "scene-2"]
    assert all(Path(s.path).is_file() for s in got) and is_many(tmp_path / "stac" / "catalog.json")
    assert not is_many(items[0])


def test_an_item_collection_names_its_items_inside_the_one_file(tmp_path):
    features = []
    for p in _items(tmp_path, 2):
        d = json.loads(p.read_text())
        for asset in d["assets"].values():
            asset["href"] = str((p.parent / asset["href"]).resolve())
        features.append(d)
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    got = scenes_of(search)
    assert got == [Scene(f"{search}#scene-0", "scene-0"), Scene(f"{search}#scene-1", "scene-1")]
    scene = describe(got[1].path)
    assert scene.scene_id == "scene-1" and scene.names[:4] == ["B02", "B03", "B04", "B08"]
    with pytest.raises(WorkbenchError, match="holds no item 'scene-9'"):
        describe(f"{search}#scene-9")
    features[1]["id"] = "renamed"                # a changed file is read again, not answered from memory
    search.write_text(json.dumps({"type": "FeatureCollection", "features": features, "note": "changed"}))
    assert describe(f"{search}#renamed").scene_id == "renamed"
    with pytest.raises(WorkbenchError, match="holds no item 'scene-1'"):
        describe(f"{search}#scene-1")
    hashed = tmp_path / "item#1.json"             # a '#' in a file's own name is not an item reference
    hashed.write_text(json.dumps(features[0]))
    assert describe(hashed).scene_id == "scene-0"


def test_an_empty_item_collection_is_no_scene(tmp_path):
    """An empty search result saved to a file: one line saying there is nothing to predict."""
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    assert is_many(search)
    with pytest.raises(WorkbenchError, match="search.json: no scene to predict"):
        scenes_of(search)
