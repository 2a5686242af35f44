"""Band names: every spelling of a band becomes one canonical name, and unnamed bands stay unnamed."""

from __future__ import annotations

import pytest

from workbench.data import bands


@pytest.mark.parametrize("given, want", [
    ("B2", "B02"), ("B02", "B02"), ("b02", "B02"), ("B8A", "B8A"), ("B8a", "B8A"), ("B12", "B12"),
    ("B4, central wavelength 665 nm", "B04"), ("SR_B3", "SR_B3"), ("R", "red"), ("Red", "red"),
    ("NIR", "nir"), ("swir1", "swir16"), ("SCL", "SCL"), ("B10", "B10"),
    ("b1", None), ("b12", None), ("B13", None), ("AOT", None), ("", None), (None, None),
])
def test_canonical(given, want):
    assert bands.canonical(given) == want


def test_canonical_names_keep_unknown_and_unnamed_bands_apart():
    assert bands.canonical_names(["B2", None, "b3", "elevation"]) == ["B02", "b2", "b3", "elevation"]
    assert bands.all_default(bands.canonical_names([None, None]))


def test_match_by_name_then_by_common_name():
    found, notes = bands.match(["B04", "B03", "B02", "B08"], ["B2", "B3", "B4", "B8", "B11"])
    assert found == [2, 1, 0, 3] and notes == []
    found, notes = bands.match(["red", "nir"], ["B02", "B04", "B08"])
    assert found == [1, 2] and len(notes) == 2 and "B04" in notes[0]
    found, _ = bands.match(["B08", "B8A"], ["B02", "B08"])
    assert found == [1, None]                     # nir08 is not nir: no silent stand-in
