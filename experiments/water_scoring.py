"""The generator's water-fraction correlation: a segmentation run scores the generated tiles.

``workbench generate eval`` generates one tile at each test place (``tasks.generation.evaluate``).
How much water a generated tile shows is read by a trained segmentation model: its pseudo-mask
with every pixel labelled (confidence 0), written beside the tile, and the tile's ``mask_path``
and ``water_fraction`` set in the catalog, exactly as ``workbench segment predict --write-masks
--min-confidence 0`` does. The generation task takes the scorer as a plain callable, so it
imports no other task; this module is where the two meet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


def find_seg_run(ref: str | None) -> tuple[Path | None, str | None]:
    """(run folder, None) or (None, why not): a missing water model is a note, not a failed eval."""
    if ref is None or str(ref).lower() == "none":
        return None, "skipped (--seg-run none)"
    from workbench.train.run_dir import resolve_run

    try:
        return resolve_run(str(ref), "segmentation"), None
    except WorkbenchError as exc:
        return None, (f"unavailable: no segmentation run to score water with ({exc}); train one with "
                      "`workbench segment train` (or `make segment`), or pass --seg-run RUN")


def predict_device() -> str:
    """The device ``segment predict`` picks by default: cuda when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def score_water(seg_run: Path, ids: Sequence[int], catalog_path: Path,
                log: Callable[[str], None] | None = None) -> dict[int, float | None]:
    """Pseudo-mask the tiles ``ids`` with ``seg_run`` (every pixel labelled) and return each tile's
    water fraction as the catalog now holds it; a WorkbenchError says why it could not."""
    from tasks.segmentation.predict import write_masks
    from tasks.segmentation.run import load_run
    from workbench.data.catalog import Catalog

    if log:
        log(f"scoring water with segmentation run {seg_run.name}: workbench segment predict --run {seg_run.name} "
            f"--write-masks --min-confidence 0 --where \"id IN (...{len(ids)} ids)\"")
    try:
        run = load_run(seg_run, device=predict_device())
        with Catalog(catalog_path) as cat:
            tiles = cat.query(ids=[int(i) for i in ids])
            if not tiles:
                raise WorkbenchError(f"none of the {len(ids)} tile ids is in {catalog_path}")
            write_masks(run, cat, tiles, min_confidence=0.0, progress=False)
            rows = cat.query(ids=[int(i) for i in ids])
    except WorkbenchError as exc:
        raise WorkbenchError(f"segment predict failed: {exc}") from exc
    return {r.id: r.water_fraction for r in rows}


def evaluate_generator(folder: Any, opts: Any, seg_run: str | None = "latest", query_override: dict | None = None,
                       catalog: str | Path | None = None, out_dir: str | Path | None = None,
                       log: Callable[[str], None] | None = None) -> dict:
    """``workbench generate eval``: the generator's evaluation (``tasks.generation.evaluate.evaluate``)
    with its water figures scored by the segmentation run ``seg_run`` ('latest', a run, or None /
    'none' to skip them). ``folder`` is a generation model folder, ``opts`` its ``EvalOptions``."""
    from tasks.generation.evaluate import evaluate

    path, note = find_seg_run(seg_run)
    scorer = None if path is None else partial(score_water, path, log=log)
    return evaluate(folder, opts, query_override, catalog=catalog, out_dir=None if out_dir is None else Path(out_dir),
                    log=log, water_scorer=scorer, water_record={"seg_run": None if path is None else str(path),
                                                                "note": note})
