"""``train(cfg)``: fine-tune a DiffusionSat model on catalog tiles, the way the paper did.

    from tasks.generation.config import load_config
    from tasks.generation.train import train
    summary = train(load_config("bluemarble-small"))
    # -> runs/generation-bluemarble-small-<time>/model/  (a complete DiffusionSat folder)

The recipe (DIFFUSIONSAT.md): the VAE and the CLIP text encoder are frozen; only the SatUNet
trains, with the objective its scheduler names (v for the released DiffusionSat checkpoints,
SD 2.1's; epsilon or v for a fresh model, whose
scheduler comes from ``model.build.scheduler``, and zero terminal SNR needs v), min-SNR loss
weights ``min(snr, gamma) / snr`` (gamma 5), EMA of its weights, metadata dropout (each of
the 7 values set to 0 with p 0.1, which is what makes all-zero metadata the unconditional
input) and caption dropout to the empty prompt, gradient checkpointing on a GPU and mixed
precision through the shared trainer (bf16 on a GPU). Exact resume comes from the trainer:
every random draw of a step (flip, posterior sample, noise, timestep, dropout masks) is
taken from the global torch RNG, which its checkpoints save and restore.

Steps: the tiles (``data.select``) and their captions, the starting model folder (a fresh
miniature one for ``model.init``), then the shared trainer driving ``task.VaeTask`` (a fresh
model first fits its random VAE to the tiles when ``vae.enabled``: a run of its own,
``<name>-vae``) and ``task.UnetTask`` (the UNet on that VAE's latents; with ``data.cache``
each tile and each distinct caption is encoded once, so a step costs only the UNet), then the
trained model folder. The loss pieces are ``losses``; the steps every task shares (resume
config, the "drop --split" error, tiles.json, the end of a run) are ``workbench.train.run_steps``.

Run-dir contract (``runs/generation-<name>-<time>/``): ``config.yaml``, ``generation.json``
(stage, base model, caption template, cache timing), ``caption_template.yaml``,
``captions.json``, ``tiles.json``, ``checkpoints/``, ``model/`` (the trained DiffusionSat
folder with the EMA UNet; ``workbench generate --run <run>``).
``runs/latest-generation`` names the last finished UNet run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError

from .config import GenerationConfig
from .data import Selection

TASK = "generation"
STAGE_FILE = "generation.json"


def resolve_resume_config(resume: str | Path, overrides: list[str] | None = None) -> GenerationConfig:
    """The config of a run being resumed (its config.yaml), with ``--set`` overrides on top."""
    from workbench.train.run_steps import resume_config

    from .config import config_from_dict

    return resume_config(resume, overrides, config_from_dict, task=TASK)


# ------------------------------------------------------------------------------ model folders

def build_init_folder(cfg: GenerationConfig, corpus: Sequence[str], folder: Path) -> Path:
    """A fresh miniature DiffusionSat (``model.init`` + ``model.build`` overrides), tokenizer learned
    from the run's captions plus the workbench's stock ones (so other prompts still tokenize into
    words); written to ``folder``."""
    from .models import CAPTIONS, build_model
    from .pipeline import quiet_loading

    spec = {"preset": cfg.model.init, **dict(cfg.model.build or {})}
    with quiet_loading():
        return build_model(spec, folder, corpus=list(dict.fromkeys([*corpus, *CAPTIONS])))


def resolve_base(path: str | Path) -> Path:
    """``model.path``: a DiffusionSat folder, or a generation run (its ``model/``), or ``latest``."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    from workbench.train.run_dir import resolve_run

    try:
        run = resolve_run(str(path), TASK)
    except WorkbenchError:
        raise WorkbenchError(f"model.path {path}: no such model folder or generation run") from None
    if not (run / "model").is_dir():
        raise WorkbenchError(f"model.path {path}: run {run.name} has no model/ folder (not finished?)")
    return run / "model"


def copy_folder(src: Path, dst: Path) -> None:
    """Copy a model folder (every component) to ``dst``, replacing what is there."""
    from .run import inspect_folder

    info = inspect_folder(src)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, path in info.paths.items():
        shutil.copytree(path, tmp / name)
    for extra in ("model_index.json", "workbench.json"):
        if (src / extra).is_file():
            shutil.copy2(src / extra, tmp / extra)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)


