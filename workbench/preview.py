"""A small preview PNG of a mapped scene: image | the same with the mask over it.

    write_preview("scene.tif", "scene_mask.tif", preview_path("scene_mask.tif"))   # scene_mask_preview.png

Why: a user who maps a 10980 x 10980 tile wants to see at a glance whether the map is right
before opening a GIS. So the preview is small (1024 px wide, each panel at most ~500 px) and
costs little: the scene and the mask are read decimated (rasterio ``out_shape`` reads, through
overviews where the files have them), never whole. The image is read by the same scene reader
as prediction (``workbench.data.inputs.describe`` then ``Stack.sample``), so a SAFE folder, a STAC
item or a 13-band stack shows its true colours: the bands named B04 B03 B02 (or red green
blue) when present, else the first three, each stretched between its 2 and 98 % percentiles
of the valid pixels. Nodata (the scene's, or 255 in the mask) is a grey checkerboard, which
no land or water looks like; the title gives the mapped area per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.files import replacing

WIDTH_PX = 1024
PANEL_PX = 500            # each panel's longest side at most (two side by side in WIDTH_PX)
TITLE_PX, LEGEND_PX = 62, 30
TRUE_COLOUR = ("B04", "B03", "B02")
CLASS_COLOURS = ((0.0, 0.45, 1.0), (0.95, 0.55, 0.05), (0.2, 0.75, 0.2), (0.85, 0.15, 0.15), (0.6, 0.3, 0.8),
                 (0.95, 0.85, 0.1), (0.1, 0.8, 0.8), (0.55, 0.35, 0.2))
ALPHA = 0.6


def preview_path(out: str | Path) -> Path:
    """``<out stem>_preview.png`` beside the output mask."""
    out = Path(out)
    return out.with_name(f"{out.stem}_preview.png")


def true_colour_bands(names: Sequence[str]) -> list[str]:
    """The bands a true-colour image is made of: B04 B03 B02 (or red green blue, by
    ``bands.match``) when all three are there, else the first three (one band: grey)."""
    from workbench.data import bands

    found, _ = bands.match(TRUE_COLOUR, names)
    if all(i is not None for i in found):
        return [names[i] for i in found]
    return list(names[:3])


def read_decimated(image: str | Path, mask: str | Path, *, bands: Sequence[str] | None = None,
                   max_side: int = PANEL_PX) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """(true-colour raw values (3 or 1, h, w), image valid (h, w), mask (h, w), mask nodata): the
    scene on the mask's grid, both decimated so the longer side is at most ``max_side`` px."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from workbench.data import geotiff
    from workbench.data.inputs import describe
    from workbench.data.radiometry import sample_values
    from workbench.data.vectors import READ_CACHE_BYTES

    scene = describe(image, bands=bands)
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES), geotiff.open_raster(mask) as m, \
            scene.open(true_colour_bands(scene.names), scl_nodata=()) as stack:
        if (stack.width, stack.height, stack.crs, stack.transform) == (m.width, m.height, m.crs, m.transform):
            raw, valid = stack.sample(max_side)
        else:                                   # a mask written on another grid: the scene warped onto it
            parts, valid = [], None
            for b in stack.bands:
                with rasterio.open(b.path) as ds, WarpedVRT(ds, crs=m.crs, transform=m.transform, width=m.width,
                                                            height=m.height, src_nodata=b.nodata) as vrt:
                    part = sample_values(vrt, [b.index], max_side)
                    ok = vrt.read_masks(b.index, out_shape=part.shape[1:], resampling=Resampling.nearest) > 0
                parts.append(part)
                valid = ok if valid is None else valid & ok
            raw = np.concatenate(parts)
        labels = m.read(1, out_shape=raw.shape[1:], resampling=Resampling.nearest)
        return raw, valid, labels, m.nodata


def _stretched(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w, 3) in [0, 1]: ``plots.rgb``'s 2-98 % stretch over the valid pixels only (nodata
    zeros would drag every band's low percentile down)."""
    from workbench.train.plots import rgb

    h, w = raw.shape[1:]
    out = np.zeros((h, w, 3), np.float64)
    if valid.any():
        out[valid] = rgb(raw[:, valid][:, None, :])[0]
    return out


def _checker(h: int, w: int, cell: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    grey = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 0.62, 0.78)
    return np.repeat(grey[..., None], 3, axis=2)


def _km2(m2: float) -> str:
    km2 = m2 / 1e6
    return f"{km2:.3g} km²" if km2 < 100 else f"{km2:,.0f} km²"


def write_preview(image: str | Path, mask: str | Path, path: str | Path, *, bands: Sequence[str] | None = None,
                  class_names: Mapping[int, str] | None = None, areas_m2: Mapping[int, float] | None = None,
                  title: str | None = None) -> Path:
    """Draw the preview of ``image`` mapped as ``mask`` to ``path`` (a temporary name, then
    renamed). ``class_names``: {value: name} of the classes shown (default {1: "water"}: a
    binary map); ``areas_m2``: their ground areas when the caller has them (else counted here
    by row blocks, ``vectors.class_areas_m2``). The PNG is ``WIDTH_PX`` wide."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from workbench.data.vectors import class_areas_m2

    names = dict(class_names) if class_names else {1: "water"}
    raw, valid, labels, nodata = read_decimated(image, mask, bands=bands)
    if areas_m2 is None:
        areas_m2 = class_areas_m2(mask, classes=names)
    h, w = labels.shape
    nod = ~valid | ((labels == nodata) if nodata is not None else False)
    base = _stretched(raw, valid)
    checker = _checker(h, w, max(2, max(h, w) // 64))
    base[nod] = checker[nod]
    over = base.copy()
    for i, value in enumerate(names):
        hit = (labels == value) & ~nod
        over[hit] = (1 - ALPHA) * over[hit] + ALPHA * np.asarray(CLASS_COLOURS[i % len(CLASS_COLOURS)])

    scale = PANEL_PX / max(h, w)
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    fig_h = TITLE_PX + ph + LEGEND_PX
    fig = Figure(figsize=(WIDTH_PX / 100, fig_h / 100), dpi=100)
    FigureCanvasAgg(fig)
    gap = (WIDTH_PX - 2 * pw) / 3
    for k, (arr, label) in enumerate(((base, "image"), (over, "mask over image"))):
        ax = fig.add_axes(((gap + k * (pw + gap)) / WIDTH_PX, LEGEND_PX / fig_h, pw / WIDTH_PX, ph / fig_h))
        ax.imshow(arr, interpolation="nearest", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=8, pad=3)
    areas = ", ".join(f"{names[v]} {_km2(float(areas_m2.get(v, 0.0)))}" for v in names)
    head = title or Path(str(image)).name
    fig.text(0.5, 1 - 22 / fig_h, f"{head}\n{areas}", ha="center", va="center", fontsize=9)
    handles = [Patch(facecolor=CLASS_COLOURS[i % len(CLASS_COLOURS)], alpha=ALPHA, label=n)
               for i, n in enumerate(names.values())]
    if nod.any():
        handles.append(Patch(facecolor=(0.7, 0.7, 0.7), hatch="xx", edgecolor=(0.55, 0.55, 0.55), label="nodata"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    path = Path(path)
    with replacing(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
