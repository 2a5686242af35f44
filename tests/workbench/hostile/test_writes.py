"""Writes that cannot complete fail loudly, in one line, and never leave a file under the real name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from workbench.data import geotiff
from workbench.errors import WorkbenchError

T = from_origin(500_000, 4_600_000, 10, 10)


def test_a_write_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkbenchError, match=r"could not be written") as e:
        geotiff.write(tmp_path / "file" / "m.tif", np.zeros((8, 8), "uint8"), T, "EPSG:32633")
    assert "\n" not in str(e.value)


def test_a_truncated_temporary_file_is_never_renamed(tmp_path, monkeypatch):
    """What a full disk leaves: the temp file reads back short; the target must not appear."""
    real = geotiff._check_written

    def cut_then_check(tmp, path, arr):
        data = tmp.read_bytes()
        tmp.write_bytes(data[: len(data) // 3])
        real(tmp, path, arr)

    monkeypatch.setattr(geotiff, "_check_written", cut_then_check)
    target = tmp_path / "big.tif"
    with pytest.raises(WorkbenchError, match=r"big\.tif: .*(does not read back|could not be written)"):
        geotiff.write(target, np.random.default_rng(0).integers(0, 9999, (2, 600, 600)).astype("uint16"), T,
                      "EPSG:32633")
    assert not target.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("out", ["afile/bm", "afile"])
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(home, cli, out):
    """``data bluemarble --out`` under a file (or a file itself): one line at once, not after
    reading and cutting the mosaic; the file is untouched and no catalog appears."""
    (home / "afile").write_text("x")
    code, stdout, err = cli("data", "bluemarble", "--out", home / out, "--no-progress")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "afile is a file, not a folder" in err and "reading" not in err
    assert (home / "afile").read_text() == "x" and not (home / "data").exists()



@pytest.mark.parametrize("flag", ["--out", "--probabilities", "--polygons"])
@pytest.mark.parametrize("case", ["a folder", "under a file"])
def test_a_predict_output_that_cannot_be_written_is_refused_before_the_run_loads(home, cli, flag, case):
    """``segment predict`` checks its outputs first: a folder named as a file, or a path under a
    regular file, is one line before any run is looked up (no run exists here at all)."""
    suffix = {"--out": "m.tif", "--probabilities": "p.tif", "--polygons": "w.gpkg"}[flag]
    (home / "afile").write_text("x")
    (home / f"adir{Path(suffix).suffix}").mkdir()             # a folder with the file's extension
    bad = home / f"adir{Path(suffix).suffix}" if case == "a folder" else home / "afile" / suffix
    args = {"--out": home / "m.tif", flag: bad}
    code, _, err = cli("segment", "predict", "--run", "nosuchrun", "--input", home / "scene.tif",
                       *[str(x) for kv in args.items() for x in kv], "--no-progress")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert flag in err and ("is a folder" in err if case == "a folder" else "is a file, not a folder" in err)
    assert (home / "afile").read_text() == "x" and not list((home / f"adir{Path(suffix).suffix}").iterdir())
