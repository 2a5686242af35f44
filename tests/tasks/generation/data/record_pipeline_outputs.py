"""How ``pipeline_before_diffusers_api.npz`` was made: the pipeline's outputs before its API took
diffusers' argument names, for ``test_pipeline_golden.py`` (the new call must give these exact images).

It calls the *old* API (``seeds=``, ``steps=``, ``guidance=``, ``size=``, ``output=``,
``generate_batch``), so it runs only on a checkout of commit 0d8880f::

    git worktree add /tmp/old 0d8880f && cd /tmp/old
    PYTHONPATH=$PWD python /path/to/record_pipeline_outputs.py OUT.npz

One torch thread, CPU, float32; tiny models built by ``build_model`` (seeded) and the committed
default model.
"""
import sys, tempfile, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from tasks.generation.build import build_model
from tasks.generation.metadata import validate
from tasks.generation.pipeline import DiffusionSatPipeline

P1 = "a satellite image of a river delta"
P2 = "a satellite image of deep water in the temperate northern hemisphere"
MD = validate(lat=21.01, lon=105.81, gsd=0.5, cloud_cover=0.1, when="2015-06-15").normalised()
MD2 = validate(lat=-33.9, lon=18.4, gsd=10, cloud_cover=0.0, when="2021-01-02").normalised()
tmp = Path(tempfile.mkdtemp())
tiny = build_model("tiny", tmp / "tiny")
plain = build_model({"preset": "tiny", "use_metadata": False}, tmp / "plain")
out = {}
p = DiffusionSatPipeline.from_pretrained(tiny, scheduler="ddim")
out["a_ddim_uint8"] = p(P1, MD, seeds=[3, 4], steps=3, guidance=5.0, size=32, progress=False)
out["b_ddim_two_calls_latent"] = p(P1, MD, seeds=[3, 4], steps=3, guidance=5.0, size=32, progress=False,
                                   batched_guidance=False, output="latent").numpy()
p = DiffusionSatPipeline.from_pretrained(tiny, scheduler="euler")
# The old pipeline read Euler's init_noise_sigma before set_timesteps, so its *first* call on a fresh
# scheduler scaled the noise by the training schedule's sigma (14.6488 here, "leading" spacing) and
# every later call by the inference schedule's: call history changed the image. The new pipeline sets
# the timesteps first, as diffusers does, so every call is the old steady state: record that one.
p.generate_batch([P1], [MD], [0], steps=3, guidance=2.0, size=32, progress=False)
out["c_euler_batch_uint8"] = p.generate_batch([P1, P2, P1], [MD, MD2, [0.0] * 7], [0, 1, 2], steps=3,
                                              guidance=2.0, size=32, progress=False)
p = DiffusionSatPipeline.from_pretrained(tiny, scheduler="dpm")
out["d_dpm_noguidance_uint8"] = p(P1, MD, seed=5, steps=2, guidance=1.0, size=32, progress=False)
p = DiffusionSatPipeline.from_pretrained(plain, scheduler="ddpm")
out["e_plain_ddpm_uint8"] = p(P1, None, seed=6, num_images=2, steps=2, guidance=3.0, size=32, progress=False)
t = time.time()
p = DiffusionSatPipeline.from_pretrained("tasks/generation/default_model", scheduler="ddim")
md = validate(lat=21.01, lon=105.81, gsd=7421.0, cloud_cover=0.0, when="2004-07-01").normalised()
out["f_default_model_uint8"] = p("a satellite image of a river delta", md, seeds=[0, 1], steps=3, guidance=3.0,
                                 progress=False)
print("default model", time.time() - t)
for k, v in out.items():
    print(k, v.shape, v.dtype)
np.savez_compressed(sys.argv[1], **out)
