"""What each band of a raster is: canonical names, common names, native resolutions.

A run is trained on *named* bands and a scene is brought to them by name, so a file whose
bands come in another order, a 13-band stack or Earth Engine's ``B2``-style names all reach
the model as the same inputs. Names are made canonical once, here:

- Sentinel-2: ``B01 .. B12`` and ``B8A`` (``B2``, ``b02``, ``B8a``, ``B4, central wavelength
  665 nm`` as GDAL's SENTINEL2 driver describes it, all become ``B04`` etc.), plus ``SCL``;
- Landsat 8/9 Collection 2 surface reflectance: ``SR_B1 .. SR_B7`` (as Earth Engine names them);
- sensor-less rasters: the common names ``coastal blue green red nir swir16 swir22 ...``
  (``R``, ``G``, ``B``, ``N``, ``NIR``, ``Red`` ... map to them).

Each canonical name has a common name (STAC's ``eo:common_name``), so a run trained on plain
``red green blue nir`` reflectance can read the matching Sentinel-2 bands. Unnamed bands keep
rasterio's ``b1, b2 ...`` and match only by position, which a caller must allow explicitly.

Stdlib only (imported by ``--help`` paths).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SENTINEL2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
SCL = "SCL"
# native pixel size in metres of each Sentinel-2 L2A band (and of SCL)
SENTINEL2_RESOLUTION = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
                        "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20, SCL: 20}
LANDSAT = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")

COMMON_NAMES = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
                "nir09", "cirrus", "swir16", "swir22")
COMMON_OF = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
    "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16",
    "B12": "swir22",
    "SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir", "SR_B6": "swir16",
    "SR_B7": "swir22",
    **{c: c for c in COMMON_NAMES},
}
_ALIASES = {
    "r": "red", "g": "green", "b": "blue", "n": "nir", "nir": "nir", "red": "red", "green": "green",
    "blue": "blue", "coastal": "coastal", "aerosol": "coastal", "swir1": "swir16", "swir2": "swir22",
    "swir16": "swir16", "swir22": "swir22", "rededge": "rededge1", "cirrus": "cirrus", "nir08": "nir08",
    "nir09": "nir09", "rededge1": "rededge1", "rededge2": "rededge2", "rededge3": "rededge3",
    "scl": SCL, "scene_classification": SCL,
}
_S2 = re.compile(r"^(?:S2_)?B0?(\d{1,2}|8A)(?:_(?:10|20|60)M)?$")
_LANDSAT = re.compile(r"^SR_B([1-7])$")
_DEFAULT = re.compile(r"^b[1-9]\d*$")


def canonical(name: str | None) -> str | None:
    """The canonical name of a band description, or None when it names no band we know.

    ``"B2"`` -> ``"B02"``, ``"B8a"`` -> ``"B8A"`` (but ``b1``, ``b2``: unnamed),
    ``"B4, central wavelength 665 nm"`` -> ``"B04"``, ``"SR_B3"`` -> ``"SR_B3"``,
    ``"R"`` / ``"Red"`` -> ``"red"``, ``"SCL"`` -> ``"SCL"``."""
    if not name or is_default_name(str(name).strip()):
        return None                # rasterio's b1, b2 ... for a band without a description
    text = str(name).strip()
    head = re.split(r"[,\s(]", text, maxsplit=1)[0]
    upper = head.upper()
    m = _S2.match(upper)
    if m:
        num = m.group(1)
        cand = "B8A" if num == "8A" else f"B{int(num):02d}"
        return cand if cand in SENTINEL2 else None
    if _LANDSAT.match(upper):
        return upper
    key = re.sub(r"[\s\-]+", "_", text.lower())
    return _ALIASES.get(key) or _ALIASES.get(head.lower())


def is_default_name(name: str) -> bool:
    """rasterio's ``b1, b2 ...`` stand-in for a band that has no description."""
    return bool(_DEFAULT.match(str(name)))


def canonical_names(descriptions: Sequence[str | None]) -> list[str]:
    """Canonical names for a file's band descriptions; unknown or missing ones keep ``b<i>``
    (missing) or their own text (unknown), so nothing is renamed into something it is not."""
    out = []
    for i, d in enumerate(descriptions):
        c = canonical(d)
        out.append(c if c else (str(d).strip() if d and not is_default_name(str(d)) else f"b{i + 1}"))
    return out


def common_name(name: str) -> str | None:
    return COMMON_OF.get(name)


def all_default(names: Sequence[str]) -> bool:
    return all(is_default_name(n) for n in names)


def match(wanted: Sequence[str], available: Sequence[str]) -> tuple[list[int | None], list[str]]:
    """Positions in ``available`` of each ``wanted`` band: by canonical name, else by common name
    (``red`` reads ``B04``); None where a band is missing. Also the list of notes on matches made
    through common names (to say in a summary)."""
    canon = [canonical(a) or a for a in available]
    commons = [common_name(c) for c in canon]
    out: list[int | None] = []
    notes = []
    for w in wanted:
        wc = canonical(w) or w
        if wc in canon:
            out.append(canon.index(wc))
            continue
        cn = common_name(wc)
        hits = [i for i, c in enumerate(commons) if cn and c == cn]
        if len(hits) == 1:
            out.append(hits[0])
            notes.append(f"{w} read from {available[hits[0]]} ({cn})")
        else:
            out.append(None)
    return out, notes
