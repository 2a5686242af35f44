"""Writes that belong together commit as one: a transaction() inside another joins it."""

from __future__ import annotations

import pytest

from workbench.data.catalog import Catalog, Tile


def _tile(root, name: str) -> Tile:
    return Tile(path=str(root / f"{name}.tif"), source="folder", split="train", lon=1.0, lat=2.0)


def test_nested_writes_commit_together(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as cat:
        with cat.transaction():
            a, b = cat.add_tiles([_tile(tmp_path, "a"), _tile(tmp_path, "b")])
            cat.update_many([(b, {"parent_id": a})])
        assert [t.parent_id for t in cat.query()] == [None, a]


def test_a_failure_after_a_nested_write_rolls_it_back(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.add_tiles([_tile(tmp_path, "kept")])
        with pytest.raises(RuntimeError), cat.transaction():
            cat.add_tiles([_tile(tmp_path, "a"), _tile(tmp_path, "b")])
            raise RuntimeError("the links failed")
        assert [t.path for t in cat.query()] == [str(tmp_path / "kept.tif")]
        assert not cat.conn.in_transaction
