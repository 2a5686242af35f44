"""``workbench.bench_stac`` runs end to end on a few tiles (its figures are printed, never asserted)."""

from __future__ import annotations

from workbench.bench import format_table
from workbench.bench_stac import bench_stac


def test_the_stac_bench_runs_on_a_few_tiles():
    result = bench_stac(n=24)
    cases = [row["case"] for row in result.rows]
    assert cases[0].startswith("export (") and cases[-1].startswith("import (")
    assert all(row["items"] == 24 and row["items_s"] > 0 and row["ratio"] > 0 for row in result.rows)
    assert "export" in format_table(result.rows)
