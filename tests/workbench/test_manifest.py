"""The batch manifest: an identity refused when it is another batch's (naming what differs), one
entry per finished scene that stays valid only while its output is the file it describes."""

from __future__ import annotations

import json

import pytest

from workbench.errors import WorkbenchError
from workbench.manifest import Manifest, differences

IDENTITY = {"run": "/runs/a", "checkpoint_sha256": "ab" * 32, "window": 256, "tta": "none",
            "scenes": ["/s/a.tif", "/s/b.tif"]}


def test_the_same_batch_passes_and_another_is_refused_naming_what_differs(tmp_path):
    m = Manifest(tmp_path, IDENTITY)
    m.check()                                                  # nothing there yet
    m.write()
    Manifest(tmp_path, dict(IDENTITY)).check()
    other = Manifest(tmp_path, {**IDENTITY, "window": 128, "scenes": ["/s/a.tif", "/s/c.tif", "/s/d.tif"]})
    with pytest.raises(WorkbenchError) as e:
        other.check()
    text = str(e.value)
    assert text.startswith(f"{tmp_path / 'manifest.json'}: a manifest of another batch")
    assert "window 128 here, 256 there" in text and "scenes: 2 here not in it, 1 in it not here" in text
    before = (tmp_path / "manifest.json").read_bytes()
    other.write()                                              # a resumed batch keeps the first identity
    assert (tmp_path / "manifest.json").read_bytes() == before


def test_a_file_that_is_no_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="manifest.json: not a batch manifest"):
        Manifest(tmp_path, IDENTITY).check()
    (tmp_path / "manifest.json").write_text(json.dumps({"some": "thing"}))
    with pytest.raises(WorkbenchError, match="no identity"):
        Manifest(tmp_path, IDENTITY).check()


def test_an_entry_is_valid_while_its_output_is_the_file_it_describes(tmp_path):
    m = Manifest(tmp_path, IDENTITY)
    out = tmp_path / "a_mask.tif"
    out.write_bytes(b"0123456789")
    e = m.record("a", "/s/a.tif", out, {"water_fraction": 0.25})
    assert m.entry("a") == e and e["size"] == 10 and m.finished() == 1
    assert m.entries(["a", "b"]) == {"a": e}
    out.write_bytes(b"0123456780")                             # same size, other bytes
    assert m.entry("a") is None
    out.write_bytes(b"0123456789")
    assert m.entry("a") == e
    assert Manifest(tmp_path, {**IDENTITY, "window": 1}).entry("a") is None      # another batch's entry
    out.unlink()
    assert m.entry("a") is None and m.entry("never") is None
    assert not [p for p in (tmp_path / "done").iterdir() if p.name.startswith(".")]  # written atomically


def test_differences_say_nothing_for_equal_identities():
    assert differences(IDENTITY, json.loads(json.dumps(IDENTITY))) == ""
    assert differences({"a": 1}, {"b": 2}) == "a 1 here, null there; b null here, 2 there"


def test_an_entry_is_checked_by_checksum_for_a_resume_and_by_size_at_the_end(tmp_path):
    """A resume decides by the sha256 (a same-size damaged output is mapped again); the end of a
    batch, reading entries its ranks have just hashed, checks the size only."""
    m = Manifest(tmp_path, IDENTITY)
    out = tmp_path / "a_mask.tif"
    out.write_bytes(b"\x01" * 64)
    m.record("a", "/s/a.tif", out, {"water_fraction": 0.5})
    assert m.entry("a")["summary"] == {"water_fraction": 0.5}
    out.write_bytes(b"\x02" * 64)                               # same size, other bytes
    assert m.entry("a") is None and m.entries(["a"]) == {}
    assert m.entry("a", verify=False) is not None and list(m.entries(["a"], verify=False)) == ["a"]
    out.write_bytes(b"\x02" * 63)                               # another size: stale either way
    assert m.entry("a", verify=False) is None
