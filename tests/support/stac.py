"""A small catalog with every kind of row a STAC export must carry, and a byte-level catalog snapshot.

Four tiles written by ``rasters.write_pair``: UTM with a mask, label, date and cloud cover;
lon/lat (EPSG:4326) with a mask and a prediction; a generated tile with no date, no mask and a
parent; a tile in a CRS with no authority code (a transverse Mercator spelled as PROJ text).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.rasters import write_pair
from workbench.data import geotiff
from workbench.data.catalog import Catalog, Tile

CUSTOM_CRS = "+proj=tmerc +lat_0=0 +lon_0=15.3 +k=0.9995 +x_0=300000 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def _tile(image: Path, mask: Path | None, **kw) -> Tile:
    info = geotiff.read_info(image)
    w, s, e, n = info.lonlat_bounds()
    return Tile(path=str(image), mask_path=str(mask) if mask else None, crs=info.crs, width=info.width,
                height=info.height, gsd=info.gsd_metres(), bands=list(info.band_names), lon=(w + e) / 2,
                lat=(s + n) / 2, west=w, south=s, east=e, north=n, **kw)


def make_catalog(root: Path) -> Path:
    """``root/data/catalog.sqlite`` over tiles in ``root/data/tiles``; returns the catalog's path."""
    tiles = root / "data" / "tiles"
    tiles.mkdir(parents=True)
    utm, utm_mask = write_pair(tiles, "utm_a", size=16, seed=1, bands=4)
    geo, geo_mask = write_pair(tiles, "lonlat_b", size=16, seed=2, crs="EPSG:4326", origin=(105.8, 21.05),
                               res=0.001)
    gen, _ = write_pair(tiles, "generated_c", size=16, seed=3, crs="EPSG:4326", origin=(105.9, 21.05), res=0.001)
    odd, odd_mask = write_pair(tiles, "custom d", size=16, seed=4, crs=CUSTOM_CRS, origin=(300_000.0, 4_650_000.0))
    rows = [
        _tile(utm, utm_mask, source="folder", split="train", date="2023-04-15", cloud_cover=0.07,
              water_fraction=0.31, label="coast", scene_id="S2B_33TUL_20230415", caption="a coast",
              extra={"imported_from": str(utm), "block": [3, 4], "nested": {"k": [1, 2.5, None]}},
              created_at="2026-11-30T10:00:00+00:00"),
        _tile(geo, geo_mask, source="folder", split="test", date="2004-06-15", cloud_cover=0.0, water_fraction=1.0,
              label="water", pred_label="water", pred_score=0.875, model_id="classify-vit-20261201",
              created_at="2026-11-30T10:00:01+00:00"),
        _tile(gen, None, source="generated", caption="a satellite image of a river delta",
              model_id="tiny", extra={"seed": 7, "prompt": "delta"}, created_at="2026-11-30T10:00:02+00:00"),
        _tile(odd, odd_mask, source="folder", split="val", date="2021-02-03", water_fraction=0.5, label="coast",
              created_at="2026-11-30T10:00:03+00:00"),
    ]
    rows[2].lon += 0.0001                       # a generated tile's centre is its prompt's, not the bbox's
    path = root / "data" / "catalog.sqlite"
    with Catalog(path) as cat:
        ids = cat.add_tiles(rows)
        cat.update(ids[2], parent_id=ids[0])
    return path


def catalog_bytes(path: Path) -> dict[str, bytes]:
    """The catalog file and its WAL as bytes: "nothing changed", exactly (the -shm index is SQLite's
    scratch memory, rewritten by any open, and an empty WAL holds nothing)."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))
            if not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)}


def exported_catalog(root: Path) -> tuple[Path, Path]:
    """(catalog, its export folder): :func:`make_catalog` under ``root``, exported once to ``root/export``."""
    from workbench.data.stac_export import export_stac

    catalog = make_catalog(root)
    with Catalog(catalog, read_only=True) as cat:
        export_stac(cat, root / "export")
    return catalog, root / "export"


def varied_catalog(root: Path) -> Path:
    """The fixture catalog plus the rows the fast paths treat apart: no CRS at all, a CRS in the file
    but not in the row, a date with a time, a grid an .aux.xml overrides, bands without common names."""
    import numpy as np
    from rasterio.transform import from_origin

    catalog = make_catalog(root)
    tiles = root / "data" / "tiles"
    plain = geotiff.write(tiles / "plain.tif", np.ones((2, 8, 8), "uint16"), (2, 0, 0, 0, -2, 0), None)
    unnamed, _ = write_pair(tiles, "unnamed", size=16, seed=9, origin=(400_000.0, 4_500_000.0))
    pam, _ = write_pair(tiles, "pam", size=16, seed=10)
    Path(f"{pam}.aux.xml").write_text("<PAMDataset><GeoTransform>600000, 20, 0, 4700000, 0, -20</GeoTransform>"
                                      "</PAMDataset>")
    odd = geotiff.write(tiles / "odd bands.tif", np.ones((2, 8, 8), "uint16"), from_origin(300_000, 4_600_000, 5, 5),
                        "EPSG:32633", band_names=["alpha", "B8A"])
    with Catalog(catalog) as cat:
        cat.add_tiles([
            Tile(path=str(plain), source="folder", width=8, height=8, bands=["b1", "b2"], split="train"),
            Tile(path=str(unnamed), source="folder", split="val", date="2022-03-04T10:20:30", bands=[],
                 west=1.0, south=2.0, east=1.5, north=2.5, lon=1.25, lat=2.25, created_at="2026-12-01T00:00:00+02:00"),
            Tile(path=str(pam), source="earthengine", crs="EPSG:32633", width=16, height=16, date="2020-01-01",
                 bands=["red", "green", "blue"], cloud_cover=0.123456789, gsd=20.0),
            Tile(path=str(odd), source="folder", crs="EPSG:32633", bands=["alpha", "B8A"], date="2019-12-31"),
        ])
    return catalog


def round_trip_rows(catalog: Path) -> dict[str, dict]:
    """Every row by path, ids aside and the parent as its path: what a round trip must keep."""
    with Catalog(catalog, read_only=True) as cat:
        tiles = cat.query()
    path_of = {t.id: t.path for t in tiles}
    out = {}
    for t in tiles:
        d = t.to_json()
        d.pop("id")
        d["parent_id"] = path_of.get(d["parent_id"])
        out[t.path] = d
    return out
