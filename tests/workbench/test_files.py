"""``workbench.files``: a file is replaced whole or not at all."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.files import replacing, write_json_atomic


def test_replacing_renames_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target, keep_suffix=True) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".")
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with replacing(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_an_unwritable_place_is_one_line_naming_the_target(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WorkbenchError, match=r"afile/s\.json: could not be written") as e:
        write_json_atomic(tmp_path / "afile" / "s.json", {"a": 1})
    assert "\n" not in str(e.value)


def test_check_can_create_names_the_blocking_path(tmp_path):
    from workbench.files import check_can_create

    (tmp_path / "f").write_text("x")
    check_can_create(tmp_path / "new" / "deeper", "--out")               # nothing there yet: fine
    check_can_create(tmp_path / "f", "--out", folder=False)              # an existing file may be replaced
    for target, folder in ((tmp_path / "f" / "x.tif", False), (tmp_path / "f", True)):
        with pytest.raises(WorkbenchError, match=f"{tmp_path / 'f'} is a file, not a folder"):
            check_can_create(target, "--out", folder=folder)
