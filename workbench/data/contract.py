"""A run's input contract: which bands, in which units, from which radiometry it was trained on.

    contract = contract_of(train_tiles, positions)      # training: from the tiles, checked
    contract.save(run.path / "inputs.json")
    scene = open_scene(contract, stats, "S2B_...SAFE")    # predict / eval: brought to it, or refused
    x, valid = scene.read(window)                       # normalised float32 (bands, h, w)

Band statistics are in the contract's units (reflectance for Sentinel-2-like data), so a
scene is normalised as the training tiles were whatever form it comes in: uint16 DN, DN
with the +1000 offset, float reflectance, bands in another order or a 13-band stack. What
cannot be reconciled is refused in one line naming the input: a band the run needs and the
scene lacks, a scene without band names for a run that has them (unless ``--bands`` names
them), raw 8-bit values for a reflectance run (or the reverse), raw values of another dtype,
and values that contradict the units assumed for them (``radiometry.check_values``).

Runs from before the contract (no ``inputs.json``) get one built from their
``band_stats.json`` band names: raw units, bands by position, as they were trained.

``indices`` (``data.indices``) are spectral index channels the model reads after the bands
(``workbench.data.indices``); a scene reader recomputes them from the scene's reflectance
before normalising, so a run never needs them in its input files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data import bands as band_names
from workbench.data.radiometry import RAW, REFLECTANCE, Radiometry, check_values, of_tile
from workbench.errors import WorkbenchError

FILE = "inputs.json"
CHECK_TILES = 256            # train tiles whose headers are checked for units and names


@dataclass
class InputBand:
    name: str                           # canonical (or b<i> when the tiles had no names)
    common_name: str | None
    dtype: str                          # as the train tiles stored it
    scale: float | None                 # the train tiles' radiometry (first tile), for the record
    offset: float
    nodata: float | None
    radiometry: str = ""                # where that radiometry came from


@dataclass
class InputContract:
    bands: list[InputBand]
    units: str                          # reflectance or raw
    gsd: float | None = None            # median train GSD in metres
    crs: list[str] = field(default_factory=list)
    legacy: bool = False                # built from an older run's band_stats.json
    indices: list[str] = field(default_factory=list)   # spectral index channels after the bands

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def channel_names(self) -> list[str]:
        """What each model input channel holds: the bands, then the indices (``NDWI``), so a
        pretrained first layer is matched channel by channel (an index takes the mean init)."""
        return self.names + [n.upper() for n in self.indices]

    @property
    def named(self) -> bool:
        return not band_names.all_default(self.names)

    def to_dict(self) -> dict:
        return {"bands": [asdict(b) for b in self.bands], "units": self.units, "gsd": self.gsd, "crs": self.crs,
                "indices": list(self.indices)}

    @classmethod
    def from_dict(cls, d: dict) -> InputContract:
        try:
            return cls([InputBand(**b) for b in d["bands"]], str(d["units"]), d.get("gsd"), list(d.get("crs") or []),
                       indices=[str(n) for n in d.get("indices") or []])
        except (KeyError, TypeError) as exc:
            raise WorkbenchError(f"input contract: missing or bad field ({exc})") from None

    def save(self, path: str | Path) -> Path:
        from workbench.files import write_json_atomic

        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> InputContract:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise WorkbenchError(f"{path}: not a readable input contract ({exc})") from None
        except WorkbenchError as exc:
            raise WorkbenchError(f"{path}: {exc}") from None

    def describe(self) -> str:
        return f"{', '.join(self.names)} in {self.units}" + ("" if self.units == REFLECTANCE else
                                                           f" ({self.bands[0].dtype})") + \
            (f" + {', '.join(self.indices)}" if self.indices else "")


def legacy_contract(stats: Any, bands: Sequence[int] | None = None) -> InputContract:
    """The contract an older run implies: raw units, its 1-based ``bands`` (all bands of its
    statistics when None) read by position, as it was trained."""
    numbers = list(bands) if bands else list(range(1, len(stats) + 1))
    out = [InputBand(name=f"b{n}", common_name=None, dtype="", scale=None, offset=0.0, nodata=None,
                     radiometry="older run: units not recorded") for n in numbers]
    return InputContract(out, RAW, legacy=True)


def tile_names(tile: Any, ds: Any) -> list[str]:
    """Canonical band names of a tile: its catalog row's band list, else its open file's descriptions."""
    return band_names.canonical_names(list(getattr(tile, "bands", None) or ds.descriptions))


def contract_of(tiles: Sequence[Any], positions: Sequence[int] | None = None,
                indices: Sequence[str] = ()) -> InputContract:
    """The contract of a run trained on ``tiles`` reading bands at 0-based ``positions`` (all when
    None) and appending spectral ``indices``. Tiles that disagree on band names or units are a
    one-line error naming the file: their statistics could not be pooled into one normalisation;
    so are indices whose bands the run does not read, and indices of raw-unit tiles."""
    from workbench.data import geotiff

    if not tiles:
        raise WorkbenchError("no tiles to build the run's input contract from")
    step = max(1, len(tiles) // CHECK_TILES)
    checked = [tiles[i] for i in range(0, len(tiles), step)]   # indexed: a table makes only these rows
    first = None
    crs, gsds = set(), []
    for t in checked:
        with geotiff.open_raster(t.path) as ds:
            info = geotiff.info_of(ds)
            rad = of_tile(t, ds)
            names = tile_names(t, ds)
        pos = list(range(info.count)) if positions is None else list(positions)
        if max(pos) >= info.count:
            raise WorkbenchError(f"{t.path}: has {info.count} bands; the run reads band {max(pos) + 1}")
        sel = ([names[p] for p in pos], [rad[p] for p in pos], info)
        if first is None:
            first = (t, sel)
        else:
            _same(first, (t, sel))
        if info.crs:
            crs.add(info.crs)
            gsds.append(info.gsd_metres())
    t0, (names, rads, info) = first
    units = rads[0].units
    if any(r.units != units for r in rads):
        raise WorkbenchError(f"{t0.path}: bands in different units ({', '.join(r.units for r in rads)})")
    bands = [InputBand(name=n, common_name=band_names.common_name(n), dtype=info.dtype, scale=r.scale,
                       offset=r.offset, nodata=info.nodata, radiometry=r.source) for n, r in zip(names, rads)]
    gsd = float(np.median(gsds)) if gsds else None
    from workbench.data import indices as spectral

    index_names = spectral.check_names(indices)
    if index_names:
        with geotiff.open_raster(t0.path) as ds:
            every = tile_names(t0, ds)
        spectral.resolve(index_names, names, str(t0.path), also=every if len(names) < len(every) else None)
        if units != REFLECTANCE:
            raise WorkbenchError(f"{t0.path}: spectral indices ({', '.join(index_names)}) need reflectance; the "
                                 f"tiles hold raw {info.dtype} values ({rads[0].source})")
    return InputContract(bands, units, gsd, sorted(crs), indices=index_names)


def _same(a: tuple, b: tuple) -> None:
    (ta, (na, ra, ia)), (tb, (nb, rb, ib)) = a, b
    if na != nb and not (band_names.all_default(na) or band_names.all_default(nb)):
        raise WorkbenchError(f"{tb.path}: bands {', '.join(nb)} differ from {', '.join(na)} of {ta.path}; "
                             "one run reads one set of bands")
    ua, ub = {r.units for r in ra}, {r.units for r in rb}
    if ua != ub:
        raise WorkbenchError(f"{tb.path}: values in {'/'.join(ub)} units ({rb[0].source}) but {ta.path} is in "
                             f"{'/'.join(ua)} ({ra[0].source}); tiles of one run must be in the same units")
    if ua == {RAW} and ia.dtype != ib.dtype:
        raise WorkbenchError(f"{tb.path}: raw {ib.dtype} values but {ta.path} holds raw {ia.dtype}; raw values of "
                             "different types cannot share one normalisation")


# ---- the predict side ---------------------------------------------------------------------------

class SceneReader:
    """A scene brought to a run's contract: ``read(window)`` gives normalised float32 windows.

    ``info`` is the grid read on (the model grid when the scene's pixels are not the run's:
    ``warped``); ``scene_info`` the scene's own grid, which outputs go back onto
    (``warp.resample_to``)."""

    def __init__(self, stack: Any, stats: Any, contract: InputContract, notes: list[str],
                 scene_info: Any = None):
        from workbench.data.indices import IndexChannels

        self.stack, self.contract, self.notes = stack, contract, notes
        self.indices = IndexChannels(contract.indices, contract.names, stats, f"run's {FILE}") \
            if contract.indices else None
        scale, bias = stats.scale_bias() if self.indices is None else (self.indices.scale, self.indices.bias)
        self.scale, self.bias = scale[:, None, None], bias[:, None, None]
        self.bands = list(range(len(scale)))        # model input channels: bands, then indices
        self.info = stack.info
        self.scene_info = scene_info if scene_info is not None else self.info

    @property
    def warped(self) -> bool:
        """Whether the scene is read onto a model grid other than its own."""
        return self.scene_info is not self.info

    def read(self, window) -> tuple[np.ndarray, np.ndarray]:
        x, valid = self.stack.read(window)
        if self.indices is not None:                # from reflectance, before normalisation
            x, valid = self.indices.append(x, valid)
        np.multiply(x, self.scale, out=x)
        np.add(x, self.bias, out=x)
        if not valid.all():
            x[:, ~valid] = 0.0
        return x, valid

    def close(self) -> None:
        self.stack.close()


def open_scene(contract: InputContract, stats: Any, path: str | Path, *, run: str = "?",
               bands: Sequence[str] | None = None, scale: float | None = None, offset: float | None = None,
               scl_nodata: Sequence[int] | None = None, warn: bool = True) -> SceneReader:
    """Open any input (``inputs.describe``) and bring it to ``contract``, or refuse (module docstring)."""
    from workbench.data.inputs import describe

    scene = describe(path, bands=bands)
    where = scene.path
    wanted = contract.names
    notes: list[str] = []
    if contract.named and not band_names.all_default(scene.names):
        found, notes = band_names.match(wanted, scene.names)
        missing = [w for w, f in zip(wanted, found) if f is None]
        if missing:
            raise WorkbenchError(f"{where}: has no band {', '.join(missing)} that run {run} needs"
                                 f"{_for_indices(contract, missing)} (it has {', '.join(scene.names)}; the run "
                                 f"reads {', '.join(wanted)})")
        chosen = [scene.bands[i].name for i in found]
    elif contract.named:
        if len(scene.bands) != len(wanted):
            raise WorkbenchError(f"{where}: its {len(scene.bands)} bands carry no names and run {run} reads "
                                 f"{len(wanted)} named bands ({', '.join(wanted)}); name them with "
                                 f"--bands {','.join(wanted)} if that is their order")
        raise WorkbenchError(f"{where}: its bands carry no names; run {run} reads {', '.join(wanted)}: say which "
                             f"is which with --bands (e.g. --bands {','.join(wanted)})")
    elif contract.legacy:                      # an older run: its band numbers, by position
        numbers = [int(n[1:]) for n in wanted]
        if numbers == list(range(1, len(numbers) + 1)) and len(scene.bands) != len(numbers):
            raise WorkbenchError(f"{where}: scene has {len(scene.bands)} bands but the checkpoint of run {run} "
                                 f"expects {len(numbers)}")
        if max(numbers) > len(scene.bands):
            raise WorkbenchError(f"{where}: has {len(scene.bands)} bands but run {run} reads bands "
                                 f"{numbers} (an older run: bands by position)")
        chosen = [scene.bands[n - 1].name for n in numbers]
    else:                                      # a run without band names: by position, as trained
        if len(scene.bands) != len(wanted):
            raise WorkbenchError(f"{where}: has {len(scene.bands)} bands but run {run} was trained on "
                                 f"{len(wanted)} unnamed bands")
        chosen = scene.names
    from workbench.data.scene import SCL_INVALID

    stack = scene.open(chosen, scl_nodata=SCL_INVALID if scl_nodata is None else scl_nodata, scale=scale,
                       offset=offset)
    try:
        _check_units(contract, stack, where, run)
        scene_info = stack.info
        grid = _model_grid(contract, stack, where, run, notes)
    except BaseException:
        stack.close()
        raise
    if warn:
        for n in notes:
            print(f"note: {where}: {n}", file=sys.stderr)
    return SceneReader(stack, stats, contract, notes, scene_info if grid is not None else None)


def _for_indices(contract: InputContract, missing: Sequence[str]) -> str:
    """`` for index mndwi`` when a missing band is one a spectral index of the run reads."""
    from workbench.data import indices as spectral

    if not contract.indices:
        return ""
    pairs = spectral.resolve(contract.indices, contract.names, FILE)
    using = [n for n, (a, b) in zip(contract.indices, pairs) if {contract.names[a], contract.names[b]} & set(missing)]
    return f" for index {', '.join(using)}" if using else ""


def check_scenes(contract: InputContract, stats: Any, scenes: Sequence[str | Path], *, run: str = "?",
                 **reading: Any) -> None:
    """Bring every scene to the contract (``open_scene``, then closed) before any is predicted,
    so a folder with one unreadable scene stops before the first output is written."""
    for scene in scenes:
        open_scene(contract, stats, scene, run=run, warn=False, **reading).close()


def _check_units(contract: InputContract, stack: Any, where: str, run: str) -> None:
    units = stack.units
    if contract.legacy:                          # trained on the files' raw values: read them so
        stack.radiometry = [Radiometry(None, 0.0, "older run: raw values")] * len(stack.bands)
        return
    if contract.units == RAW:
        if units != RAW or str(stack.dtype) != contract.bands[0].dtype:
            raise WorkbenchError(f"{where}: run {run} was trained on raw {contract.bands[0].dtype} values "
                                 f"({contract.bands[0].radiometry}); this input holds {stack.dtype} "
                                 f"{'reflectance' if units == REFLECTANCE else 'values'}, which it cannot read")
        return
    if units != REFLECTANCE:
        raise WorkbenchError(f"{where}: {stack.dtype} values carry no reflectance, and run {run} reads "
                             f"reflectance ({contract.describe()}); give --scale/--offset if they are reflectance "
                             "in some scale")
    raw, valid = stack.sample()
    check_values(raw, valid, stack.radiometry, where)
    refl = np.stack([raw[i].astype(np.float64) * (r.scale or 1.0) + r.offset
                     for i, r in enumerate(stack.radiometry)])
    if valid.any():
        med = float(np.median(refl[:, valid]))
        if not -0.5 < med < 1.5:
            raise WorkbenchError(f"{where}: its values give a median reflectance of {med:.3g} "
                                 f"({stack.radiometry[0].source}); that is not reflectance: check --scale/--offset")


def _model_grid(contract: InputContract, stack: Any, where: str, run: str, notes: list[str]) -> Any:
    """Put ``stack`` onto the run's model grid (``warp.model_grid``: the run's pixel size, in metres)
    when its own pixels are not the run's; the grid, or None when it reads on its own."""
    from workbench.data.warp import model_grid, pixel_metres

    info = stack.info
    grid = model_grid(info, contract.gsd, contract.crs, where=where)
    if grid is not None:
        stack.onto(grid)
        notes.append(f"{pixel_metres(info):.3g} m pixels in {info.crs} read onto a {contract.gsd:.3g} m grid in "
                     f"{grid.crs} ({grid.width}x{grid.height} px): the pixel size run {run} was trained on")
    return grid