def save_component(module, folder: Path) -> None:
    """Replace one component's weights and config (old weight files, e.g. .bin or fp16, removed)."""
    if folder.exists():
        shutil.rmtree(folder)
    module.save_pretrained(folder, safe_serialization=True)


def update_workbench_json(folder: Path, **fields: Any) -> dict:
    path = folder / "workbench.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update({k: v for k, v in fields.items() if v is not None})
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def export_model(src: Path, dst: str | Path) -> Path:
    """Copy a run's model folder to ``dst`` (replacing a model folder there, never anything else)."""
    dst = Path(dst)
    if dst.exists() and not (dst / "model_index.json").is_file() and any(dst.iterdir()):
        raise WorkbenchError(f"--export {dst}: exists and is not a model folder; give a new or model folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    copy_folder(src, dst)
    return dst


def _stage_of(resume, runs_root) -> tuple[str, dict]:
    from workbench.train.run_dir import RunDir

    run = RunDir.open(resume, runs_root, task=TASK)
    path = run.path / STAGE_FILE
    if not path.is_file():
        raise WorkbenchError(f"{run.path}: not a generation run ({STAGE_FILE} missing)")
    info = json.loads(path.read_text())
    return info.get("stage", "unet"), info


# ------------------------------------------------------------------------------ the VAE stage

@torch.no_grad()
def latent_scaling(vae, images, device, batch: int = 64) -> float:
    """1 / std of the train latents (Stable Diffusion's ``scaling_factor``: unit-variance latents)."""
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), batch):
        x = images.batch(range(start, min(start + batch, len(images)))).to(device)
        dist = vae.encode(x).latent_dist
        z = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(device)).double().cpu()
        total += torch.stack([z.sum(), z.square().sum(), torch.tensor(float(z.numel()), dtype=torch.float64)])
    mean = total[0] / total[2]
    std = (total[1] / total[2] - mean ** 2).clamp(min=1e-12).sqrt()
    return float(1.0 / std)


def train_vae(cfg: GenerationConfig, sel: Selection, captions: Sequence[str], resume: str | Path | None = None,
              runs_root: str | Path | None = None, trainers: list | None = None) -> tuple[Any, Path]:
    """Fit a fresh model's VAE to the train tiles; returns (its trainer, the stage's model folder).
    The trainer is appended to ``trainers`` as soon as it exists (the caller closes the last one)."""
    from workbench.train.trainer import Trainer

    from .data import IndexBatches, TileImages
    from .task import VaeTask

    d = cfg.data
    tcfg = dataclasses.replace(cfg.vae.train, mixed_precision=cfg.train.mixed_precision, cpu=cfg.train.cpu)
    with tempfile.TemporaryDirectory(prefix="wb-init-") as tmp:
        if resume is not None:
            from workbench.train.run_dir import RunDir

            init = RunDir.open(resume, runs_root, task=TASK).path / "model"
        else:
            init = build_init_folder(cfg, captions, Path(tmp) / "model")
        train_images = TileImages(sel.train, d.size, d.bands, d.value_max).preload()
        val_images = TileImages(sel.val, d.size, d.bands, d.value_max).preload() if sel.val else None
        task = VaeTask(cfg, init, train_images, val_images)
        trainer = Trainer(task, tcfg, IndexBatches(len(train_images)),
                          IndexBatches(len(val_images)) if val_images is not None else None,
                          name=f"{cfg.name}-vae", config=cfg, resume=resume, runs_root=runs_root)
        if trainers is not None:
            trainers.append(trainer)
        run = trainer.run
        model_dir = run.path / "model"
        if trainer.is_main and resume is None:
            copy_folder(init, model_dir)
            run.write_json(STAGE_FILE, {"stage": "vae", "base_model": str(model_dir), "next": "unet",
                                        "tiles": len(train_images)})
    summary = trainer.fit()
    if trainer.is_main:
        vae = task.vae.eval()
        scale = latent_scaling(vae, train_images, trainer.accelerator.device)
        vae.register_to_config(scaling_factor=scale)
        save_component(vae, model_dir / "vae")
        update_workbench_json(model_dir, vae_stage={"run": run.name, "steps": summary.get("steps"),
                                                    "scaling_factor": scale, "final": summary.get("final")})
        run.update_summary(scaling_factor=scale)
    trainer.accelerator.wait_for_everyone()
    return trainer, model_dir


