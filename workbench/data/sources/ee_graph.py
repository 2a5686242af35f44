"""The Earth Engine expression graphs of an export (built with the real ``ee`` client).

Nothing here talks to the server: every function returns ``ee`` objects whose
serialised form (``obj.serialize()``) is what ``computePixels`` or an export task
sends. The recipe:

- ``COPERNICUS/S2_SR_HARMONIZED`` filtered by the area (``filterBounds``), the dates
  (``filterDate(start, end + 1 day)``) and ``CLOUDY_PIXEL_PERCENTAGE <= max_cloud``;
- optional per-pixel cloud masking: pixels whose ``SCL`` class is one of
  ``cloud_classes`` (default 3, 8, 9, 10) are masked (``SCL.remap(classes -> 0, else 1)``);
- the chosen bands of one scene (``ee.Image(COLLECTION/system:index)``) or of the
  median composite; masked pixels become 0 (``unmask(0)``), values uint16;
- a separate single-band ``water`` mask on the same grid, uint8: 1 water, 0 not
  water, 255 unknown (no label, or no valid image pixel). Water comes from
  Hansen GFC ``datamask == 2`` (0 = no data), JRC Global Surface Water
  ``occurrence > threshold`` (never-water pixels count as 0 % occurrence), or
  Dynamic World's ``label == 0`` (the mode of the label over the same dates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.data.sources.ee_spec import COLLECTION, DYNAMIC_WORLD_ID, IMAGE_NODATA, JRC_ID, MASK_NODATA, ExportSpec

SCENE_PROPERTIES = ("system:index", "system:time_start", "CLOUDY_PIXEL_PERCENTAGE", "system:footprint")


@dataclass
class ExportGraphs:
    """The graphs of one export unit (one scene, or the composite)."""

    collection: Any          # ee.ImageCollection: the filtered Sentinel-2 scenes
    region: Any              # ee.Geometry: the area
    image: Any               # ee.Image: the chip bands, uint16, 0 where masked
    mask: Any                # ee.Image: one band 'water', uint8 (1 / 0 / 255)
    scene: str | None        # system:index of the scene, None for a composite


def region_of(spec: ExportSpec):
    return spec.area.ee_geometry()


def s2_collection(spec: ExportSpec, region=None):
    """The scenes of the request: area, dates, scene cloud percentage (and at most max_scenes,
    the least cloudy)."""
    import ee

    region = region if region is not None else region_of(spec)
    col = (ee.ImageCollection(COLLECTION)
           .filterBounds(region)
           .filterDate(spec.start, spec.end_exclusive)
           .filter(ee.Filter.lte("CLOUDY_PIXEL_PERCENTAGE", spec.max_cloud)))
    if spec.max_scenes:
        col = col.limit(spec.max_scenes, "CLOUDY_PIXEL_PERCENTAGE")
    return col


def mask_clouds(image, classes=(3, 8, 9, 10)):
    """Mask the pixels whose Scene Classification (SCL) class is one of ``classes``."""
    clear = image.select("SCL").remap(list(classes), [0] * len(classes), 1)
    return image.updateMask(clear)


def scene_image(spec: ExportSpec, scene: str):
    """One scene's chosen bands (cloud-masked when asked), still masked where there is no data."""
    import ee

    img = ee.Image(f"{COLLECTION}/{scene}")
    if spec.cloud_mask:
        img = mask_clouds(img, spec.cloud_classes)
    return img.select(list(spec.bands))


def median_image(spec: ExportSpec, collection):
    """The per-pixel median of the (cloud-masked) scenes, chosen bands."""
    if spec.cloud_mask:
        classes = spec.cloud_classes
        collection = collection.map(lambda img: mask_clouds(img, classes))
    return collection.select(list(spec.bands)).median()


def water_label(spec: ExportSpec, region=None):
    """1 water / 0 not water, masked where the source has no label."""
    import ee

    if spec.water == "hansen":
        datamask = ee.Image(spec.hansen_id).select("datamask")      # 0 no data, 1 land, 2 water
        return datamask.eq(2).updateMask(datamask.neq(0))
    if spec.water == "jrc":
        occurrence = ee.Image(JRC_ID).select("occurrence")          # % of observations with water
        return occurrence.unmask(0).gt(spec.jrc_threshold)
    region = region if region is not None else region_of(spec)
    label = (ee.ImageCollection(DYNAMIC_WORLD_ID)
             .filterBounds(region)
             .filterDate(spec.start, spec.end_exclusive)
             .select("label")
             .mode())                                               # class 0 = water
    return label.eq(0)


def finish(spec: ExportSpec, image, label) -> tuple[Any, Any]:
    """(image uint16 with 0 where masked, mask uint8 with 255 where unknown or no valid pixel)."""
    import ee

    valid = image.mask().reduce(ee.Reducer.min())
    out_image = image.unmask(IMAGE_NODATA, False).toUint16()
    out_mask = (label.unmask(MASK_NODATA)
                .where(valid.Not(), MASK_NODATA)
                .rename("water")
                .toUint8())
    return out_image, out_mask


def build_export(spec: ExportSpec, scene: str | None = None) -> ExportGraphs:
    """The graphs of one export unit: a scene (``spec.composite == 'scene'``; give its
    ``system:index``) or the median composite."""
    from workbench.errors import WorkbenchError

    region = region_of(spec)
    col = s2_collection(spec, region)
    if spec.composite == "median":
        image = median_image(spec, col)
        scene = None
    else:
        if not scene:
            raise WorkbenchError("build_export: a per-scene export needs the scene's system:index "
                                 "(see list_scenes), or use composite='median'")
        image = scene_image(spec, scene)
    out_image, out_mask = finish(spec, image, water_label(spec, region))
    return ExportGraphs(collection=col, region=region, image=out_image, mask=out_mask, scene=scene)


def scenes_query(spec: ExportSpec, collection=None):
    """A list of [system:index, system:time_start, CLOUDY_PIXEL_PERCENTAGE, system:footprint]
    rows, one per scene (for ``ee.data.computeValue``)."""
    import ee

    col = collection if collection is not None else s2_collection(spec)
    return (col.sort("system:time_start")
            .reduceColumns(ee.Reducer.toList(len(SCENE_PROPERTIES)), list(SCENE_PROPERTIES))
            .get("list"))