def load_contract(run_path: str | Path, stats: Any, bands: Sequence[int] | None = None) -> InputContract:
    """A run's ``inputs.json``; for a run from before it, the contract its band statistics imply
    (``bands``: its 1-based ``data.bands``)."""
    path = Path(run_path) / FILE
    if path.is_file():
        return InputContract.load(path)
    return legacy_contract(stats, bands)


def tile_positions(contract: InputContract, tiles: Sequence[Any], *, run: str = "?") -> list[int] | None:
    """0-based positions of the contract's bands in catalog ``tiles`` (all sharing one layout),
    matched by canonical name, with their units checked on a sample; None for runs that read
    tiles by position (no names, or older runs). A tile that lacks a band, has another layout
    than the first, or holds other units is a one-line error naming it."""
    from workbench.data import geotiff

    if not tiles or contract.legacy or not contract.named:
        return None
    step = max(1, len(tiles) // CHECK_TILES)
    first: list[int] | None = None
    for t in (tiles[i] for i in range(0, len(tiles), step)):   # indexed: a table makes only these rows
        with geotiff.open_raster(t.path) as ds:
            names = tile_names(t, ds)
            rad = of_tile(t, ds)
            dtype = ds.dtypes[0]
        found, _ = band_names.match(contract.names, names)
        missing = [w for w, f in zip(contract.names, found) if f is None]
        if missing:
            raise WorkbenchError(f"{t.path}: has no band {', '.join(missing)} that run {run} reads (it has "
                                 f"{', '.join(names)})")
        if first is None:
            first = list(found)
        elif list(found) != first:
            raise WorkbenchError(f"{t.path}: its bands {', '.join(names)} are in another order than the other "
                                 "tiles'; predict tiles of one layout at a time (e.g. --source / --where)")
        units = {rad[i].units for i in found}
        if units != {contract.units}:
            raise WorkbenchError(f"{t.path}: values in {'/'.join(units)} units ({rad[found[0]].source}); run {run} "
                                 f"reads {contract.describe()}")
        if contract.units == RAW and dtype != contract.bands[0].dtype:
            raise WorkbenchError(f"{t.path}: raw {dtype} values; run {run} reads raw {contract.bands[0].dtype}")
    return first