# ------------------------------------------------------------------------------ the UNet stage

def train_unet(cfg: GenerationConfig, sel: Selection, base: Path | None, resume: str | Path | None = None,
               runs_root: str | Path | None = None, vae_run: str | None = None, command: str | None = None,
               progress: bool = True, trainers: list | None = None) -> tuple[Any, dict]:
    """Train the SatUNet; returns (its trainer, summary). ``base`` None: a fresh ``model.init`` model."""
    from workbench.train.run_steps import write_tiles_json
    from workbench.train.trainer import Trainer

    from .captions import load_template
    from .data import Examples, IndexBatches, TileImages, caption_table, captions_for, metadata_matrix
    from .task import UnetTask, gradient_checkpointing

    d = cfg.data
    template = load_template(d.captions)
    train_caps = captions_for(sel.train, template, d.metadata_in_caption)
    val_caps = captions_for(sel.val, template, d.metadata_in_caption)
    unique, train_ids, val_ids = caption_table(train_caps, val_caps)

    with tempfile.TemporaryDirectory(prefix="wb-init-") as tmp:
        folder = base if base is not None else build_init_folder(cfg, unique, Path(tmp) / "model")
        train_images = TileImages(sel.train, d.size, d.bands, d.value_max)
        val_images = TileImages(sel.val, d.size, d.bands, d.value_max) if sel.val else None
        if d.cache:
            train_images.preload()
            val_images = val_images.preload() if val_images is not None else None
        train_ds = IndexBatches(len(train_images), None if d.cache else train_images)
        val_ds = IndexBatches(len(val_images), None if d.cache else val_images) if val_images is not None else None
        train_ex = Examples(torch.tensor(train_ids, dtype=torch.long), metadata_matrix(sel.train), images=train_images)
        val_ex = Examples(torch.tensor(val_ids, dtype=torch.long), metadata_matrix(sel.val),
                          images=val_images) if val_images is not None else None
        task = UnetTask(cfg, folder, unique, train_ex, val_ex, progress=progress)
        trainer = Trainer(task, cfg.train, train_ds, val_ds, name=cfg.name, config=cfg, resume=resume,
                          runs_root=runs_root)
        if trainers is not None:
            trainers.append(trainer)
        run = trainer.run
        model_dir = run.path / "model"
        if trainer.is_main and resume is None:
            if base is None or Path(base).resolve() != model_dir.resolve():
                copy_folder(folder, model_dir)   # the starting point; the UNet is replaced at the end
        base_model = str(base) if base is not None else str(model_dir)

    if trainer.is_main:
        latents = task.train.mean
        info = {"stage": "unet", "base_model": base_model, "vae_run": vae_run, "init": cfg.model.init,
                "caption_template": {"name": template.name, "path": str(template.path)},
                "captions": len(unique), "tiles": {"train": len(sel.train), "val": len(sel.val)},
                "cache": {"enabled": d.cache, "seconds": round(task.cache_seconds, 2),
                          "latent_variants": None if latents is None else latents.shape[1],
                          "text_cached": task.text.table is not None},
                "gradient_checkpointing": gradient_checkpointing(cfg), "weight_dtype": str(task.weight_dtype),
                "command": command}
        if resume is not None:
            old = json.loads((run.path / STAGE_FILE).read_text()) if (run.path / STAGE_FILE).is_file() else {}
            info = {**old, "resumed_cache": info["cache"]}
        run.write_json(STAGE_FILE, info)
        (run.path / "caption_template.yaml").write_text(template.source, encoding="utf-8")
        counts = {c: 0 for c in unique}
        for c in train_caps:
            counts[c] += 1
        run.write_json("captions.json", {"template": template.name, "captions": counts})
        write_tiles_json(run, catalog=sel.catalog, query=sel.query, tiles={"train": sel.train, "val": sel.val})

    summary = trainer.fit()
    if trainer.is_main:
        ema = trainer.ema.applied(trainer.unwrapped) if trainer.ema is not None else contextlib.nullcontext()
        with ema:
            save_component(trainer.unwrapped, model_dir / "unet")
        task.pipe.save_config(model_dir)   # model_index.json: the component classes
        gsds = sorted(float(t.gsd) for t in sel.train if t.gsd)
        dates = sorted(str(t.date)[:10] for t in sel.train if t.date)
        update_workbench_json(
            model_dir, gsd=gsds[len(gsds) // 2] if gsds else None, cloud_cover=0.0, size=d.size,
            date=dates[len(dates) // 2] if dates else None,
            sampling=dataclasses.asdict(cfg.sample), prompt=train_caps[0] if len(unique) == 1 else None,
            training={"run": run.name, "vae_run": vae_run, "command": command, "steps": summary.get("steps"),
                      "ema": trainer.ema is not None, "wall_time_s": summary.get("wall_time_s"),
                      "final": summary.get("final"), "captions": template.name,
                      "caption_template": template.source, "data": dataclasses.asdict(d),
                      "config": dataclasses.asdict(cfg)})
        from workbench.config import dump_yaml

        dump_yaml(cfg, model_dir / "train_config.yaml")
        summary["model_dir"] = str(model_dir)
        run.update_summary(model_dir=str(model_dir), cache_seconds=round(task.cache_seconds, 2))
    return trainer, summary


# ------------------------------------------------------------------------------ both stages

def train(cfg: GenerationConfig, resume: str | Path | None = None, catalog: str | Path | None = None,
          query_override: dict | None = None, runs_root: str | Path | None = None, export: str | Path | None = None,
          command: str | None = None, progress: bool = True, verbose: bool = True,
          catalog_immutable: bool = False) -> dict:
    """The VAE stage when a fresh model asks for it, then the UNet stage; returns the UNet run's
    summary (its table printed when ``verbose``). The catalog is only read (``catalog_immutable``:
    the user's word that it does not change, see ``Catalog``)."""
    from workbench.train.run_steps import finish_run

    from .captions import load_template
    from .data import captions_for, select

    t_start = time.perf_counter()
    stage, info = _stage_of(resume, runs_root) if resume is not None else (None, {})
    load_template(cfg.data.captions)  # a bad template fails before any tile is read
    base = resolve_base(cfg.model.path) if cfg.model.path else None
    sel = select(cfg, catalog, query_override, catalog_immutable)
    trainers: list = []
    try:
        vae_run = info.get("vae_run")
        unet_resume = resume if stage == "unet" else None
        if stage == "vae" or (stage is None and cfg.model.init and cfg.vae.enabled):
            template = load_template(cfg.data.captions)
            corpus = list(dict.fromkeys(captions_for(sel.train, template, cfg.data.metadata_in_caption)
                                        + captions_for(sel.val, template, cfg.data.metadata_in_caption)))
            vae_trainer, base = train_vae(cfg, sel, corpus, resume if stage == "vae" else None, runs_root,
                                          trainers)
            vae_run = vae_trainer.run.name
        elif stage == "unet":
            base = Path(info["base_model"]) if info.get("base_model") else base
        trainer, summary = train_unet(cfg, sel, base, unet_resume, runs_root, vae_run=vae_run, command=command,
                                      progress=progress, trainers=trainers)
        if trainer.is_main:
            if vae_run:
                summary["vae_run"] = vae_run
            if export:
                summary["exported"] = str(export_model(Path(summary["model_dir"]), export))
        return finish_run(trainer, summary, run_table if verbose else None, started=t_start, vae_run=vae_run)
    finally:
        if trainers:
            trainers[-1].close()


def run_table(summary: dict) -> str:
    """The shared end-of-run table (``summary_table``) with generation's own rows."""
    from workbench.train.run_dir import fmt, summary_table

    final = summary.get("final") or {}
    rows = [("vae stage run", summary.get("vae_run") or "-"),
            ("val loss", fmt(final.get("val/loss"))),
            ("val loss, metadata zeroed", fmt(final.get("val/loss_zero_metadata"))),
            ("model folder", summary.get("model_dir", "-"))]
    if summary.get("exported"):
        rows.append(("exported to", summary["exported"]))
    return summary_table(summary, rows)
