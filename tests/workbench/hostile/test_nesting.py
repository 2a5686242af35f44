"""Input nested deeper than any real file (a GeoJSON area, a STAC item, a YAML preset or prompt set,
a --set value): the parsers recurse once per level, and the RecursionError must be one line naming
the file or flag, exit 2, with nothing written."""

from __future__ import annotations

import pytest

DEPTH = 100_000


def refused(code: int, err: str, needle: str) -> None:
    assert code == 2 and "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "nested too deeply" in lines[0], err[-2000:]


@pytest.mark.parametrize("text", ["[" * DEPTH + "]" * DEPTH,
                                  '{"type": "FeatureCollection", "features": ' + "[" * DEPTH + "]" * DEPTH + "}"])
def test_a_deeply_nested_geojson_area_is_one_line(home, cli, text):
    area = home / "deep.geojson"
    area.write_text(text)
    code, _, err = cli("ee", "export", "--geojson", area, "--start", "2023-01-01", "--end", "2023-02-01",
                       "--out", home / "export")
    refused(code, err, "--geojson")
    assert not (home / "export").exists()


def test_a_deeply_nested_stac_item_is_one_line(home, cli):
    item = home / "item.json"
    item.write_text('{"type": "Feature", "stac_version": "1.0.0", "assets": ' + "[" * DEPTH + "]" * DEPTH + "}")
    code, _, err = cli("data", "import", item, "--no-progress")
    refused(code, err, str(item))
    assert not (home / "data" / "catalog.sqlite").exists() or "0 tile" in cli("data", "list")[1]


def test_a_deeply_nested_preset_and_prompt_set_are_one_line(home, cli):
    deep = home / "deep.yaml"
    deep.write_text("[" * DEPTH)
    refused(*cli("segment", "train", "--preset", deep)[::2], "deep.yaml")
    refused(*cli("generate", "--prompts", deep)[::2], "deep.yaml")
    assert not (home / "runs").exists() and not (home / "generated").exists()


def test_a_deeply_nested_set_value_is_one_line(home, cli):
    refused(*cli("segment", "train", "--set", "model.kwargs=" + "[" * 5000)[::2], "--set model.kwargs")
    assert not (home / "runs").exists()



def test_a_deeply_nested_scene_list_is_one_line(tmp_path):
    """What ``predict --input`` lists: a deep JSON file, or a catalog linking to a deep item."""
    from workbench.data.scene_list import scenes_of
    from workbench.errors import WorkbenchError

    deep = tmp_path / "deep.json"
    deep.write_text('{"type": "FeatureCollection", "features": ' + "[" * DEPTH + "]" * DEPTH + "}")
    (tmp_path / "cat").mkdir()
    root = tmp_path / "cat" / "catalog.json"
    root.write_text('{"type": "Catalog", "stac_version": "1.1.0", "id": "c", "description": "d", "links": '
                    '[{"rel": "item", "href": "./item.json", "type": "application/json"}]}')
    (tmp_path / "cat" / "item.json").write_text('{"type": "Feature", "stac_version": "1.1.0", "id": "i", '
                                                '"assets": ' + "[" * DEPTH + "]" * DEPTH + "}")
    for path, says in ((deep, "nested too deeply"), (root, "item.json")):
        with pytest.raises(WorkbenchError, match=says) as exc:
            scenes_of(path)
        assert path.name in str(exc.value) and "\n" not in str(exc.value)


def test_a_catalog_linking_to_a_deeply_nested_file_imports_nothing(home, cli):
    (home / "cat").mkdir()
    root = home / "cat" / "catalog.json"
    root.write_text('{"type": "Catalog", "stac_version": "1.1.0", "id": "c", "description": "d", "links": '
                    '[{"rel": "child", "href": "./deep/collection.json", "type": "application/json"}]}')
    (home / "cat" / "deep").mkdir()
    (home / "cat" / "deep" / "collection.json").write_text('{"type": "Collection", "links": ' + "[" * DEPTH
                                                           + "]" * DEPTH + "}")
    refused(*cli("data", "import", root, "--no-progress")[::2], "collection.json")
    assert not (home / "data" / "catalog.sqlite").exists() or "0 tile" in cli("data", "list")[1]
