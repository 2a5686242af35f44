"""``train(cfg)``: fine-tune a DiffusionSat model on catalog tiles, the way the paper did.

    from tasks.generation.config import load_config
    from tasks.generation.train import train
    summary = train(load_config("bluemarble-small"))
    # -> runs/generation-bluemarble-small-<time>/model/  (a complete DiffusionSat folder)

The recipe (DIFFUSIONSAT.md): the VAE and the CLIP text encoder are frozen; only the SatUNet
trains, with the epsilon objective (or v, if the model's scheduler says so: a fresh model's
scheduler comes from ``model.build.scheduler``, and zero terminal SNR needs v), min-SNR loss
weights ``min(snr, gamma) / snr`` (gamma 5), EMA of its weights, metadata dropout (each of
the 7 values set to 0 with p 0.1, which is what makes all-zero metadata the unconditional
input) and caption dropout to the empty prompt, gradient checkpointing on a GPU and mixed
precision through the shared trainer (bf16 on a GPU). Exact resume comes from the trainer:
every random draw of a step (flip, posterior sample, noise, timestep, dropout masks) is
taken from the global torch RNG, which its checkpoints save and restore.

Because both encoders are frozen, their outputs for a tile never change during a run:
with ``data.cache`` each tile (and each of its flips) is encoded to the VAE posterior once
and each distinct caption once, and a step costs only the UNet. A fresh miniature model
(``model.init``) first fits its random VAE to the tiles (``vae.enabled``; a run of its own,
``<name>-vae``), then the UNet trains on that VAE's latents.

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
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from torch import nn

from workbench.errors import WorkbenchError

from .config import GenerationConfig

log = logging.getLogger(__name__)

TASK = "generation"
STAGE_FILE = "generation.json"
TEXT_CACHE_MAX = 4096          # distinct captions embedded once; more are encoded per batch
FLIPS = ((), (-1,), (-2,), (-2, -1))   # none, left-right, up-down, both


# ------------------------------------------------------------------------------ the loss pieces

def min_snr_weights(snr: torch.Tensor, gamma: float | None, prediction_type: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): ``min(snr, gamma) / snr`` for epsilon
    prediction, ``min(snr, gamma) / (snr + 1)`` for v prediction; ones when ``gamma`` is None.
    ``snr``: ``diffusers.training_utils.compute_snr(scheduler, timesteps)``."""
    if gamma is None:
        return torch.ones_like(snr)
    clipped = snr.clamp(max=float(gamma))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped / snr


def drop_metadata(metadata: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each value independently set to 0 with probability ``p`` (0 = unknown / unconditional)."""
    if p <= 0:
        return metadata
    keep = torch.rand(metadata.shape, generator=generator, device=metadata.device) >= p
    return metadata * keep


def drop_captions(ids: torch.Tensor, empty_id: int, p: float, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Caption ids with a share ``p`` replaced by the empty prompt's id."""
    if p <= 0:
        return ids
    drop = torch.rand(ids.shape, generator=generator, device=ids.device) < p
    return torch.where(drop, torch.full_like(ids, empty_id), ids)


def flip_batch(x: torch.Tensor, variant: torch.Tensor) -> torch.Tensor:
    """Apply ``FLIPS[variant[i]]`` to sample i."""
    out = x.clone()
    for v, dims in enumerate(FLIPS):
        if dims:
            sel = variant == v
            if sel.any():
                out[sel] = x[sel].flip(dims)
    return out


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompts: Sequence[str], device) -> torch.Tensor:
    """CLIP's last hidden state per prompt, padded to the tokenizer's length (as the pipeline does)."""
    length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    tokens = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    mask = tokens.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


class TextBank:
    """The distinct captions (the empty prompt last) and their frozen embeddings."""

    def __init__(self, captions: Sequence[str], tokenizer, text_encoder, device, cache: bool = True,
                 batch: int = 64):
        self.captions = list(captions) + [""]
        self.empty_id = len(self.captions) - 1
        self.tokenizer, self.text_encoder, self.device = tokenizer, text_encoder, device
        self.table = None
        if cache and len(self.captions) <= TEXT_CACHE_MAX:
            parts = [encode_text(tokenizer, text_encoder, self.captions[i:i + batch], device).float()
                     for i in range(0, len(self.captions), batch)]
            self.table = torch.cat(parts)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[ids.to(self.table.device)]
        unique, inverse = torch.unique(ids, return_inverse=True)
        emb = encode_text(self.tokenizer, self.text_encoder, [self.captions[i] for i in unique.tolist()],
                          self.device).float()
        return emb[inverse.to(emb.device)]


