"""Catalog rows as columns: what a dataset over hundreds of thousands of tiles reads.

``Catalog.query`` builds one :class:`~workbench.data.catalog.Tile` per row: fine for a few
thousand tiles, but at 600 k it is most of a run's startup and memory. A :class:`TileTable`
holds the same rows column by column (numbers as numpy arrays, NULL as NaN; text as lists;
``bands`` / ``extra`` as their JSON text, decoded when a row asks), so a dataset takes its
paths, shapes and splits as arrays without a Python object per row.

Code written for ``Tile`` lists keeps working: ``table[i]`` (and iteration) gives a
:class:`TileRow`, a two-slot view that answers ``row.path``, ``row.bands``, ``row.extra`` ...
like a ``Tile`` (the same values, the same ``None`` for NULL), made only when asked for.
``table[mask_or_indices]`` is a smaller table; ``table["water_fraction"]`` a column.

    table = catalog.table(columns=DATASET_COLUMNS, split="train")
    table["path"], table.shapes(), table.bounds()      # list of str, (N, 2) int64, (N, 4) float64
    for t in table: ...                                # TileRow views, Tile-like
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

# SQLite column kinds of the tiles table (catalog.SCHEMA): how a column is held here.
INTEGER_COLUMNS = ("id", "width", "height", "parent_id")
REAL_COLUMNS = ("lon", "lat", "west", "south", "east", "north", "gsd", "cloud_cover", "water_fraction",
                "pred_score")
JSON_COLUMNS = {"bands": list, "extra": dict}
PATH_COLUMNS = ("path", "mask_path")
# What WindowDataset and the task data builders read of a tile: radiometry lives in extra, a
# block mosaic's key is (source, scene_id, split, extra.block), bounds() reads west..north.
DATASET_COLUMNS = ("id", "path", "mask_path", "source", "split", "scene_id", "west", "south", "east", "north",
                   "width", "height", "bands", "water_fraction", "label", "extra")


class TileTable:
    """Rows of the catalog, column by column (see the module docs).

    ``columns`` maps a column name to its values: a float64 array (REAL and INTEGER
    columns other than ``id``; NaN is NULL), an int64 array (``id``) or a list (text;
    ``bands``/``extra`` as stored JSON; paths absolute). Every column has one value per row."""

    def __init__(self, columns: dict[str, Any]):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._columns = dict(columns)
        self._n = lengths.pop() if lengths else 0
        self._decoded: dict[str, dict[str, Any]] = {}

    # ---- columns -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._columns)

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def column(self, name: str) -> Any:
        """The column's values (a numpy array or a list, as held; see the class docs)."""
        try:
            return self._columns[name]
        except KeyError:
            raise KeyError(f"the table has no column {name!r} (it has: {', '.join(self._columns)})") from None

    def shapes(self) -> np.ndarray:
        """(N, 2) int64 ``(height, width)``; 0 where the row has none."""
        h, w = self.column("height"), self.column("width")
        return np.stack([np.nan_to_num(h, nan=0.0), np.nan_to_num(w, nan=0.0)], axis=1).astype(np.int64)

    def bounds(self) -> np.ndarray:
        """(N, 4) float64 ``(west, south, east, north)``; NaN where unknown."""
        return np.stack([self.column(c) for c in ("west", "south", "east", "north")], axis=1)

    def band_lists(self) -> list[list[str]]:
        """Each row's band names. Rows sharing one stored list share one (read-only!) list object:
        tiles of one import all have the same bands, so this costs one decode, not one per row."""
        return [self._decode("bands", s) for s in self.column("bands")]

    def band_counts(self) -> np.ndarray:
        """int64 number of band names per row."""
        memo: dict[str, int] = {}
        out = np.empty(self._n, np.int64)
        for i, s in enumerate(self.column("bands")):
            n = memo.get(s)
            if n is None:
                n = memo[s] = len(self._decode("bands", s))
            out[i] = n
        return out

    def _decode(self, name: str, text: str | None) -> Any:
        cache = self._decoded.setdefault(name, {})
        value = cache.get(text)
        if value is None:
            value = JSON_COLUMNS[name]() if not text else json.loads(text)
            if name == "bands" and len(cache) < 4096:   # few distinct band lists; extras are per row
                cache[text] = value
        return value

    # ---- rows ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[TileRow]:
        return (TileRow(self, i) for i in range(self._n))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.column(key)
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -self._n <= i < self._n:
                raise IndexError(f"row {i} out of range ({self._n} rows)")
            return TileRow(self, i % self._n if self._n else i)
        return self.take(key)

    def take(self, rows: Any) -> TileTable:
        """The rows ``rows`` (a slice, a bool mask or indices) as a table."""
        idx = np.arange(self._n)[rows] if isinstance(rows, slice) else np.asarray(rows)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        out = {}
        for name, col in self._columns.items():
            out[name] = col[idx] if isinstance(col, np.ndarray) else [col[i] for i in idx.tolist()]
        return TileTable(out)

    def value(self, name: str, i: int) -> Any:
        """Row ``i``'s ``name`` as a ``Tile`` holds it (int/float/str, None for NULL, decoded JSON)."""
        col = self.column(name)
        v = col[i]
        if name in JSON_COLUMNS:
            decoded = self._decode(name, v)
            return list(decoded) if name == "bands" else decoded   # a copy: callers may change it
        if isinstance(col, np.ndarray):
            if name == "id":
                return int(v)
            if v != v:          # NaN: NULL
                return None
            return int(v) if name in INTEGER_COLUMNS else float(v)
        return v

    def values(self, name: str) -> list[Any]:
        """The whole column as ``Tile`` fields hold it (None for NULL, ints for integer columns;
        JSON as stored text): for code that reads one field of every row."""
        col = self.column(name)
        if not isinstance(col, np.ndarray):
            return list(col)
        if name == "id":
            return col.tolist()
        as_int = name in INTEGER_COLUMNS
        return [None if v != v else int(v) if as_int else v for v in col.tolist()]     # NaN: NULL

    def row_dict(self, i: int) -> dict[str, Any]:
        """Row ``i`` as ``{column: value}`` (``Tile(**table.row_dict(i))`` when every column was read)."""
        return {n: self.value(n, i) for n in self._columns}


