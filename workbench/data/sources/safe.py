"""Sentinel-2 Level-2A ``.SAFE`` folders as scenes: one JP2 per band, radiometry from ``MTD_MSIL2A.xml``.

Why a reader of our own rather than GDAL's ``SENTINEL2`` driver alone: the driver shows a
product as subdatasets per resolution (``SENTINEL2_L2A:<MTD>:10m:EPSG_32633``), and a run
needs B02 at 10 m beside B11 at 20 m and SCL, each read from its finest JP2 and brought onto
one grid by :class:`workbench.data.scene.Stack`. The subdatasets still work as any GDAL path
(``inputs.describe_raster``).

What is read from ``MTD_MSIL2A.xml`` (tags matched by local name, so the namespace of any
product-specification version works): ``BOA_QUANTIFICATION_VALUE`` (q, 10000), the per-band
``BOA_ADD_OFFSET band_id=..`` (-1000 since processing baseline 04.00; absent before, which
means 0), ``Spectral_Information bandId/physicalBand`` (band_id -> B1..B12, B8A),
``PRODUCT_START_TIME`` (date), ``PRODUCT_URI`` (scene id), ``Cloud_Coverage_Assessment``
(percent). Reflectance = (DN + offset) / q, i.e. ``Radiometry(1/q, offset/q)``. DN 0 is no
data in L2A, although the JP2s carry no nodata tag.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from workbench.data import bands as band_names
from workbench.data.radiometry import S2_QUANTIFICATION, Radiometry
from workbench.data.scene import BandSource, SceneInput, date_from_name
from workbench.errors import WorkbenchError

MTD = "MTD_MSIL2A.xml"
RESOLUTIONS = (10, 20, 60)
NODATA = 0
# <tile>_<time>_<band>_<res>m.jp2 (compact naming) or L2A_<tile>_<time>_<band>_<res>m.jp2 (Sen2Cor 2.x)
_JP2 = re.compile(r"_(B\d{2}|B8A|SCL)_(10|20|60)m\.jp2$", re.IGNORECASE)


def is_safe(path: Path) -> bool:
    """A folder holding ``MTD_MSIL2A.xml`` (named ``*.SAFE`` or not: users rename and unzip)."""
    p = Path(path)
    return p.is_dir() and (p / MTD).is_file()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(mtd: Path) -> ET.Element:
    if not mtd.is_file():
        raise WorkbenchError(f"{mtd.parent}: not a Sentinel-2 L2A product ({MTD} not found)")
    try:
        root = ET.parse(mtd).getroot()
    except ET.ParseError as exc:
        raise WorkbenchError(f"{mtd}: not readable XML ({exc})") from None
    except OSError as exc:
        raise WorkbenchError(f"{mtd}: cannot be read ({exc.strerror or exc})") from None
    if _local(root.tag) != "Level-2A_User_Product":
        raise WorkbenchError(f"{mtd}: not Level-2A product metadata (root element <{_local(root.tag)}>, "
                             "expected <Level-2A_User_Product>)")
    return root


def _text(root: ET.Element, name: str) -> str | None:
    for e in root.iter():
        if _local(e.tag) == name and e.text and e.text.strip():
            return e.text.strip()
    return None


def _number(mtd: Path, name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise WorkbenchError(f"{mtd}: {name} {text!r} is not a number") from None


def _band_ids(root: ET.Element) -> dict[str, str]:
    """band_id -> canonical band name, from ``Spectral_Information_List`` (else the standard order)."""
    ids = {}
    for e in root.iter():
        if _local(e.tag) == "Spectral_Information":
            bid, name = e.get("bandId"), band_names.canonical(e.get("physicalBand"))
            if bid is not None and name:
                ids[bid] = name
    return ids or {str(i): b for i, b in enumerate(band_names.SENTINEL2)}


def radiometry_of(mtd: Path, root: ET.Element) -> tuple[float, dict[str, float]]:
    """(quantification, band -> additive offset in DN) from the product metadata."""
    q_text = _text(root, "BOA_QUANTIFICATION_VALUE")
    q = _number(mtd, "BOA_QUANTIFICATION_VALUE", q_text) if q_text else S2_QUANTIFICATION
    if not q > 0:
        raise WorkbenchError(f"{mtd}: BOA_QUANTIFICATION_VALUE {q_text} must be positive")
    ids = _band_ids(root)
    offsets: dict[str, float] = {}
    for e in root.iter():
        if _local(e.tag) == "BOA_ADD_OFFSET":
            bid = e.get("band_id") or e.get("bandId")
            name = ids.get(str(bid))
            if name is None:
                raise WorkbenchError(f"{mtd}: BOA_ADD_OFFSET for band_id {bid!r}, which Spectral_Information_List "
                                     "does not name")
            offsets[name] = _number(mtd, f"BOA_ADD_OFFSET band_id={bid}", (e.text or "").strip())
    return q, offsets


def _jp2s(safe: Path, root: ET.Element) -> tuple[dict[tuple[str, int], Path], dict[tuple[str, int], Path]]:
    """((band, res) -> JP2 on disk, (band, res) -> JP2 the metadata lists but that is missing)."""
    found: dict[tuple[str, int], Path] = {}
    for p in sorted(safe.glob("GRANULE/*/IMG_DATA/R*m/*.jp2")) + sorted(safe.glob("GRANULE/*/IMG_DATA/*.jp2")):
        m = _JP2.search(p.name)
        if not m:
            continue                          # TCI, AOT, WVP: not bands a model reads
        name = band_names.canonical(m[1]) or m[1].upper()
        key = (name, int(m[2]))
        if key in found:
            raise WorkbenchError(f"{safe}: holds more than one granule with {name} at {m[2]} m "
                                 f"({found[key].parent.parent.parent.name}, {p.parent.parent.parent.name}); "
                                 "give a single-tile product")
        found[key] = p
    listed: dict[tuple[str, int], Path] = {}
    for e in root.iter():
        if _local(e.tag) == "IMAGE_FILE" and e.text:
            rel = e.text.strip()
            p = safe / (rel if rel.lower().endswith(".jp2") else rel + ".jp2")
            m = _JP2.search(p.name)
            if m:
                key = (band_names.canonical(m[1]) or m[1].upper(), int(m[2]))
                if key not in found:
                    listed[key] = p
    return found, listed


def read_safe(path: Path) -> SceneInput:
    """The bands of a L2A product, each from the JP2 of its finest resolution (see the module
    docstring); SCL as ``scene.scl``. A band the metadata lists but whose JP2 is missing is
    left out and named in the error of ``scene.band(name)`` when a run asks for it."""
    safe = Path(path)
    mtd = safe / MTD
    root = _parse(mtd)
    q, offsets = radiometry_of(mtd, root)
    found, listed = _jp2s(safe, root)
    if not found:
        raise WorkbenchError(f"{safe}: no band JP2s under GRANULE/*/IMG_DATA/R10m|R20m|R60m")
    finest: dict[str, tuple[int, Path]] = {}
    for (name, res), p in found.items():
        if name not in finest or res < finest[name][0]:
            finest[name] = (res, p)
    baseline = _text(root, "PROCESSING_BASELINE")
    out: list[BandSource] = []
    scl = None
    order = list(band_names.SENTINEL2) + [band_names.SCL]
    for name in sorted(finest, key=lambda n: order.index(n) if n in order else len(order)):
        res, p = finest[name]
        if name == band_names.SCL:
            scl = BandSource(name=name, path=str(p), index=1, radiometry=None, nodata=NODATA,
                             description=f"{name}_{res}m", resolution=float(res))
            continue
        off = offsets.get(name, 0.0)
        source = f"{MTD} (BOA_QUANTIFICATION_VALUE {q:g}, BOA_ADD_OFFSET {off:g}"
        source += f", baseline {baseline})" if baseline else ")"
        out.append(BandSource(name=name, path=str(p), index=1, radiometry=Radiometry(1.0 / q, off / q, source),
                              nodata=NODATA, description=f"{name}_{res}m", resolution=float(res)))
    if not out:
        raise WorkbenchError(f"{safe}: no spectral band JP2s (only {', '.join(sorted(finest))})")
    missing = {}
    for (name, _res), p in sorted(listed.items()):
        if name not in finest and name not in missing:      # sorted: the finest listed resolution first
            missing[name] = f"{MTD} lists {name} but its JP2 {p.relative_to(safe)} is missing"
    start = _text(root, "PRODUCT_START_TIME")
    date = start[:10] if start and re.match(r"\d{4}-\d{2}-\d{2}", start) else date_from_name(safe.name)
    uri = _text(root, "PRODUCT_URI") or safe.name
    scene_id = uri[:-5] if uri.upper().endswith(".SAFE") else uri
    cloud_text = _text(root, "Cloud_Coverage_Assessment")
    cloud = None
    if cloud_text:
        value = _number(mtd, "Cloud_Coverage_Assessment", cloud_text)
        cloud = value / 100.0 if 0 <= value <= 100 else None
    tags = {"PRODUCT_URI": uri, "BOA_QUANTIFICATION_VALUE": f"{q:g}"}
    for key in ("PROCESSING_BASELINE", "PRODUCT_START_TIME", "SPACECRAFT_NAME", "PRODUCT_TYPE"):
        value = _text(root, key)
        if value:
            tags[key] = value
    tags.update({f"BOA_ADD_OFFSET_{k}": f"{v:g}" for k, v in offsets.items()})
    return SceneInput(path=str(safe), kind="safe", bands=out, date=date, scene_id=scene_id, scl=scl, tags=tags,
                      cloud_cover=cloud, missing=missing)