@torch.no_grad()
def encode_posteriors(vae, images, device, dtype, flips: bool, batch: int = 64, progress: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (mean, std) of every image and, with ``flips``, of each of its flips:
    (N, V, C, h, w) float32 on ``device`` (exact: a conv encoder does not commute with flips)."""
    from workbench.progress import progress as progress_bar

    variants = FLIPS if flips else FLIPS[:1]
    means, stds = [], []
    chunks = range(0, len(images), batch)
    for start in progress_bar(chunks, desc="encoding tiles", unit="batch", enabled=progress):
        x = images.batch(range(start, min(start + batch, len(images)))).to(device, dtype)
        m_v, s_v = [], []
        for dims in variants:
            dist = vae.encode(x.flip(dims) if dims else x).latent_dist
            m_v.append(dist.mean.float())
            s_v.append(dist.std.float())
        means.append(torch.stack(m_v, 1))
        stds.append(torch.stack(s_v, 1))
    return torch.cat(means), torch.cat(stds)


@dataclasses.dataclass
class Examples:
    """One split's examples as tensors on the training device."""

    caption_ids: torch.Tensor            # (N,) into the TextBank
    metadata: torch.Tensor               # (N, 7) normalised
    mean: torch.Tensor | None = None     # (N, V, C, h, w) VAE posterior mean per flip (cached)
    std: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.caption_ids.shape[0])