class TileRow:
    """One row of a :class:`TileTable`, read like a ``Tile`` (``row.path``, ``row.extra`` ...).
    A column the table was not read with is an AttributeError, so ``getattr(row, name, None)``
    works as for objects without that attribute."""

    __slots__ = ("_table", "_i")

    def __init__(self, table: TileTable, i: int):
        self._table = table
        self._i = i

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._table:
            raise AttributeError(name)
        return self._table.value(name, self._i)

    def as_dict(self) -> dict[str, Any]:
        return self._table.row_dict(self._i)

    def __repr__(self) -> str:
        return f"TileRow({self._i}, id={getattr(self, 'id', None)}, path={getattr(self, 'path', None)!r})"


def ids_of(tiles: Any) -> list[int]:
    """The ids of ``tiles`` (a table's column, or each row's ``id``), as ints."""
    if isinstance(tiles, TileTable):
        return tiles.column("id").tolist()
    return [t.id for t in tiles]


def concat(tables: Sequence[TileTable]) -> TileTable:
    """The rows of several tables (read with the same columns), one after the other."""
    names = tables[0].names
    if any(t.names != names for t in tables):
        raise ValueError("tables with different columns cannot be joined")
    out: dict[str, Any] = {}
    for name in names:
        cols = [t.column(name) for t in tables]
        out[name] = np.concatenate(cols) if isinstance(cols[0], np.ndarray) else [v for c in cols for v in c]
    return TileTable(out)


def table_from_rows(names: Sequence[str], rows: list[tuple], load_paths) -> TileTable:
    """A table from ``rows`` (tuples in ``names`` order, as sqlite3 returns them); ``load_paths``
    turns a list of stored paths into absolute ones."""
    if rows:
        cols = list(zip(*rows))
    else:
        cols = [() for _ in names]
    out: dict[str, Any] = {}
    for name, values in zip(names, cols):
        if name == "id":
            out[name] = np.fromiter(values, np.int64, len(values))
        elif name in INTEGER_COLUMNS or name in REAL_COLUMNS:
            out[name] = np.array(values, dtype=np.float64) if values else np.empty(0, np.float64)
        elif name in PATH_COLUMNS:
            out[name] = load_paths(values)
        else:
            out[name] = list(values)
    return TileTable(out)
