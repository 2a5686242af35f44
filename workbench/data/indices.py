"""Spectral indices as extra model inputs (``data.indices: [ndwi, mndwi, ...]``).

Water is dark in NIR and SWIR and bright in green; the classic indices put that contrast
in one number a model can use from its first layer, whatever the scene's brightness:

=========  ==============================  ===========================================
index      (a - b) / (a + b)               from
=========  ==============================  ===========================================
``ndwi``   green, nir                      McFeeters 1996 (open water)
``mndwi``  green, swir16                   Xu 2006 (water vs built-up)
``ndvi``   nir, red                        Rouse et al. 1974 (vegetation)
``ndmi``   nir, swir16                     Gao 1996's NDWI, a.k.a. NDMI (leaf water)
``ndbi``   swir16, nir                     Zha et al. 2003 (built-up)
``nbr``    nir, swir22                     Key & Benson (burn ratio)
=========  ==============================  ===========================================

Bands are found by *name* (``bands.match``): ``green`` is Sentinel-2 ``B03`` / Landsat
``SR_B3`` / a plain ``green`` band; ``nir`` is ``B08`` and, when a file has no ``B08``,
``B8A`` (``nir08``, the 20 m narrow NIR: the same ground signal for these ratios), so a
20 m stack still has an NDWI. Indices are computed from *reflectance* (each band's
``value * scale + offset``), never from digital numbers: with the baseline-04.00 offset
``(DN_g - DN_n) / (DN_g + DN_n)`` is not NDWI. Raw-unit runs (8-bit display values) have no
indices.

The index channels follow the bands, in the order of ``data.indices``, and are normalised
with their own mean / std (``BandStats.index_*``) like any band. A pixel is nodata in an
index where one of its bands is, or where ``a + b`` is at most :data:`MIN_DENOMINATOR` (no
signal: two zero or negative reflectances give a ratio that is noise or has the wrong
sign). Values are clipped to [-1, 1]: with the offset, dark water can have slightly negative
reflectance, and one such pixel would otherwise reach +-50 and dominate the statistics.

Which bands an index reads must be among the run's bands (``data.bands``, or every band):
the model, the statistics and a predicted scene are then all brought to one list of named
bands, and a scene is matched to the run by name once (``contract.open_scene``) with no
second, index-only reading path.

One implementation for training (:meth:`IndexChannels.append_batch`, the dataset's hook),
statistics (:func:`values`) and prediction (:meth:`IndexChannels.append`, in
``SceneReader.read``), so a model sees the same numbers in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.data import bands as band_names
from workbench.errors import WorkbenchError

# a + b at or below this (in reflectance) is no signal: the index is nodata there. One
# Sentinel-2 DN is 1e-4, so this is "both bands at most about one DN above zero".
MIN_DENOMINATOR = 2e-4


@dataclass(frozen=True)
class Index:
    """A normalised difference ``(a - b) / (a + b)``; ``a`` and ``b`` are tuples of common
    names tried in order (``("nir", "nir08")``: B08, else B8A)."""

    name: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    source: str


INDICES: dict[str, Index] = {i.name: i for i in (
    Index("ndwi", ("green",), ("nir", "nir08"), "McFeeters 1996"),
    Index("mndwi", ("green",), ("swir16",), "Xu 2006"),
    Index("ndvi", ("nir", "nir08"), ("red",), "Rouse et al. 1974"),
    Index("ndmi", ("nir", "nir08"), ("swir16",), "Gao 1996"),
    Index("ndbi", ("swir16",), ("nir", "nir08"), "Zha et al. 2003"),
    Index("nbr", ("nir", "nir08"), ("swir22",), "Key & Benson 2006"),
)}

# what each common name is on Sentinel-2, for messages ("needs B11 (swir16)")
_S2_OF = {c: b for b, c in band_names.COMMON_OF.items() if b in band_names.SENTINEL2}


def check_names(names: Sequence[str] | None, what: str = "data.indices") -> list[str]:
    """``names`` lower-cased and checked: each a known index, none twice (one line otherwise)."""
    out: list[str] = []
    for n in names or []:
        key = str(n).strip().lower()
        if key not in INDICES:
            raise WorkbenchError(f"{what}: unknown index {n!r} (known: {', '.join(INDICES)})")
        if key in out:
            raise WorkbenchError(f"{what}: index {key} is listed twice")
        out.append(key)
    return out


def _label(common: str) -> str:
    s2 = _S2_OF.get(common)
    return f"{s2} ({common})" if s2 else common


def _find(alternatives: tuple[str, ...], available: Sequence[str]) -> int | None:
    for common in alternatives:
        found, _ = band_names.match([common], available)
        if found[0] is not None:
            return found[0]
    return None


def resolve(names: Sequence[str], available: Sequence[str], where: str,
            also: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Positions ``(a, b)`` in ``available`` (the run's band names) of each index's bands, or one
    line naming the index, the band it lacks and what the input has. ``also``: every band of
    the input when the run reads only some (``data.bands``), to say when the band is there but
    not read."""
    out = []
    for name in check_names(names):
        idx = INDICES[name]
        pair = []
        for alternatives in (idx.a, idx.b):
            pos = _find(alternatives, available)
            if pos is None:
                wanted = " or ".join(_label(c) for c in alternatives)
                has = ", ".join(available) or "no bands"
                if available and band_names.all_default(available):
                    has += " (bands without names: an index needs named bands)"
                if also is not None and _find(alternatives, also) is not None:
                    raise WorkbenchError(f"{where}: index {name} needs {wanted}, which data.bands does not read "
                                         f"(the run reads {has}; the input has {', '.join(also)}): add it to "
                                         "data.bands")
                raise WorkbenchError(f"{where}: index {name} needs {wanted}; the input has {has}")
            pair.append(pos)
        out.append((pair[0], pair[1]))
    return out