class Objective:
    """The training loss and the validation metrics of the UNet stage (see the module docstring)."""

    def __init__(self, cfg: GenerationConfig, scheduler_config: dict, vae, text: TextBank, weight_dtype):
        from diffusers import DDPMScheduler

        self.cfg = cfg
        self.noise = DDPMScheduler.from_config(scheduler_config)
        self.T = int(self.noise.config.num_train_timesteps)
        self.prediction_type = self.noise.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise WorkbenchError(f"scheduler prediction_type {self.prediction_type!r}: training supports "
                                 "epsilon and v_prediction")
        if self.prediction_type == "epsilon" and float(self.noise.alphas_cumprod[-1]) == 0.0:
            # At zero terminal SNR the last step's noise is the input itself: nothing to learn, and
            # min-SNR's 1 / snr is infinite there. Lin et al. (2023) pair the schedule with v.
            raise WorkbenchError("scheduler rescale_betas_zero_snr: true needs prediction_type v_prediction")
        self.vae, self.text, self.weight_dtype = vae, text, weight_dtype
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.train: Examples | None = None
        self.val: Examples | None = None
        self.val_noise: torch.Tensor | None = None
        self.val_t: torch.Tensor | None = None

    # -- latents ------------------------------------------------------------------------
    def _latents(self, ex: Examples, idx: torch.Tensor, batch: dict, train: bool) -> torch.Tensor:
        d = self.cfg.data
        n = idx.shape[0]
        device = idx.device
        if ex.mean is not None:
            v = ex.mean.shape[1]
            variant = torch.randint(0, v, (n,), device=device) if train and v > 1 else torch.zeros(
                n, dtype=torch.long, device=device)
            mean, std = ex.mean[idx, variant], ex.std[idx, variant]
            z = mean + std * torch.randn_like(mean) if train else mean
        else:
            x = batch["image"]
            if train and d.flips:
                x = flip_batch(x, torch.randint(0, len(FLIPS), (n,), device=device))
            with torch.no_grad():
                dist = self.vae.encode(x.to(self.weight_dtype)).latent_dist
                z = (dist.sample() if train else dist.mean).float()
        return (z - self.shift) * self.scaling

    def _target(self, z, noise, t):
        return noise if self.prediction_type == "epsilon" else self.noise.get_velocity(z, noise, t)

    # -- training -----------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        d, m = self.cfg.data, self.cfg.model
        ex = self.train
        idx = batch["index"].to(ex.caption_ids.device)
        z = self._latents(ex, idx, batch, train=True)
        noise = torch.randn_like(z)
        if m.noise_offset:
            noise = noise + m.noise_offset * torch.randn(z.shape[0], z.shape[1], 1, 1, device=z.device)
        t = torch.randint(0, self.T, (z.shape[0],), device=z.device)
        noisy = self.noise.add_noise(z, noise, t)
        ids = drop_captions(ex.caption_ids[idx], self.text.empty_id, d.caption_dropout)
        md = drop_metadata(ex.metadata[idx], d.metadata_dropout)
        pred = model(noisy, t, encoder_hidden_states=self.text(ids), metadata=md).sample
        per_sample = F.mse_loss(pred.float(), self._target(z, noise, t).float(), reduction="none").mean((1, 2, 3))
        weights = min_snr_weights(compute_snr(self.noise, t), m.min_snr_gamma, self.prediction_type)
        return (per_sample * weights).mean(), {}

    # -- validation ---------------------------------------------------------------------
    def setup_validation(self, seed: int) -> None:
        """Fixed noise and evenly spread timesteps per val example: val/loss is comparable across evaluations."""
        ex = self.val
        n = len(ex)
        shape = ex.mean.shape[2:] if ex.mean is not None else None
        if shape is None:
            return
        g = torch.Generator().manual_seed(int(seed) + 99_991)
        self.val_noise = torch.randn((n, *shape), generator=g).to(ex.caption_ids.device)
        self.val_t = ((torch.arange(n) * self.T) // max(n, 1)).clamp(max=self.T - 1).to(ex.caption_ids.device)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
        """Unweighted epsilon MSE with the true metadata (val/loss), with min-SNR weights, and with
        the metadata zeroed (what the metadata buys: val/metadata_gain = zeroed - true)."""
        ex = self.val
        total = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            idx = batch["index"].to(ex.caption_ids.device)
            z = self._latents(ex, idx, batch, train=False)
            if self.val_noise is not None:
                noise, t = self.val_noise[idx], self.val_t[idx]
            else:  # images not cached: noise from a generator seeded by the example index
                noise = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(int(i)))
                                     for i in idx.tolist()]).to(z.device)
                t = (idx * 7919) % self.T
            noisy = self.noise.add_noise(z, noise, t)
            emb = self.text(ex.caption_ids[idx])
            target = self._target(z, noise, t).float()
            md = ex.metadata[idx]
            mse = F.mse_loss(model(noisy, t, encoder_hidden_states=emb, metadata=md).sample.float(), target,
                             reduction="none").mean((1, 2, 3))
            mse0 = F.mse_loss(model(noisy, t, encoder_hidden_states=emb,
                                    metadata=torch.zeros_like(md)).sample.float(), target,
                              reduction="none").mean((1, 2, 3))
            w = min_snr_weights(compute_snr(self.noise, t), self.cfg.model.min_snr_gamma,
                                self.prediction_type)
            total += torch.stack([mse.sum(), (mse * w).sum(), mse0.sum(),
                                  torch.tensor(float(len(idx)), device=mse.device)]).double().to(total.device)
        total = accelerator.reduce(total, "sum")
        n = total[3].clamp(min=1)
        loss, weighted, zeroed = (total[:3] / n).tolist()
        return {"val/loss": loss, "val/loss_min_snr": weighted, "val/loss_zero_metadata": zeroed,
                "val/metadata_gain": zeroed - loss}


# ------------------------------------------------------------------------------ tiles and captions

@dataclasses.dataclass
class Selection:
    query: dict
    catalog: str
    train: list
    val: list


