"""``workbench generate seg-experiment``: do generated tiles help a segmentation model?

One command, five steps, each a plain call into a task (``tasks.segmentation`` trains and
predicts, ``tasks.generation`` generates); the catalog carries the tiles between them:

1. **baseline** (real tiles only): what ``segment train --preset P --name <exp>-real`` runs,
   with the user's ``--set`` overrides, or an existing run (``--baseline RUN``).
2. **generate** N tiles at the places of the baseline's *train* tiles (evenly spread and
   deterministic; when N exceeds them, each place again with other seeds), from each place's
   caption and metadata. Each is a GeoTIFF in the catalog: source ``generated``, split = the
   baseline's train split, ``parent_id`` = the real tile, ``extra.experiment`` = the
   experiment id. Only train places are used, so nothing generated is derived from, or lands
   in, the geographic val/test blocks.
3. **pseudo-masks**: what ``segment predict --run <baseline> --write-masks --min-confidence C``
   runs, on those tiles; pixels less confident than C are 255 (nodata, never trained on).
4. **real + generated**: ``segment train --preset <baseline>/config.yaml`` (the very same
   config) with ``data.source`` plus ``generated`` and ``data.where`` ANDed with "a real tile,
   or a tile of this experiment whose pseudo-mask has known pixels" (``experiment_where``).
   Fair by default: the baseline's number of optimizer steps (``train.max_steps``);
   ``--equal-epochs`` keeps its epochs instead (more tiles, more steps).
5. **report**: both runs' train tiles, steps, test mIoU and water IoU on the same real test
   tiles and the difference; ``experiment.json``, ``panel.png`` (real | generated |
   pseudo-mask) and ``logs/`` (what each segmentation step printed) in the output folder.
   ``experiment.json`` records each step as the ``workbench`` command that does the same, to
   read and re-run by hand.

``runs/latest-segmentation`` is left at the real-only baseline.
"""

from __future__ import annotations

import io
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from workbench.errors import WorkbenchError
from workbench.train.run_dir import write_latest

GENERATED = "generated"
SEED_BASE = 10_000          # ``generate eval`` uses seed + k from 0: these tiles never repeat its noise
PANEL_TILES = 8
EXPERIMENT_KEY = "json_extract(extra, '$.experiment')"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# A baseline's recorded query keys the second run replays as CLI filters (they hold for generated tiles too) ...
_REPLAY_FLAGS = {"bbox": "--bbox", "water_min": "--water-min", "water_max": "--water-max",
                 "date_from": "--date-from", "date_to": "--date-to"}
# ... and the ones only real tiles can meet (a generated row has no label or prediction, and the
# generator's model id): they become where-terms on the real tiles alone.
_REAL_ONLY = ("label", "pred_label", "model_id", "ids")


@dataclass
class ExperimentOptions:
    preset: str = "water"                   # segmentation preset (name or YAML) of the baseline
    baseline: str | None = None             # reuse this segmentation run instead of training one
    overrides: list[str] = field(default_factory=list)   # --set KEY=VALUE for both trainings
    model: str | None = None                # generator folder or generation run (None: the default model)
    n: int = 1024                           # generated tiles
    steps: int | None = None                # sampler; None: the model's own defaults, else eval's
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = SEED_BASE                   # tile k uses seed + k
    size: int | None = None                 # generated tile side in px (None: the model's)
    batch_size: int = 64
    device: str = "auto"
    min_confidence: float = 0.9             # pseudo-mask pixels below it are nodata
    equal_epochs: bool = False              # default: equal optimizer steps
    name: str | None = None                 # experiment id (default: the output folder's name)
    progress: bool = True                   # progress bars, and the steps' own output on stderr


T = TypeVar("T")


# ------------------------------------------------------------------------------ the second run's query

def sql_text(value: Any) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def experiment_filter(experiment: str) -> str:
    """The generated tiles of ``experiment`` whose pseudo-mask has known pixels (an all-nodata mask
    has no water fraction: nothing to learn from)."""
    return (f"{EXPERIMENT_KEY} = {sql_text(experiment)} AND mask_path IS NOT NULL "
            "AND water_fraction IS NOT NULL")


