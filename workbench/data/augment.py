"""Synchronised augmentation of image, mask and valid-pixel map.

Geometric transforms are the 8 symmetries of the square (the dihedral group D4):
``t = k + 4 * f`` rotates by ``k`` quarter turns (``np.rot90`` on the last two axes)
and then, if ``f``, flips left-right. They are pure permutations of pixels, so the
image, its mask and its valid map stay aligned exactly, and no interpolation or
padding is ever involved. Brightness/contrast jitter touches the image only
(``x * contrast + brightness``, in normalised units, i.e. after normalisation).

Per-sample parameters are a pure function of ``(seed, epoch, index)`` (the same
counter-based hash as the samplers), so a sample looks the same in any worker, in
any order, after a resume. Everything works on a whole batch at once: parameters are
drawn for the batch in one vectorised hash, each distinct transform is one strided
view of the batch, and each sample is one copy out of its view (large transposed
patches block by block, which is 3x faster than numpy's column-order walk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.data.samplers import STREAM_AUG, STREAM_BRIGHT, STREAM_CONTRAST, randint, uniform
from workbench.errors import WorkbenchError

IDENTITY = 0


def dihedral(a: np.ndarray, t: int) -> np.ndarray:
    """Transform ``t`` (0..7) of the last two axes of ``a``, as a view (no copy).

    Exactly ``np.rot90(a, t & 3, axes=(-2, -1))``, then ``[..., ::-1]`` if ``t & 4``,
    built from slicing and ``swapaxes`` (np.rot90 costs microseconds per call).
    """
    k = int(t) & 3
    if k == 1:
        a = a[..., ::-1].swapaxes(-1, -2)
    elif k == 2:
        a = a[..., ::-1, ::-1]
    elif k == 3:
        a = a.swapaxes(-1, -2)[..., ::-1]
    if int(t) & 4:
        a = a[..., ::-1]
    return a


def inverse_transform(t: int) -> int:
    """The transform that undoes ``t`` (for test-time augmentation)."""
    t = int(t)
    return t if t & 4 else (4 - (t & 3)) & 3


def dihedral_batch(src: np.ndarray, transforms: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Apply per-sample transforms (axis 0 is the batch) into ``out`` (cast to its dtype).

    Each distinct transform is one strided view of the whole batch; each sample is then
    one copy from its view straight into place (no gather + scatter). Quarter turns need
    square spatial axes. ``out`` must not share memory with ``src``.
    """
    if out is None:
        out = np.empty_like(src)
    transforms = np.asarray(transforms).reshape(-1)
    if len(transforms) != len(src):
        raise ValueError(f"{len(transforms)} transforms for a batch of {len(src)}")
    groups = np.unique(transforms)
    if len(groups) == 1 and not groups[0] & 1:  # one flip for everybody: a single strided copy
        np.copyto(out, dihedral(src, groups[0]), casting="unsafe")
        return out
    views = {int(t): dihedral(src, t) for t in groups}
    for i, t in enumerate(transforms.tolist()):
        copy_transformed(out[i], views[t][i], transposed=bool(t & 1))
    return out


_BLOCK = 64


def copy_transformed(dst: np.ndarray, view: np.ndarray, transposed: bool) -> None:
    """``dst[...] = view`` (with a cast). A transposed view is copied in 64 x 64 blocks: numpy
    walks a large transposed array column by column through memory, three times slower
    than block by block (measured at 256 px)."""
    h, w = dst.shape[-2:]
    if not transposed or (h <= _BLOCK and w <= _BLOCK):
        np.copyto(dst, view, casting="unsafe")
        return
    for r in range(0, h, _BLOCK):
        for c in range(0, w, _BLOCK):
            np.copyto(dst[..., r:r + _BLOCK, c:c + _BLOCK], view[..., r:r + _BLOCK, c:c + _BLOCK], casting="unsafe")


@dataclass
class AugmentParams:
    """Per-sample parameters: dihedral transform (0..7), contrast factor, brightness shift."""

    transform: np.ndarray
    contrast: np.ndarray
    brightness: np.ndarray

    @property
    def jitter(self) -> bool:
        return bool(np.any(self.contrast != 1.0) or np.any(self.brightness != 0.0))


