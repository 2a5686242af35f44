"""The one ``collate_fn`` the workbench's DataLoaders use.

:class:`~workbench.data.dataset.WindowDataset` builds a whole batch in ``__getitems__``
(one vectorised pass, in shared memory in a worker), so the batch it returns must pass
through untouched; any other dataset's list of samples is collated as torch would by
default. One function serves both, so the trainer's default and a task's explicit
``collate_fn=passthrough_collate`` can never drift apart. Lives apart from the dataset
module so that the trainer can use it without importing rasterio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def passthrough_collate(batch: Any) -> Any:
    """A batch a dataset already built (a mapping, e.g. from ``__getitems__``) as it is;
    anything else (a list of samples: tensors, tuples, dicts) through torch's
    ``default_collate``."""
    if isinstance(batch, Mapping):
        return batch
    from torch.utils.data import default_collate

    return default_collate(batch)