def experiment_where(base_where: str | None, experiment: str, real_only: Sequence[str] = ()) -> str:
    """The real+generated run's ``data.where``: the baseline's where (for every tile, as it selects
    real ones), the ``real_only`` terms for real tiles only, and of the generated tiles only this
    experiment's with a usable pseudo-mask."""
    parts = [f"({base_where.strip()})"] if base_where and base_where.strip() else []
    parts += [f"(source = '{GENERATED}' OR {term})" for term in real_only]
    parts.append(f"(source != '{GENERATED}' OR ({experiment_filter(experiment)}))")
    return " AND ".join(parts)


def with_generated(source: str | Sequence[str] | None) -> str | None:
    """The baseline's ``data.source`` plus ``generated``, as the comma list a config holds; None
    (any source) stays None: the where clause alone picks the generated tiles."""
    if source is None:
        return None
    items = source.split(",") if isinstance(source, str) else [str(s) for s in source]
    items = [s.strip() for s in items if s and s.strip()]
    if not items:
        return None
    return ",".join(items if GENERATED in items else [*items, GENERATED])


def replay_query(query: dict) -> tuple[list[str], list[str]]:
    """The baseline's recorded tile query beyond source/where: (CLI filters for the second run,
    where-terms for real tiles only)."""
    flags: list[str] = []
    terms: list[str] = []
    for key, value in query.items():
        if value is None or key in ("source", "where", "split"):
            continue
        if key in _REPLAY_FLAGS:
            flags += [_REPLAY_FLAGS[key], *(str(v) for v in (value if key == "bbox" else [value]))]
        elif key in _REAL_ONLY:
            values = [value] if isinstance(value, (str, int)) else list(value)
            literals = [str(int(v)) for v in values] if key == "ids" else [sql_text(v) for v in values]
            terms.append(f"{'id' if key == 'ids' else key} IN ({', '.join(literals)})")
        else:
            raise WorkbenchError(f"the baseline selected its tiles with {key}={value!r}, which the real+generated "
                                 "run cannot replay: use a baseline trained without it")
    return flags, terms


def replay_filters(query: dict) -> dict[str, Any]:
    """The baseline's recorded CLI filters (``--bbox --water-min ...``) as the ``query_override``
    ``segment train`` gets from them: the same keys and value types the command line gives."""
    filters: dict[str, Any] = {}
    for key in _REPLAY_FLAGS:
        value = query.get(key)
        if value is None:
            continue
        if key == "bbox":
            filters[key] = tuple(float(v) for v in value)
        elif key in ("water_min", "water_max"):
            filters[key] = float(value)
        else:
            filters[key] = str(value)
    return filters


def places_for(tiles: Sequence, n: int) -> list:
    """``n`` places: evenly spread over ``tiles`` (deterministic); when ``n`` exceeds them, every tile
    in turn again (the seeds differ, so do the images)."""
    from tasks.generation.data import spread

    tiles = list(tiles)
    if n <= len(tiles):
        return spread(tiles, n)
    return [tiles[k % len(tiles)] for k in range(n)]


# ------------------------------------------------------------------------------ runs and steps

def read_run(path: Path) -> dict:
    """A segmentation run's config.yaml, summary.json and tiles.json (plain dicts)."""
    import yaml

    def load_json(name: str) -> dict:
        try:
            return json.loads((path / name).read_text())
        except (OSError, ValueError):
            return {}

    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WorkbenchError(f"{path}: no readable config.yaml ({exc})") from None
    return {"path": path, "config": config, "summary": load_json("summary.json"), "tiles": load_json("tiles.json"),
            "metrics": load_json("metrics.json")}


