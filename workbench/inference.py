"""Generic pieces of whole-scene inference that every task's ``predict --input`` shares.

    grid = plan_grid(reader.info.height, reader.info.width, size=64, stride=32, where="scene.tif")
    runner = ModelRunner(model, precision="auto")     # eval, channels_last, inference_mode, bf16 where native
    for i, row, x, valid in read_strips(reader.read, grid):
        ...                                           # x: (bands, size, width) strip, valid: (size, width)
        logits = runner(batch)                        # float32 CPU tensor
    transform = grid.transform(reader.info.affine)    # one output pixel per window

Why here and not in a task: a segmentation model and a tile classifier cut a scene the same
way (windows every ``stride`` px, the last row/column snapped to the scene edge, so every
pixel is seen and no window is padded), read it the same way (one strip of window rows at a
time, never the whole scene: a 10980 x 10980 Sentinel-2 tile is 1.9 GB as float32 for four
bands; the next strip is read in a thread while the model runs on this one) and run batches
the same way (channels_last layout, ``torch.inference_mode``, bf16 autocast where the hardware
has it natively: ``predict.precision``, :func:`resolve_precision`). Tasks
differ only in what they make of a window's output (a blended mask, one class per window).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.transform import Affine
from rasterio.windows import Window

from workbench.data.samplers import grid_offsets
from workbench.errors import WorkbenchError

Reader = Callable[[Window], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class WindowGrid:
    """Window offsets over a ``height`` x ``width`` scene: ``rows`` x ``cols`` windows of
    ``size`` px, every ``stride`` px, the last row/column snapped to the scene edge."""

    height: int
    width: int
    size: int
    stride: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols): the shape of a map with one pixel per window."""
        return len(self.rows), len(self.cols)

    @property
    def windows(self) -> int:
        return len(self.rows) * len(self.cols)

    def transform(self, affine: Affine) -> Affine:
        """The geotransform of a map with one pixel per window: the scene's pixels scaled by
        ``stride`` and shifted by ``(size - stride) / 2`` scene px, so that pixel (i, j) is centred
        on the centre of window (i, j) of the regular grid (with stride = size: exactly the
        window). Only a snapped last row/column sits up to ``stride`` px off its pixel."""
        shift = (self.size - self.stride) / 2
        return affine * Affine.translation(shift, shift) * Affine.scale(self.stride)


def plan_grid(height: int, width: int, size: int, stride: int | None = None, where: str = "scene") -> WindowGrid:
    """The windows covering a scene (see :class:`WindowGrid`); ``stride`` defaults to ``size``.

    A scene smaller than one window, a stride below 1 px or above the window (ground no window
    sees) is a one-line error naming ``where``."""
    size = int(size)
    stride = size if stride is None else int(stride)
    if size < 1:
        raise WorkbenchError(f"window of {size} px: must be at least 1 px")
    if not 1 <= stride <= size:
        raise WorkbenchError(f"stride {stride} px: must be between 1 and the window side ({size} px); a larger "
                             "stride would leave ground between windows unseen")
    if height < size or width < size:
        raise WorkbenchError(f"{where}: {width}x{height} px is smaller than one {size} px window")
    return WindowGrid(int(height), int(width), size, stride,
                      tuple(int(r) for r in grid_offsets(int(height), size, stride)),
                      tuple(int(c) for c in grid_offsets(int(width), size, stride)))


def read_strips(read: Reader, grid: WindowGrid) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(i, row offset, x, valid)`` for each row of windows: ``x`` is ``read(Window(0, row,
    width, size))`` (bands, size, width), ``valid`` its (size, width) mask. One strip is read
    ahead in a thread, so reading (GDAL releases the GIL) overlaps the model's work."""
    def load(i: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        r = grid.rows[i]
        x, valid = read(Window(0, r, grid.width, grid.size))
        return i, r, x, valid

    with ThreadPoolExecutor(1, thread_name_prefix="wb-strip") as pool:
        pending = pool.submit(load, 0)
        for i in range(len(grid.rows)):
            current = pending.result()
            if i + 1 < len(grid.rows):
                pending = pool.submit(load, i + 1)
            yield current


def device_of(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters live (cpu for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``bf16`` or ``fp32`` for a ``predict.precision`` setting on ``device``.

    ``auto`` is bf16 where the hardware computes it natively -- CUDA with bf16 support, and CPUs
    with AMX or AVX512-BF16, the very check training's ``mixed_precision: auto`` makes
    (``workbench.train.environment.cpu_has_native_bf16``): on this project's AVX512-BF16 CPU the
    bare model runs 1.5x faster under bf16 autocast, while a CPU without bf16 units emulates it
    and runs slower than fp32. ``bf16`` / ``fp32`` pin it."""
    from workbench.train.environment import cpu_has_native_bf16

    if precision not in PRECISIONS:
        raise WorkbenchError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


class ModelRunner:
    """``runner(x)``: the model's float32 output on the CPU for a float32 (N, C, H, W) numpy batch.

    The model is put in eval mode and channels_last layout (convolutions run faster in it on
    CPUs and GPUs alike); each batch runs under ``torch.inference_mode``, its input copied
    through pinned memory on CUDA. ``precision`` (``auto`` / ``bf16`` / ``fp32``,
    :func:`resolve_precision`) chooses bf16 autocast; None keeps the runner's historic choice,
    bf16 on CUDA only, for callers that pass no setting. ``runner.precision`` is what it uses.
    A model that returns a dict gives its ``"out"`` entry (torchvision's segmentation models do)."""

    def __init__(self, model: torch.nn.Module, channels_last: bool = True, precision: str | None = None):
        self.model, self.device, self.channels_last = model, device_of(model), channels_last
        if precision is None:
            self.precision = "bf16" if self.device.type == "cuda" else "fp32"
        else:
            self.precision = resolve_precision(precision, self.device)
        model.eval()
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            out = self.model(t)
            if isinstance(out, dict):
                out = out["out"]
        return out.float().cpu().contiguous()