def select(cfg: GenerationConfig, catalog, query_override: dict | None) -> Selection:
    from workbench.data.catalog import open_existing, run_query

    from .data import select_tiles, spread

    if query_override and query_override.get("split") is not None:
        raise WorkbenchError("generate train takes its train/val tiles from the split column: drop --split "
                             "(or set data.train_split / data.val_split)")
    d = cfg.data
    query = run_query(d.source, d.where, query_override)
    limit = query.pop("limit", None)
    with open_existing(catalog or d.catalog) as cat:
        splits = d.splits(d.train_split)
        train_tiles = spread(select_tiles(cat, query, splits if len(splits) > 1 else splits[0], d.size),
                             d.max_tiles or limit)
        val_tiles: list = []
        if d.val_split:
            try:
                val_tiles = spread(select_tiles(cat, query, d.val_split, d.size), d.val_tiles)
            except WorkbenchError as exc:
                log.warning("no validation loss: %s", exc)
        return Selection(query=query, catalog=str(cat.path), train=train_tiles, val=val_tiles)


def captions_for(tiles: Sequence, template, metadata_in_caption: bool = False) -> list[str]:
    out = []
    for t in tiles:
        text = template.render(t)
        if metadata_in_caption:
            from .metadata import Metadata, describe

            if None not in (t.lat, t.lon, t.gsd) and t.date:
                from datetime import date

                md = Metadata(lon=t.lon, lat=t.lat, gsd=t.gsd, cloud_cover=t.cloud_cover or 0.0,
                              date=date.fromisoformat(str(t.date)[:10]))
                text += describe(md)
        out.append(text)
    return out


def caption_table(train_caps: Sequence[str], val_caps: Sequence[str]) -> tuple[list[str], list[int], list[int]]:
    unique = list(dict.fromkeys([*train_caps, *val_caps]))
    index = {c: i for i, c in enumerate(unique)}
    return unique, [index[c] for c in train_caps], [index[c] for c in val_caps]


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

    run = RunDir.open(resume, runs_root)
    path = run.path / STAGE_FILE
    if not path.is_file():
        raise WorkbenchError(f"{run.path}: not a generation run ({STAGE_FILE} missing)")
    info = json.loads(path.read_text())
    return info.get("stage", "unet"), info


def _weight_dtype(accelerator) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision), torch.float32)


def _gradient_checkpointing(cfg: GenerationConfig) -> bool:
    if cfg.model.gradient_checkpointing is not None:
        return bool(cfg.model.gradient_checkpointing)
    return torch.cuda.is_available() and not cfg.train.cpu


# ------------------------------------------------------------------------------ the VAE stage

