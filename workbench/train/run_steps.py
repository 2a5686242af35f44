"""The steps every task's ``train()`` takes around the ``Trainer``, written once.

    refuse_split_filter(query_override, "classify train")       # before any tile is read
    cfg = resume_config(args.resume, args.overrides, config_from_dict)
    stats = band_stats_for(train_tiles, bands=..., max_tiles=..., seed=..., resume=resume, indices=...)
    contract = input_contract_for(train_tiles, bands=..., resume=resume, indices=...)   # saved as inputs.json
    trainer = Trainer(task, cfg.train, train_ds, val_ds, ...)
    write_tiles_json(trainer.run, catalog=..., query=..., splits=..., tiles={"train": ..., ...})
    summary = trainer.fit()
    model = reload_best(trainer)                                 # score the test split with it
    finish_run(trainer, summary, run_table, started=t0, test=...)

A run's tiles come from the catalog's ``split`` column, its band statistics from its
train tiles (or, on resume, from the file the run saved, so a resumed run normalises
exactly as it started), and every finished run ends the same way: its summary updated,
``runs/latest-<task>`` pointing at it, its table printed. Importing this module is cheap;
torch is imported by the functions that need it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from torch import nn

    from workbench.data.contract import InputContract
    from workbench.data.stats import BandStats
    from workbench.train.run_dir import RunDir


def refuse_split_filter(query_override: Mapping[str, Any] | None, verb: str,
                        splits: Sequence[str] = ("train", "val", "test")) -> None:
    """A train verb takes each split's tiles from the catalog's ``split`` column: ``--split`` would
    put one split's tiles everywhere, so it is refused in one line that says what to do instead."""
    if query_override and query_override.get("split") is not None:
        settings = " / ".join(f"data.{s}_split" for s in splits)
        raise WorkbenchError(f"{verb} takes its {'/'.join(splits)} tiles from the split column: drop --split "
                             f"(or set {settings})")


def _recorded_tiles(resume: str | Path | None) -> dict | None:
    """The resumed run's ``tiles.json`` (None when not resuming, or for a run from before it)."""
    import json

    if resume is None:
        return None
    path = Path(resume) / "tiles.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise WorkbenchError(f"{path}: not readable JSON; the run's tile selection is needed to resume it") from None
    if not isinstance(info, dict) or not isinstance(info.get("query"), dict):
        raise WorkbenchError(f"{path}: has no query; the run's tile selection is needed to resume it")
    return info


def resumed_query(resume: str | Path | None, query: Mapping[str, Any],
                  query_override: Mapping[str, Any] | None) -> dict:
    """The filters a resumed run goes on with: the ones it recorded when it started (command-line
    filters included), not the config's, so ``--resume`` never trains on another tile set. Filters
    given again with ``--resume`` must be the recorded ones: anything else is refused in one line."""
    import json

    info = _recorded_tiles(resume)
    if info is None:
        return dict(query)
    recorded = info["query"]
    given = json.loads(json.dumps(dict(query_override or {}), default=list))
    for key, value in given.items():
        if recorded.get(key) != value:
            flag = "--" + key.replace("_", "-")
            raise WorkbenchError(f"{flag} {value!r} contradicts the resumed run, which selected its tiles with "
                                 f"{key}={recorded.get(key)!r} ({Path(resume) / 'tiles.json'}); resume without "
                                 "filters, or start a new run")
    return dict(recorded)


def check_resumed_tiles(resume: str | Path | None, tiles: Mapping[str, Sequence]) -> None:
    """Refuse to resume when the recorded query now gives other tiles (the catalog changed under
    the run: an import, a re-split): the rest of the run would train on a set it did not start on."""
    info = _recorded_tiles(resume)
    if info is None:
        return
    from workbench.data.tile_table import ids_of

    for role, role_tiles in tiles.items():
        if role not in info:
            continue
        now, then = ids_of(role_tiles), list(info[role])
        if now != then:
            raise WorkbenchError(f"the catalog now gives {len(now)} {role} tile(s) for the resumed run's query, "
                                 f"it started with {len(then)} ({Path(resume) / 'tiles.json'}): the catalog changed "
                                 "since; start a new run")


def resume_config(resume: str | Path, overrides: Sequence[str] | None,
                  config_from_dict: Callable[[dict], Any], runs_root: str | Path | None = None,
                  task: str | None = None) -> Any:
    """The config a resumed run continues with: its own ``config.yaml`` with ``--set`` on top
    (a preset is not re-read: the run must go on with what it started with). With ``task``,
    ``latest``, names and prefixes mean that task's runs, so ``--resume latest`` of one task
    never picks up another task's newer run."""
    from workbench.config import deep_merge, parse_overrides
    from workbench.train.run_dir import RunDir

    run = RunDir.open(resume, runs_root, task=task)
    return config_from_dict(deep_merge(run.read_config(), parse_overrides(list(overrides or []))))