def values(refl: np.ndarray, pairs: Sequence[tuple[int, int]], valid: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """The indices of reflectance ``refl`` (..., bands, h, w): float32 (..., len(pairs), h, w),
    0 where nodata, and the bool map (..., h, w) of pixels where every index is defined (and
    ``valid``, when given). NaN bands give nodata, not NaN."""
    refl = np.asarray(refl)
    if refl.ndim < 3:
        raise ValueError(f"reflectance must be (..., bands, h, w), got shape {refl.shape}")
    out = np.empty(refl.shape[:-3] + (len(pairs),) + refl.shape[-2:], np.float32)
    ok = np.ones(refl.shape[:-3] + refl.shape[-2:], bool)
    if valid is not None:
        ok &= valid
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, (ia, ib) in enumerate(pairs):
            a = refl[..., ia, :, :].astype(np.float32, copy=False)
            b = refl[..., ib, :, :].astype(np.float32, copy=False)
            den = a + b
            good = den > MIN_DENOMINATOR       # False for NaN too
            ok &= good
            np.clip((a - b) / np.where(good, den, 1.0), -1.0, 1.0, out=out[..., j, :, :])
    np.copyto(out, 0.0, where=~ok[..., None, :, :])
    return out, ok


class IndexChannels:
    """The index channels a run appends to its bands, with the normalisation of bands and
    indices together (``scale``/``bias``: bands first, then indices)."""

    def __init__(self, names: Sequence[str], available: Sequence[str], stats: Any, where: str):
        self.names = check_names(names)
        self.pairs = resolve(self.names, available, where)
        index = stats.index_stats(self.names, where)
        b_scale, b_bias = stats.scale_bias()
        i_scale, i_bias = index.scale_bias()
        if len(b_scale) != len(available):
            raise WorkbenchError(f"{where}: {len(b_scale)} band statistics for {len(available)} bands")
        self.bands = len(available)
        self.scale = np.concatenate([b_scale, i_scale]).astype(np.float32)
        self.bias = np.concatenate([b_bias, i_bias]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def for_dataset(cls, stats: Any, available: Sequence[str], augment: Any, where: str) -> IndexChannels | None:
        """The channels a dataset appends: those recorded in its statistics (``stats.index_names``,
        written by a run with ``data.indices``), None when there are none."""
        if stats is None or not getattr(stats, "index_names", None):
            return None
        if augment is not None and (getattr(augment, "brightness", 0) or getattr(augment, "contrast", 0)):
            raise WorkbenchError(f"{where}: brightness/contrast jitter is not supported with spectral indices "
                                 f"({', '.join(stats.index_names)})")
        return cls(stats.index_names, available, stats, where)

    def append(self, refl: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance (bands, h, w) + valid (h, w) -> (bands + indices, h, w) reflectance and
        indices (not normalised), and valid less the pixels where an index is nodata."""
        idx, ok = values(refl, self.pairs, valid)
        return np.concatenate([refl, idx], axis=-3), ok

    def append_batch(self, image: Any, valid: Any, mask: Any = None, ignore_index: int = -100) -> Any:
        """The dataset's hook: ``image`` (B, bands, S, S) torch float32 *reflectance* (0 where not
        ``valid``) -> a new (B, bands + indices, S, S) tensor, bands and indices normalised, 0
        where not valid; ``valid`` (and ``mask``, set to ``ignore_index``) updated in place
        where an index is nodata."""
        import torch

        x, v = image.numpy(), valid.numpy()
        idx, ok = values(x, self.pairs, v)
        new_bad = v & ~ok
        out = torch.empty((x.shape[0], self.bands + len(self), *x.shape[2:]), dtype=torch.float32)
        o = out.numpy()
        np.multiply(x, self.scale[None, :self.bands, None, None], out=o[:, :self.bands])
        np.add(o[:, :self.bands], self.bias[None, :self.bands, None, None], out=o[:, :self.bands])
        np.multiply(idx, self.scale[None, self.bands:, None, None], out=o[:, self.bands:])
        np.add(o[:, self.bands:], self.bias[None, self.bands:, None, None], out=o[:, self.bands:])
        np.copyto(o, 0.0, where=~ok[:, None])
        if new_bad.any():
            v &= ok
            if mask is not None:
                mask.numpy()[new_bad] = ignore_index
        return out