class VaeModule(nn.Module):
    """The AutoencoderKL as one ``forward`` (DDP wraps only forward): x -> (reconstruction, posterior)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, sample: bool = True):
        dist = self.vae.encode(x).latent_dist
        z = dist.sample() if sample else dist.mode()
        return self.vae.decode(z).sample, dist


def _vae_loss_fn(cfg: GenerationConfig, images):
    v = cfg.vae

    def loss_fn(model, batch):
        x = images.batch(batch["index"].tolist()).to(batch["index"].device)
        if cfg.data.flips:
            x = flip_batch(x, torch.randint(0, len(FLIPS), (x.shape[0],), device=x.device))
        rec, dist = model(x)
        rec = rec.float()
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        kl = dist.kl().mean()
        return v.l1_weight * l1 + v.mse_weight * mse + v.kl_weight * kl, {"l1": l1.item(), "kl": kl.item()}

    return loss_fn


def _vae_evaluate_fn(images):
    @torch.no_grad()
    def evaluate(model, loader, accelerator):
        total = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
        for batch in loader:
            x = images.batch(batch["index"].tolist()).to(batch["index"].device)
            rec, _ = model(x, sample=False)
            err = (rec.float().clamp(-1, 1) - x)
            mse = err.square().mean((1, 2, 3))
            psnr = 10 * torch.log10(4.0 / mse.clamp(min=1e-10))   # signal range 2 ([-1, 1])
            total += torch.stack([err.abs().mean((1, 2, 3)).sum(), mse.sum(), psnr.sum(),
                                  torch.tensor(float(x.shape[0]), device=x.device)]).double().to(total.device)
        total = accelerator.reduce(total, "sum")
        l1, mse, psnr = (total[:3] / total[3].clamp(min=1)).tolist()
        return {"val/loss": l1 + mse, "val/l1": l1, "val/psnr": psnr}

    return evaluate


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


def train_vae(cfg: GenerationConfig, sel: Selection, captions: Sequence[str], resume=None, runs_root=None,
              trainers: list | None = None) -> tuple[Any, Path]:
    """Fit a fresh model's VAE to the train tiles; returns (its trainer, the stage's model folder).
    The trainer is appended to ``trainers`` as soon as it exists (the caller closes the last one)."""
    from workbench.train.trainer import Trainer

    from .data import IndexBatches, TileImages
    from .pipeline import load_pipeline

    d = cfg.data
    tcfg = dataclasses.replace(cfg.vae.train, mixed_precision=cfg.train.mixed_precision, cpu=cfg.train.cpu)
    with tempfile.TemporaryDirectory(prefix="wb-init-") as tmp:
        if resume is not None:
            from workbench.train.run_dir import RunDir

            init = RunDir.open(resume, runs_root).path / "model"
        else:
            init = build_init_folder(cfg, captions, Path(tmp) / "model")
        pipe = load_pipeline(init, device="cpu")
        vae = pipe.vae.train()
        train_images = TileImages(sel.train, d.size, d.bands, d.value_max).preload()
        val_images = TileImages(sel.val, d.size, d.bands, d.value_max).preload() if sel.val else None
        trainer = Trainer(VaeModule(vae), tcfg, IndexBatches(len(train_images)),
                          IndexBatches(len(val_images)) if val_images is not None else None,
                          loss_fn=_vae_loss_fn(cfg, train_images),
                          evaluate_fn=_vae_evaluate_fn(val_images) if val_images is not None else None,
                          task=TASK, name=f"{cfg.name}-vae", config=cfg, resume=resume, runs_root=runs_root)
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
        vae.eval()
        scale = latent_scaling(vae, train_images, trainer.accelerator.device)
        vae.register_to_config(scaling_factor=scale)
        save_component(vae, model_dir / "vae")
        update_workbench_json(model_dir, vae_stage={"run": run.name, "steps": summary.get("steps"),
                                                    "scaling_factor": scale, "final": summary.get("final")})
        run.update_summary(scaling_factor=scale)
    trainer.accelerator.wait_for_everyone()
    return trainer, model_dir


# ------------------------------------------------------------------------------ the UNet stage

def train_unet(cfg: GenerationConfig, sel: Selection, base: Path | None, resume=None, runs_root=None,
               vae_run: str | None = None, command: str | None = None, progress: bool = True,
               trainers: list | None = None) -> tuple[Any, dict]:
    """Train the SatUNet; returns (its trainer, summary). ``base`` None: a fresh ``model.init`` model."""
    from workbench.train.trainer import Trainer

    from .captions import load_template
    from .data import IndexBatches, TileImages, metadata_matrix
    from .pipeline import load_pipeline

    d = cfg.data
    template = load_template(d.captions)
    train_caps = captions_for(sel.train, template, d.metadata_in_caption)
    val_caps = captions_for(sel.val, template, d.metadata_in_caption)
    unique, train_ids, val_ids = caption_table(train_caps, val_caps)

    with tempfile.TemporaryDirectory(prefix="wb-init-") as tmp:
        folder = base if base is not None else build_init_folder(cfg, unique, Path(tmp) / "model")
        pipe = load_pipeline(folder, device="cpu")
        unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
        vae.requires_grad_(False).eval()
        text_encoder.requires_grad_(False).eval()
        if _gradient_checkpointing(cfg):
            unet.enable_gradient_checkpointing()
        unet.train()
        train_images = TileImages(sel.train, d.size, d.bands, d.value_max)
        val_images = TileImages(sel.val, d.size, d.bands, d.value_max) if sel.val else None
        if d.cache:
            train_images.preload()
            val_images = val_images.preload() if val_images is not None else None
        train_ds = IndexBatches(len(train_images), None if d.cache else train_images)
        val_ds = IndexBatches(len(val_images), None if d.cache else val_images) if val_images is not None else None

        holder: dict[str, Objective] = {}
        trainer = Trainer(unet, cfg.train, train_ds, val_ds, loss_fn=lambda m, b: holder["o"].loss(m, b),
                          evaluate_fn=(lambda m, loader, acc: holder["o"].evaluate(m, loader, acc)) if val_ds else None,
                          task=TASK, name=cfg.name, config=cfg, resume=resume, runs_root=runs_root)
        if trainers is not None:
            trainers.append(trainer)
        run = trainer.run
        device = trainer.accelerator.device
        wdtype = _weight_dtype(trainer.accelerator)
        for frozen in (vae, text_encoder):   # frozen: stored in the mixed-precision dtype, as diffusers does
            frozen.to(device) if wdtype == torch.float32 else frozen.to(device, wdtype)
        model_dir = run.path / "model"
        if trainer.is_main and resume is None:
            if base is None or Path(base).resolve() != model_dir.resolve():
                copy_folder(folder, model_dir)   # the starting point; the UNet is replaced at the end
        base_model = str(base) if base is not None else str(model_dir)

    t0 = time.perf_counter()
    text = TextBank(unique, pipe.tokenizer, text_encoder, device, cache=True)
    objective = Objective(cfg, dict(pipe.scheduler.config), vae, text, wdtype)
    md_train, md_val = metadata_matrix(sel.train).to(device), metadata_matrix(sel.val).to(device)
    objective.train = Examples(torch.tensor(train_ids, device=device), md_train)
    if val_images is not None:
        objective.val = Examples(torch.tensor(val_ids, device=device), md_val)
    if d.cache:
        objective.train.mean, objective.train.std = encode_posteriors(
            vae, train_images, device, wdtype, d.flips, progress=progress and trainer.is_main)
        if objective.val is not None:
            objective.val.mean, objective.val.std = encode_posteriors(vae, val_images, device, wdtype, False)
            objective.setup_validation(cfg.train.seed)
    holder["o"] = objective
    cache_s = time.perf_counter() - t0

    if trainer.is_main:
        info = {"stage": "unet", "base_model": base_model, "vae_run": vae_run, "init": cfg.model.init,
                "caption_template": {"name": template.name, "path": str(template.path)},
                "captions": len(unique), "tiles": {"train": len(sel.train), "val": len(sel.val)},
                "cache": {"enabled": d.cache, "seconds": round(cache_s, 2),
                          "latent_variants": None if objective.train.mean is None else objective.train.mean.shape[1],
                          "text_cached": text.table is not None},
                "gradient_checkpointing": _gradient_checkpointing(cfg), "weight_dtype": str(wdtype),
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
        run.write_json("tiles.json", {"catalog": sel.catalog, "query": sel.query,
                                      "train": [t.id for t in sel.train], "val": [t.id for t in sel.val]})

    summary = trainer.fit()
    if trainer.is_main:
        ema = trainer.ema.applied(trainer.unwrapped) if trainer.ema is not None else contextlib.nullcontext()
        with ema:
            save_component(trainer.unwrapped, model_dir / "unet")
        pipe.save_config(model_dir)   # model_index.json: the component classes
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
        run.update_summary(model_dir=str(model_dir), cache_seconds=round(cache_s, 2))
    return trainer, summary


# ------------------------------------------------------------------------------ both stages

def train(cfg: GenerationConfig, resume: str | Path | None = None, catalog: str | Path | None = None,
          query_override: dict | None = None, runs_root: str | Path | None = None, export: str | Path | None = None,
          command: str | None = None, progress: bool = True) -> dict:
    """The VAE stage when a fresh model asks for it, then the UNet stage; returns the UNet run's summary."""
    from workbench.train.run_dir import write_latest

    from .captions import load_template

    t_start = time.perf_counter()
    stage, info = _stage_of(resume, runs_root) if resume is not None else (None, {})
    load_template(cfg.data.captions)  # a bad template fails before any tile is read
    base = resolve_base(cfg.model.path) if cfg.model.path else None
    sel = select(cfg, catalog, query_override)
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
            summary["total_time_s"] = round(time.perf_counter() - t_start, 1)
            if vae_run:
                summary["vae_run"] = vae_run
            trainer.run.update_summary(total_time_s=summary["total_time_s"], vae_run=vae_run)
            write_latest(trainer.run.path, TASK)
            if export:
                summary["exported"] = str(export_model(Path(summary["model_dir"]), export))
        return summary
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