def band_stats_for(train_tiles: Sequence, *, bands: Sequence[int] | None, max_tiles: int | None, seed: int,
                   resume: str | Path | None = None, runs_root: str | Path | None = None,
                   task: str | None = None, indices: Sequence[str] = ()) -> BandStats:
    """Mean / std per band over the train tiles (0-based ``bands``, at most ``max_tiles`` of them,
    picked with ``seed``), and of the spectral ``indices`` (``data.indices``) the model appends;
    on resume, the run's own ``band_stats.json`` when it has one (``task`` as in
    ``resume_config``)."""
    from workbench.data.stats import BandStats, compute_band_stats
    from workbench.train.run_dir import RunDir

    if resume is not None:
        saved = RunDir.open(resume, runs_root, task=task).path / "band_stats.json"
        if saved.is_file():
            return BandStats.load(saved)
    return compute_band_stats(train_tiles, bands=None if bands is None else list(bands), max_tiles=max_tiles,
                              seed=seed, split=None, indices=list(indices or ()))


def pretrained_stats(stats: BandStats, contract: InputContract, weight_layout: str | None,
                     resume: str | Path | None = None) -> BandStats:
    """``stats`` with the mean / std a registered weight layout was trained with for the bands it
    knows (``workbench.weights.layout_stats``): pretrained filters expect their own input scale, as
    TorchGeo's weight transforms and TerraTorch's band means say. Only for reflectance runs; a
    resumed run keeps the statistics it saved (which already are these)."""
    import dataclasses

    from workbench.data.radiometry import REFLECTANCE

    if resume is not None or not weight_layout or contract.units != REFLECTANCE:
        return stats
    from workbench.weights import layout, layout_stats

    lay = layout(weight_layout)
    new, kept = layout_stats(lay, contract.names, stats)
    print(f"note: normalising {', '.join(b for b in contract.names if b not in kept) or 'no band'} as {lay.name} "
          f"expects" + (f"; {', '.join(kept)} with the run's own statistics" if kept else ""), file=sys.stderr)
    return dataclasses.replace(stats, mean=list(new.mean), std=list(new.std))


def input_contract_for(train_tiles: Sequence, *, bands: Sequence[int] | None, resume: str | Path | None = None,
                       runs_root: str | Path | None = None, task: str | None = None,
                       indices: Sequence[str] = ()) -> InputContract:
    """Which bands in which units the run reads, and which spectral ``indices`` it appends
    (``workbench.data.contract``): from the train tiles, or on resume the run's own
    ``inputs.json`` (``task`` as in ``resume_config``)."""
    from workbench.data.contract import FILE, InputContract, contract_of
    from workbench.train.run_dir import RunDir

    if resume is not None:
        saved = RunDir.open(resume, runs_root, task=task).path / FILE
        if saved.is_file():
            return InputContract.load(saved)
    return contract_of(train_tiles, None if bands is None else list(bands), indices=list(indices or ()))


def write_tiles_json(run: RunDir, *, catalog: str | Path, query: Mapping[str, Any],
                     splits: Mapping[str, str] | None = None, tiles: Mapping[str, Sequence], **extra: Any) -> Path:
    """``tiles.json``: the catalog, the whole query, the split names (when given), the tile ids per
    role (``{"train": tiles, ...}``) and any task extras; what ``predict`` reads to tell tiles a run
    has seen from new ones."""
    info: dict[str, Any] = {"catalog": str(catalog), "query": dict(query)}
    if splits is not None:
        info["splits"] = dict(splits)
    from workbench.data.tile_table import ids_of

    info.update({role: ids_of(role_tiles) for role, role_tiles in tiles.items()})
    info.update(extra)
    return run.write_json("tiles.json", info)


def reload_best(trainer: Any) -> nn.Module:
    """The trained model for scoring after ``fit``: no autocast wrapper (see
    ``Trainer.inference_model``), the best checkpoint's weights (EMA ones first) when there
    is one, in eval mode: what ``eval`` on the saved run computes."""
    from workbench.train.checkpoint import load_weights

    model = trainer.inference_model()
    best = trainer.run.best_checkpoint
    if best.is_file():
        load_weights(best, model, prefer_ema=True)
    model.eval()
    return model


def finish_run(trainer: Any, summary: dict, table: Callable[[dict], str] | None = None, *,
               started: float | None = None, **fields: Any) -> dict:
    """End a finished run on the main process: ``total_time_s`` (since ``started``, a
    ``time.perf_counter()`` value) and ``fields`` into ``summary.json``, ``runs/latest-<task>``
    pointed at it, and ``table(summary)`` printed when given. Returns ``summary``."""
    from workbench.train.run_dir import write_latest

    if not trainer.is_main:
        return summary
    if started is not None:
        summary["total_time_s"] = round(time.perf_counter() - started, 1)
    if "total_time_s" in summary:
        fields = {"total_time_s": summary["total_time_s"], **fields}
    trainer.run.update_summary(**fields)
    write_latest(trainer.run.path, trainer.task_name)
    if table is not None:
        print(table(summary))
    return summary


def config_reading(cfg: Any, positions: Sequence[int] | None) -> Any:
    """``cfg`` with ``data.bands`` set to the 1-based bands at 0-based ``positions`` (what
    ``contract.tile_positions`` found in the tiles to score), so a run trained on ``B2 B3 B4 B8``
    exports reads the same bands of a 12-band chip; unchanged when ``positions`` is None."""
    import dataclasses

    if positions is None:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, bands=[int(p) + 1 for p in positions]))