class Augment:
    """Random flips and quarter turns (synchronised), optional brightness/contrast jitter.

    ``flips`` and ``rotations`` pick the transform set: both -> all 8, rotations only
    -> the 4 turns, flips only -> identity / left-right / up-down. ``brightness`` is
    the largest shift and ``contrast`` the largest relative scale change, drawn
    uniformly per sample (``contrast=0.1`` -> factor in [0.9, 1.1]).
    """

    def __init__(self, flips: bool = True, rotations: bool = True, brightness: float = 0.0,
                 contrast: float = 0.0):
        if brightness < 0 or not 0 <= contrast < 1:
            raise WorkbenchError(f"brightness must be >= 0 and contrast in [0, 1), got {brightness}, {contrast}")
        self.flips, self.rotations = bool(flips), bool(rotations)
        self.brightness, self.contrast = float(brightness), float(contrast)
        if self.flips and self.rotations:
            self._set = np.arange(8)
        elif self.rotations:
            self._set = np.arange(4)
        elif self.flips:
            self._set = np.array([0, 4, 6])  # identity, left-right, up-down (= rot180 + left-right)
        else:
            self._set = np.array([0])

    def __repr__(self) -> str:
        return (f"Augment(flips={self.flips}, rotations={self.rotations}, brightness={self.brightness}, "
                f"contrast={self.contrast})")

    def params(self, seed: int = 0, epoch=0, index=0) -> AugmentParams:
        """Parameters for each index (arrays broadcast): a pure function of (seed, epoch, index)."""
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        n = np.broadcast_shapes(idx.shape, np.shape(epoch))
        t = self._set[randint(len(self._set), STREAM_AUG, seed, epoch, idx)] if len(self._set) > 1 \
            else np.zeros(n, np.int64)
        if self.contrast:
            c = 1.0 + self.contrast * (2.0 * uniform(STREAM_CONTRAST, seed, epoch, idx) - 1.0)
        else:
            c = np.ones(n)
        if self.brightness:
            b = self.brightness * (2.0 * uniform(STREAM_BRIGHT, seed, epoch, idx) - 1.0)
        else:
            b = np.zeros(n)
        return AugmentParams(np.broadcast_to(t, n).astype(np.int64), np.broadcast_to(c, n).astype(np.float32),
                             np.broadcast_to(b, n).astype(np.float32))

    def __call__(self, image, mask=None, valid=None, seed: int = 0, epoch=0, index=0):
        """Augment one sample (image (C,H,W)) or a batch (image (B,C,H,W), ``index`` per sample).

        Accepts numpy arrays or CPU torch tensors and returns the same kind:
        ``(image, mask, valid)`` with ``None`` for what was not given. Jitter only
        touches pixels where ``valid`` is True (when given).
        """
        single = image.ndim == 3
        p = self.params(seed, epoch, index)
        if single and len(p.transform) != 1:
            raise WorkbenchError("one sample needs one index")
        return self.apply(image, mask, valid, p, single=single)

    def apply(self, image, mask, valid, p: AugmentParams, single: bool = False):
        """Apply given parameters (see :meth:`__call__`)."""
        is_torch = hasattr(image, "numpy") and not isinstance(image, np.ndarray)

        def np_(a):
            if a is None:
                return None
            a = a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else np.asarray(a)
            return a[None] if single else a

        img, msk, val = np_(image), np_(mask), np_(valid)
        if img.shape[-1] != img.shape[-2] and np.any(p.transform & 1):
            raise WorkbenchError(f"quarter turns need square patches, got {img.shape[-2]}x{img.shape[-1]}")
        img = dihedral_batch(img, p.transform)
        msk = None if msk is None else dihedral_batch(msk, p.transform)
        val = None if val is None else dihedral_batch(val, p.transform)
        if p.jitter:
            if not np.issubdtype(img.dtype, np.floating):
                img = img.astype(np.float32)
            shape = (-1,) + (1,) * (img.ndim - 1)
            jittered = img * p.contrast.reshape(shape).astype(img.dtype) + p.brightness.reshape(shape).astype(img.dtype)
            if val is not None:
                jittered = np.where(val[:, None], jittered, img)
            img = jittered
        outs = []
        for a in (img, msk, val):
            if a is not None and single:
                a = a[0]
            if a is not None and is_torch:
                import torch
                a = torch.from_numpy(np.ascontiguousarray(a))
            outs.append(a)
        return tuple(outs)
