"""The one progress bar every loop of the workbench and its tasks draws.

A bar is drawn only when it is wanted (``enabled``: ``--no-progress`` turns it off, and so
does not being the main process) and only on a terminal: when stderr is a file or a pipe
(a log, ``2>&1 | tee``, a test capturing output) tqdm stays silent, so logs hold the
messages and not thousands of carriage-return frames. tqdm is imported on the first bar,
so commands that never draw one do not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", enabled: bool = True, leave: bool = False, initial: int = 0) -> Any:
    """A ``tqdm.auto`` bar over ``iterable`` (or a manual one: ``total`` + ``update(n)``).

    ``enabled=False`` gives a bar that draws nothing but keeps the whole tqdm interface
    (``update``, ``set_postfix``, ``close``, iteration, use as a context manager), so callers
    never branch on it. ``leave``: keep the finished bar on screen.
    """
    from tqdm.auto import tqdm

    # disable=None is tqdm's "only on a terminal"; True draws nothing at all
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                dynamic_ncols=True, disable=None if enabled else True)