def find_baseline(ref: str) -> Path:
    """``--baseline RUN``: a finished segmentation run (folder, name, unique prefix or 'latest')."""
    from workbench.train.run_dir import resolve_run

    try:
        path = resolve_run(ref, "segmentation")
    except WorkbenchError as exc:
        raise WorkbenchError(f"--baseline {ref}: {exc}") from None
    ckpts = path / "checkpoints"
    if not (path / "config.yaml").is_file() or not any((ckpts / n).is_file()
                                                        for n in ("best.safetensors", "last.safetensors")):
        raise WorkbenchError(f"--baseline {ref}: {path} is not a trained segmentation run "
                             "(needs config.yaml and checkpoints/)")
    return path


def baseline_query(run: dict) -> dict:
    """The tile query the baseline trained with (tiles.json, CLI filters included), else its config's."""
    from workbench.data.catalog import run_query

    recorded = (run["tiles"] or {}).get("query")
    if recorded is not None:
        return dict(recorded)
    data = run["config"].get("data") or {}
    return run_query(data.get("source"), data.get("where"))


def splits_of(run: dict) -> dict[str, str]:
    data = run["config"].get("data") or {}
    recorded = (run["tiles"] or {}).get("splits") or {}
    return {s: recorded.get(s) or data.get(f"{s}_split") or s for s in ("train", "val", "test")}


class Steps:
    """Runs the experiment's segmentation steps in this process: what a step prints (its stdout, and
    its stderr with the progress bars) goes to ``logs/<step>.log``, its stderr also live when
    ``echo``; a WorkbenchError from a step is one line naming the step and its log. Each step is
    recorded as the ``workbench`` command that does the same."""

    def __init__(self, logs: Path, echo: bool):
        self.logs, self.echo = logs, echo
        self.commands: list[dict] = []

    def run(self, step: str, command: Sequence[Any], call: Callable[[], T]) -> T:
        self.commands.append({"step": step, "command": "workbench " + " ".join(shell_quote(str(a)) for a in command)})
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', step)}.log"
        with open(log_path, "w", encoding="utf-8", errors="replace") as log:
            log.write(f"# {step}: in-process, as $ {self.commands[-1]['command']}\n")
            out, err = _Tee(log), _Tee(log, sys.stderr if self.echo else None)
            try:
                with redirect_stdout(out), redirect_stderr(err):
                    return call()
            except WorkbenchError as exc:
                raise WorkbenchError(f"step '{step}' failed: {exc} (log: {log_path})") from exc


