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
PAGES = ["data", "training", "segmentation", "classification", "generation", "earthengine", "api", "design",
         "diffusionsat", "results"]
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
