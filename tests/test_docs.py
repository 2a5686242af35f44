"""The docs say what the code does: every ```python block of docs/api.md runs, and every link resolves.

The api.md blocks run in order in one fresh namespace (a later block uses what an earlier one
made), in a temporary WORKBENCH_HOME, so a renamed function or argument fails here instead of
in a reader's terminal.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["data", "sentinel2", "training", "segmentation", "classification", "generation", "earthengine", "api",
         "design", "diffusionsat", "results"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def python_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


def test_api_md_has_a_block_for_each_step():
    blocks = python_blocks(DOCS / "api.md")
    text = "\n".join(blocks)
    assert len(blocks) >= 6
    for call in ("Catalog(", "import_folder(", "WindowDataset(", "train(", "load_run(", "predict_scene(",
                 "Trainer(", "DiffusionSatPipeline.from_pretrained("):
        assert call in text, call


@pytest.mark.slow
def test_api_md_blocks_run_in_order(home, monkeypatch, one_torch_thread):
    monkeypatch.syspath_prepend(str(ROOT))
    namespace: dict = {"__name__": "docs_api"}
    for i, block in enumerate(python_blocks(DOCS / "api.md")):
        try:
            exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block, keep the traceback
            raise AssertionError(f"docs/api.md block {i + 1} failed: {exc!r}\n{block}") from exc
    assert (home / "runs").is_dir()        # the runs went to the temporary home, not the checkout
    assert namespace["images"].shape[1:] == (64, 64, 3)


@pytest.mark.parametrize("page", ["README.md"] + [f"docs/{p}.md" for p in PAGES])
def test_pages_exist_and_relative_links_resolve(page):
    path = ROOT / page
    assert path.is_file(), page
    for target in LINK.findall(path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{page}: broken link {target}"


def test_readme_is_a_guide_not_a_log():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, len(lines)
    text = "\n".join(lines)
    assert "docs/results.md" in text
    assert "seed notes" not in text.lower()


SH = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
TINY_TRAIN = ["--set", "train.max_steps=2", "--set", "train.epochs=1", "--set", "train.batch_size=4",
              "--set", "train.eval_batch_size=8"]


def _sentinel2_inputs(cwd: Path) -> None:
    """The files docs/sentinel2.md names, made from synthetic Sentinel-2 ground."""
    import dataclasses

    import numpy as np
    from rasterio.transform import Affine

    from tests.support import sentinel2 as s2
    from workbench.data import geotiff

    big = s2.ground(2048, seed=0)               # 20 km, 10 km east of the makers' default place,
    big = dataclasses.replace(big, transform=Affine.translation(10_000, 0) * big.transform)  # 3 splits
    s2.write_dn_geotiff(cwd / "scene.tif", big)
    s2.write_mask(cwd / "water.tif", big)
    other = s2.ground(256, seed=4)
    s2.write_safe(cwd, other, offset=True)
    s2.write_stac_item(cwd / "item.json", other, cog_dir=cwd / "cogs")
    s2.write_ee_chips(cwd / "ee-exports", s2.ground(2048, seed=2), chip=128)
    g = s2.ground(2048, seed=3)
    dn = g.dn(s2.TEN_M)
    for r in range(0, 2048, 128):
        for c in range(0, 2048, 128):
            cover = np.bincount(g.cover[r:r + 64, c:c + 64].ravel(), minlength=len(s2.COVERS)).argmax()
            geotiff.write(cwd / "eurosat" / s2.COVERS[cover] / f"r{r}_c{c}.tif", dn[:, r:r + 64, c:c + 64],
                          g.transform * g.transform.translation(c, r), g.crs, nodata=0, band_names=list(s2.TEN_M))


@pytest.mark.slow
def test_sentinel2_guide_commands_run(tmp_path):
    """Every command of docs/sentinel2.md's ```sh blocks, each block in a fresh WORKBENCH_HOME,
    on the files the guide names; training lines get tiny step counts."""
    import shlex

    from tests.support.runner import run_in_process

    blocks = SH.findall((DOCS / "sentinel2.md").read_text())
    assert len(blocks) >= 3
    _sentinel2_inputs(tmp_path)
    for i, block in enumerate(blocks):
        home = tmp_path / f"home{i}"
        for line in block.strip().splitlines():
            args = shlex.split(line)
            assert args[0] == "workbench", line
            if args[2:3] == ["train"]:
                args += TINY_TRAIN
            p = run_in_process(*args[1:], home=home, cwd=tmp_path)
            assert p.returncode == 0, (line, p.stdout[-2000:], p.stderr[-2000:])
    assert (tmp_path / "map.tif").is_file() and (tmp_path / "map_stac.tif").is_file()