class _Tee(io.TextIOBase):
    """A text stream that writes to the step's log and, when given, to a live stream too."""

    def __init__(self, log: TextIO, live: TextIO | None = None):
        self.log, self.live = log, live

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.live is not None:
            self.live.write(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.log.flush()
        if self.live is not None:
            self.live.flush()


def shell_quote(arg: str) -> str:
    """``shlex.quote``, but an argument holding SQL quotes goes in double quotes: a command to read and re-run."""
    quoted = shlex.quote(arg)
    if quoted == arg or "'" not in arg or "!" in arg.replace("!=", ""):   # "!x": history expansion
        return quoted
    return '"' + re.sub(r'([\\"$`])', r"\\\1", arg) + '"'


# ------------------------------------------------------------------------------ the experiment

def default_out_dir() -> Path:
    from tasks.generation.evaluate import default_out_dir as fresh

    return fresh("runs/experiments", "seg-generated")  # outputs stay out of the experiments/ package


def run_experiment(opts: ExperimentOptions, catalog: str | Path | None = None, out_dir: str | Path | None = None,
                   log: Callable[[str], None] | None = None) -> dict:
    """The five steps (module docstring); returns what ``experiment.json`` holds, plus ``out_dir``."""
    from tasks.generation.evaluate import EvalOptions, sampler_settings
    from tasks.generation.predict import Options, check_options
    from tasks.generation.run import resolve_model
    from workbench.data.catalog import Catalog, open_existing

    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    # ---- every input checked before the first (long) step
    for flag, value, low in (("--n", opts.n, 1), ("--batch-size", opts.batch_size, 1)):
        if value < low:
            raise WorkbenchError(f"{flag} {value}: must be at least {low}")
    if not 0.0 <= opts.min_confidence <= 1.0:
        raise WorkbenchError(f"--min-confidence {opts.min_confidence:g}: expected a number between 0 and 1")
    with open_existing(catalog, read_only=True) as cat:
        catalog_path = cat.path.resolve()
    base_path = find_baseline(opts.baseline) if opts.baseline else None
    if base_path is not None:
        used = (read_run(base_path)["tiles"] or {}).get("catalog")
        if used and Path(used).resolve() != catalog_path:
            raise WorkbenchError(f"--baseline {opts.baseline} was trained on the catalog {used}, this experiment "
                                 f"uses {catalog_path}: pass --catalog {used}")
    folder = resolve_model(opts.model)
    gen = EvalOptions(n=opts.n, seed=opts.seed, batch_size=opts.batch_size, device=opts.device,
                      progress=opts.progress, **sampler_settings(folder, opts.steps, opts.guidance, opts.scheduler))
    size = check_options(Options(steps=gen.steps, guidance=gen.guidance, scheduler=gen.scheduler, seed=opts.seed,
                                 size=opts.size), folder)
    out_dir = Path(out_dir) if out_dir else default_out_dir()
    if (out_dir / "experiment.json").exists():
        raise WorkbenchError(f"{out_dir} already holds an experiment (experiment.json): choose another --out")
    exp = opts.name or out_dir.name
    if not _NAME.match(exp):
        raise WorkbenchError(f"experiment name {exp!r}: use letters, digits and _ . + - (--name)")
    with Catalog(catalog_path, read_only=True) as cat:
        taken = cat.count(source=GENERATED, where=f"{EXPERIMENT_KEY} = {sql_text(exp)}")
    if taken:
        raise WorkbenchError(f"the catalog already holds {taken} generated tile(s) of an experiment named {exp!r}: "
                             "choose another --name (or --out)")
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = Steps(out_dir / "logs", echo=opts.progress)
    seconds: dict[str, float] = {}

    # ---- 1. the baseline, real tiles only
    t = time.perf_counter()
    sets = [a for o in opts.overrides for a in ("--set", o)]
    if base_path is None:
        say(f"[1/5 baseline] training on real tiles only: segment train --preset {opts.preset} "
            f"--name {exp}-real{''.join(' ' + shell_quote(a) for a in sets)}")
        base_path = steps.run("baseline", ["segment", "train", "--preset", opts.preset, *sets, "--name", f"{exp}-real"],
                              lambda: train_segmentation(opts.preset, [*opts.overrides, f"name={exp}-real"],
                                                         catalog_path))
    else:
        say(f"[1/5 baseline] reusing segmentation run {base_path}")
        if opts.overrides:
            say("note: the baseline is already trained, so the --set overrides change the real+generated run only")
    seconds["baseline"] = round(time.perf_counter() - t, 1)
    base = read_run(base_path)
    base_steps = base["summary"].get("steps")
    if not opts.equal_epochs and not (isinstance(base_steps, int) and base_steps >= 1):
        raise WorkbenchError(f"{base_path}: summary.json has no step count (an unfinished run?): train it to the end "
                             "or use --equal-epochs")
    query, splits = baseline_query(base), splits_of(base)
    replay_flags, real_only = replay_query(query)          # a query we cannot replay fails before generating
    window = int((base["config"].get("data") or {}).get("window") or 0)
    if window and size < window:
        raise WorkbenchError(f"generated tiles would be {size} px, smaller than the baseline's window "
                             f"(data.window={window}): pass --size {window} or more")

    # ---- 2. generated tiles at the baseline's train places
    t = time.perf_counter()
    places, real_train = _train_places(catalog_path, base, query, splits["train"], opts.n)
    say(f"[2/5 generate] {opts.n} tiles at {len({p.id for p in places})} of the baseline's {len(real_train)} "
        f"{splits['train']} places with {folder.root} ({gen.scheduler}, {gen.steps} steps, guidance "
        f"{gen.guidance:g}, seeds {opts.seed}+k)")
    gen_ids = _generate(folder, gen, places, size, out_dir / "generated", exp, splits["train"], catalog_path)
    seconds["generate"] = round(time.perf_counter() - t, 1)

    # ---- 3. pseudo-masks by the baseline, through the catalog
    t = time.perf_counter()
    say(f"[3/5 pseudo-masks] segment predict --run {base_path.name} --write-masks --min-confidence "
        f"{opts.min_confidence:g} (pixels below: nodata 255)")
    masked = steps.run("pseudo-masks", ["segment", "predict", "--run", base_path, "--write-masks",
                                        "--min-confidence", f"{opts.min_confidence:g}", "--source", GENERATED,
                                        "--where", f"{EXPERIMENT_KEY} = {sql_text(exp)}", "--no-progress", "--json"],
                       lambda: pseudo_masks(base_path, catalog_path, exp, opts.min_confidence))
    with Catalog(catalog_path, read_only=True) as cat:
        rows = cat.query(source=GENERATED, where=f"{EXPERIMENT_KEY} = {sql_text(exp)}")
    usable = [r for r in rows if r.mask_path and r.water_fraction is not None]
    seconds["pseudo_masks"] = round(time.perf_counter() - t, 1)
    if not usable:
        raise WorkbenchError(f"no generated tile got a pixel at confidence >= {opts.min_confidence:g} from "
                             f"{base_path.name}: lower --min-confidence or train a better baseline")

    # ---- 4. real + generated, the baseline's own config
    t = time.perf_counter()
    source = with_generated(query.get("source"))
    where = experiment_where(query.get("where"), exp, real_only)
    joining = _count_joining(catalog_path, query, where, splits["train"])
    if not joining:
        raise WorkbenchError(f"none of the {len(usable)} generated tiles with a pseudo-mask passes the baseline's "
                             f"tile filters ({query}), e.g. its water-fraction where: nothing to add to it")
    # JSON-quoted values: an override reads YAML, and a where clause is not always a plain YAML scalar
    mixed_sets = [f"data.source={json.dumps(source)}", f"data.where={json.dumps(where)}",
                  *([] if opts.equal_epochs else [f"train.max_steps={base_steps}"])]
    mixed_args = ["segment", "train", "--preset", base_path / "config.yaml", *sets,
                  *(a for o in mixed_sets for a in ("--set", o)), *replay_flags, "--name", f"{exp}-real+generated"]
    say(f"[4/5 real+generated] {joining} of the {len(usable)} generated tiles with a pseudo-mask pass the "
        "baseline's tile filters and join its real tiles; "
        + ("the same epochs" if opts.equal_epochs else f"the baseline's {base_steps} optimizer steps"))
    mixed_path = steps.run("real+generated", mixed_args,
                           lambda: train_segmentation(str(base_path / "config.yaml"),
                                                      [*opts.overrides, *mixed_sets, f"name={exp}-real+generated"],
                                                      catalog_path, replay_filters(query)))
    # The real+generated run learnt from pseudo-labels: a measurement, not the model a later
    # ``--run latest`` (predict, map, eval's water scoring) should pick up.
    write_latest(base_path, "segmentation")
    mixed = read_run(mixed_path)
    seconds["real_generated"] = round(time.perf_counter() - t, 1)

    # ---- 5. the report
    say("[5/5 report]")
    checks, sources = _check_runs(catalog_path, base, mixed, splits)
    runs = [run_row("real-only", base, sources), run_row("real+generated", mixed, sources)]
    difference = {k: (None if runs[0][k] is None or runs[1][k] is None else runs[1][k] - runs[0][k])
                  for k in ("test_miou", "test_water_iou")}
    panel = _panel(out_dir / "panel.png", catalog_path, usable, exp, say)
    result = {
        "experiment": exp, "catalog": str(catalog_path), "baseline_reused": opts.baseline is not None,
        "preset": None if opts.baseline else opts.preset, "overrides": list(opts.overrides),
        "fairness": "equal epochs" if opts.equal_epochs else "equal optimizer steps",
        "query": query, "splits": splits,
        "generator": {"model": str(folder.root), "model_id": folder.model_id(), "size": size, "steps": gen.steps,
                      "guidance": gen.guidance, "scheduler": gen.scheduler, "seed": opts.seed,
                      "device": opts.device},
        "generated": {"requested": opts.n, "tiles": len(gen_ids), "places": len({p.id for p in places}),
                      "train_places": len(real_train), "pseudo_masks": masked, "usable": len(usable),
                      "joining": joining,
                      "min_confidence": opts.min_confidence,
                      "mean_pseudo_water_fraction": _mean([r.water_fraction for r in usable]),
                      "ids": gen_ids},
        "runs": runs, "difference": difference, "checks": checks,
        "real_generated_config": {"data.source": source, "data.where": where,
                                  "train.max_steps": None if opts.equal_epochs else base_steps,
                                  "filters": replay_flags},
        "commands": steps.commands, "panel": None if panel is None else str(panel),
        "seconds": {**seconds, "total": round(time.perf_counter() - t0, 1)},
        "options": asdict(opts),
    }
    (out_dir / "experiment.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["out_dir"] = str(out_dir)
    return result


def train_segmentation(preset: str, overrides: list[str], catalog_path: Path,
                       query_override: dict | None = None) -> Path:
    """What ``segment train --preset PRESET --set ... [filters]`` runs: the preset (a name or a run's
    config.yaml) with the overrides, trained on this catalog; the run folder."""
    from tasks.segmentation.config import load_config
    from tasks.segmentation.train import train
    from workbench.commands.train_verb import fold_query

    # as the train verb does: the filters land in the run's config.yaml, so the run records its query
    cfg = fold_query(load_config(preset, overrides), query_override or {})
    summary = train(cfg, catalog=str(catalog_path), query_override=query_override or {})
    if not summary.get("run_dir"):
        raise WorkbenchError(f"training {preset} ended without a run folder")
    return Path(summary["run_dir"])


def pseudo_masks(run_path: Path, catalog_path: Path, exp: str, min_confidence: float) -> int:
    """What ``segment predict --run RUN --write-masks --min-confidence C`` runs on this experiment's
    generated tiles: their pseudo-masks, ``mask_path`` and ``water_fraction`` set; how many."""
    from experiments.water_scoring import predict_device
    from tasks.segmentation.predict import write_masks
    from tasks.segmentation.run import load_run
    from workbench.data.catalog import Catalog

    query = {"source": GENERATED, "where": f"{EXPERIMENT_KEY} = {sql_text(exp)}"}
    run = load_run(str(run_path), device=predict_device())
    with Catalog(catalog_path) as cat:
        tiles = cat.query(**query)
        if not tiles:
            raise WorkbenchError(f"no catalog tiles match {query}")
        return write_masks(run, cat, tiles, min_confidence=min_confidence, progress=False)


def _train_places(catalog_path: Path, base: dict, query: dict, split: str, n: int) -> tuple[list, list]:
    """The baseline's real train tiles (its query and split; only the ids it trained on when
    tiles.json lists them) and ``n`` places spread over them."""
    from workbench.data.catalog import Catalog

    with Catalog(catalog_path, read_only=True) as cat:
        tiles = [t for t in cat.query(**{**query, "split": split}) if t.mask_path and t.source != GENERATED]
    trained = (base["tiles"] or {}).get("train")
    if trained:
        ids = set(trained)
        tiles = [t for t in tiles if t.id in ids]
    if not tiles:
        raise WorkbenchError(f"no real {split} tiles of the baseline {base['path'].name} are left in {catalog_path} "
                             f"(query {query})")
    return places_for(tiles, n), tiles


def _generate(folder, gen, places: Sequence, size: int, out_dir: Path, exp: str, split: str,
              catalog_path: Path) -> list[int]:
    """Generate one tile per place (seed + k) and add them to the catalog; their ids."""
    from tasks.generation.data import metadata_vector
    from tasks.generation.evaluate import (
        caption_template,
        captions_of,
        generate_all,
        generated_rows,
    )
    from tasks.generation.pipeline import load_pipeline
    from workbench.data.catalog import Catalog

    prompts = captions_of(places, caption_template(folder))
    seeds = [gen.seed + k for k in range(len(places))]
    pipe = load_pipeline(folder, scheduler=gen.scheduler, device=gen.device)
    metadata = [metadata_vector(t) for t in places] if pipe.uses_metadata else None
    images = generate_all(pipe, prompts, metadata, seeds, gen, size, "generating")
    rows = generated_rows(images, places, prompts, seeds, folder, gen, out_dir, extra={"experiment": exp},
                          split=split)
    with Catalog(catalog_path) as cat:
        return cat.add_tiles(rows, replace=True)


def _count_joining(catalog_path: Path, query: dict, where: str, split: str) -> int:
    """How many of the experiment's generated tiles the real+generated run will train on."""
    from workbench.data.catalog import Catalog

    q = {k: v for k, v in query.items() if k not in _REAL_ONLY}   # those are where-terms now
    with Catalog(catalog_path, read_only=True) as cat:
        return cat.count(**{**q, "source": GENERATED, "where": where, "split": split})


def _check_runs(catalog_path: Path, base: dict, mixed: dict, splits: dict) -> tuple[dict, dict[int, str]]:
    """No generated tile may be scored (val/test of the second run); both runs score the same test tiles."""
    from workbench.data.catalog import Catalog

    ids = {i for run in (base, mixed) for key in ("train", "val", "test") for i in (run["tiles"] or {}).get(key) or []}
    with Catalog(catalog_path, read_only=True) as cat:
        sources = {t.id: t.source for t in cat.query(ids=sorted(ids))} if ids else {}
    leaked = {key: [i for i in (mixed["tiles"] or {}).get(key) or [] if sources.get(i) == GENERATED]
              for key in ("val", "test")}
    if any(leaked.values()):
        shown = ", ".join(f"{len(v)} in {splits[k]}" for k, v in leaked.items() if v)
        raise WorkbenchError(f"generated tiles reached the scored splits of {mixed['path'].name} ({shown}): "
                             "its numbers are not comparable")
    base_test = sorted((base["tiles"] or {}).get("test") or [])
    mixed_test = sorted((mixed["tiles"] or {}).get("test") or [])
    return {"generated_in_val": 0, "generated_in_test": 0, "same_test_tiles": base_test == mixed_test,
            "test_tiles": len(base_test)}, sources


def run_row(label: str, run: dict, sources: dict[int, str]) -> dict:
    """One line of the report: train tiles by kind, steps, test mIoU and water IoU."""
    summary, tiles = run["summary"], run["tiles"] or {}
    test = summary.get("test") or {}
    metrics = run.get("metrics") or {}
    per_class = {r.get("name"): r for r in metrics.get("per_class") or []}
    train = tiles.get("train") or []
    generated = sum(1 for i in train if sources.get(i) == GENERATED)
    return {"label": label, "run": str(run["path"]), "train_tiles": {"real": len(train) - generated,
                                                                     "generated": generated},
            "steps": summary.get("steps"), "epochs": summary.get("epochs"), "status": summary.get("status"),
            "test_tiles": len(tiles.get("test") or []),
            "test_miou": _finite(test.get("mean_iou", metrics.get("mean_iou"))),
            "test_water_iou": _finite(test.get("water_iou", (per_class.get("water") or {}).get("iou")))}


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# ------------------------------------------------------------------------------ pictures and text

def _panel(path: Path, catalog_path: Path, usable: Sequence, exp: str, say) -> Path | None:
    """``panel.png``: a few generated tiles (evenly spread) between their real place and their pseudo-mask.
    A panel that cannot be drawn is a note, never a failed experiment (the numbers are written)."""
    from tasks.generation.data import spread
    from workbench.data.catalog import Catalog

    picks = spread(list(usable), PANEL_TILES)
    try:
        with Catalog(catalog_path, read_only=True) as cat:
            parents = {t.id: t for t in cat.query(ids=[p.parent_id for p in picks if p.parent_id is not None])}
        return write_panel(path, [(parents.get(p.parent_id), p) for p in picks], title=f"experiment {exp}")
    except Exception as exc:
        say(f"could not draw {path.name}: {exc}")
        return None


def _as_rgb(image):
    import numpy as np

    from workbench.train.plots import rgb

    if image.dtype == np.uint8 and image.shape[0] >= 3:
        return image[:3].transpose(1, 2, 0)
    return rgb(image)


def write_panel(path: Path, pairs: Sequence[tuple[Any, Any]], title: str = "") -> Path:
    """One row per (real tile, generated tile): real | generated | pseudo-mask (land, water, grey nodata)."""
    import numpy as np
    from matplotlib.figure import Figure

    from workbench.data import geotiff
    from workbench.train.plots import save_figure

    colours = {0: (0.80, 0.72, 0.50), 1: (0.12, 0.35, 0.80)}
    fig = Figure(figsize=(6.6, 2.2 * len(pairs)))
    axes = fig.subplots(len(pairs), 3, squeeze=False)
    for row, (real, gen) in zip(axes, pairs):
        if real is not None:
            row[0].imshow(_as_rgb(geotiff.read(real.path)), interpolation="nearest")
            row[0].set_title(f"real #{real.id}", fontsize=8)
        row[1].imshow(_as_rgb(geotiff.read(gen.path)), interpolation="nearest")
        row[1].set_title(f"generated #{gen.id}", fontsize=8)
        mask = geotiff.read(gen.mask_path)[0]
        shown = np.full(mask.shape + (3,), 0.6)
        for value, colour in colours.items():
            shown[mask == value] = colour
        known = float(np.isin(mask, list(colours)).mean())
        wf = "-" if gen.water_fraction is None else f"{100 * gen.water_fraction:.0f}%"
        row[2].imshow(shown, interpolation="nearest")
        row[2].set_title(f"pseudo-mask: {wf} water, {100 * known:.0f}% known", fontsize=8)
        for ax in row:
            ax.axis("off")
    return save_figure(fig, path, title, dpi=100)


def report(result: dict) -> str:
    def num(v, signed: bool = False):
        return "-" if v is None else (f"{v:+.4f}" if signed else f"{v:.4f}")

    head = ("", "real tiles", "generated", "steps", "epochs", "test mIoU", "test water IoU")
    rows = [head]
    for r in result["runs"]:
        rows.append((r["label"], str(r["train_tiles"]["real"]), str(r["train_tiles"]["generated"]),
                     str(r["steps"] if r["steps"] is not None else "-"),
                     str(r["epochs"] if r["epochs"] is not None else "-"), num(r["test_miou"]),
                     num(r["test_water_iou"])))
    d = result["difference"]
    rows.append(("difference", "", "", "", "", num(d["test_miou"], True), num(d["test_water_iou"], True)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    table = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    g, gen, checks = result["generated"], result["generator"], result["checks"]
    lines = [f"experiment  {result['experiment']}",
             f"generated   {g['tiles']} tiles at {g['places']} of {g['train_places']} train places "
             f"({Path(gen['model']).name}, {gen['scheduler']} {gen['steps']} steps, guidance {gen['guidance']:g}); "
             f"pseudo-masks at confidence >= {g['min_confidence']:g}: {g['usable']} with known pixels, "
             f"{g['joining']} pass the baseline's tile filters",
             f"fairness    {result['fairness']}",
             f"test split  {checks['test_tiles']} real tiles, "
             + ("the same for both runs" if checks["same_test_tiles"] else "NOT the same tiles for both runs"),
             "", *table, "",
             *(f"{r['label']:<15} {r['run']}" for r in result["runs"])]
    if result.get("panel"):
        lines.append(f"panel           {result['panel']}")
    lines.append(f"time            {result['seconds']['total']:.0f} s")
    return "\n".join(lines)
