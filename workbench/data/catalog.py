"""The tile catalog: one SQLite database, one row per tile, the only bridge between tasks.

Tasks read tiles by query and write back what they learn (predicted labels,
pseudo-masks, generated tiles). Every write is one transaction taken with
``BEGIN IMMEDIATE`` under WAL, so two processes importing at once queue instead of
losing rows, and a failed import leaves the catalog exactly as it was.

A process that only reads (training, evaluation, listing) opens the catalog ``read_only``:
SQLite's ``mode=ro``, which under WAL never takes a write lock, so readers never hold up the
one writer and each query sees whole transactions only. ``immutable`` is for a catalog the
user says does not change while it is read (a frozen copy on shared storage, read by many
nodes): SQLite then takes no lock at all and reads no WAL (see ``Catalog``).

Paths under the catalog's folder are stored relative to it, so a data folder can
be moved or shared as a whole.
"""

from __future__ import annotations

import gc
import json
import operator
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import paths
from workbench.errors import WorkbenchError
from workbench.files import may_write

if TYPE_CHECKING:
    from workbench.data.tile_table import TileTable

SOURCES = ("bluemarble", "earthengine", "folder", "generated", "predicted")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS tiles (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    mask_path TEXT,
    source TEXT NOT NULL,
    split TEXT,
    lon REAL, lat REAL,
    west REAL, south REAL, east REAL, north REAL,
    crs TEXT,
    width INTEGER, height INTEGER,
    gsd REAL,
    date TEXT,
    cloud_cover REAL,
    bands TEXT,
    water_fraction REAL,
    label TEXT,
    pred_label TEXT,
    pred_score REAL,
    model_id TEXT,
    caption TEXT,
    parent_id INTEGER REFERENCES tiles(id) ON DELETE SET NULL,
    scene_id TEXT,
    extra TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tiles_source_split ON tiles(source, split);
CREATE INDEX IF NOT EXISTS tiles_lonlat ON tiles(lon, lat);
CREATE INDEX IF NOT EXISTS tiles_label ON tiles(label);
CREATE INDEX IF NOT EXISTS tiles_pred ON tiles(pred_label);
CREATE INDEX IF NOT EXISTS tiles_split ON tiles(split);
CREATE INDEX IF NOT EXISTS tiles_date ON tiles(date);
CREATE INDEX IF NOT EXISTS tiles_water ON tiles(water_fraction);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


# the filter indexes (not the path's UNIQUE one), as SCHEMA creates them
_INDEX_STATEMENTS = [s.strip() for s in SCHEMA.split(";") if s.strip().startswith("CREATE INDEX")]
_INDEXES = [s.split("EXISTS", 1)[1].split()[0] for s in _INDEX_STATEMENTS]


@dataclass
class Tile:
    """One catalog row. ``path``/``mask_path`` are absolute when read back."""

    path: str
    source: str
    mask_path: str | None = None
    split: str | None = None
    lon: float | None = None
    lat: float | None = None
    west: float | None = None
    south: float | None = None
    east: float | None = None
    north: float | None = None
    crs: str | None = None
    width: int | None = None
    height: int | None = None
    gsd: float | None = None
    date: str | None = None
    cloud_cover: float | None = None  # fraction 0..1
    bands: list[str] = field(default_factory=list)
    water_fraction: float | None = None
    label: str | None = None
    pred_label: str | None = None
    pred_score: float | None = None
    model_id: str | None = None
    caption: str | None = None
    parent_id: int | None = None
    scene_id: str | None = None
    extra: dict = field(default_factory=dict)
    created_at: str | None = None
    id: int | None = None

    def to_json(self) -> dict:
        """The stable JSON form of ``workbench data list --json``."""
        return asdict(self)


COLUMNS = [f.name for f in fields(Tile) if f.name != "id"]
# the order of ``SELECT {ROW_NAMES}``, what query() and table() read rows in
ROW_NAMES = ["id", *COLUMNS]
CHUNK = 500  # bound parameters per IN (...): well under SQLite's limit (999 before 3.32)
# json.dumps(x, sort_keys=True) (the same text), minus its per-call setup
_extra_json = json.JSONEncoder(sort_keys=True, check_circular=False).encode
REBUILD_ROWS = 50_000  # new rows from which add_tiles may rebuild the indexes (see add_tiles)
TABLE_BLOCK = 100_000  # rows fetched at a time by Catalog.table
LISTED_FOLDER = 256  # paths of one folder in one write from which its listing is read (see _path_storer)
BULK_CACHE_KIB = 128 * 1024  # SQLite page cache while a large batch goes in: its indexes' pages stay in memory
QUERY_KEYS = ("source", "split", "bbox", "label", "pred_label", "water_min", "water_max",
              "date_from", "date_to", "where", "ids", "model_id", "limit")


def _retry_locked(action: Callable[[], Any], attempts: int = 50) -> Any:
    """Run ``action`` again while SQLite answers "database is locked", about a minute in all.

    The busy timeout covers most waits, but SQLite answers some at once to avoid a deadlock:
    a reader upgrading to a write lock (BEGIN IMMEDIATE, or the switch to WAL of a catalog that
    another process is creating) while a writer holds one. Those need a retry of our own.
    """
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


class Catalog:
    """Open the catalog at ``path`` or the default location: creating it if needed, or, with
    ``read_only``, only reading one that exists (no file, folder, WAL or schema is ever made,
    so listing a catalog in a read-only folder works and a typo never leaves an empty catalog).

    A read-only catalog never takes a write lock (SQLite ``mode=ro``: under WAL a writer in
    another process commits while it reads, and each of its queries sees only whole
    transactions); asked to write, it refuses in one line. With ``immutable`` (read-only only)
    the caller promises that nothing changes the file while it is open: SQLite opens it with
    ``immutable=1``, takes no lock at all and reads no ``-wal`` / ``-shm`` file, which is what
    readers on other machines need (WAL's shared memory does not work across a network file
    system); a change made meanwhile can give wrong rows or errors. It is refused while a
    non-empty ``-wal`` lies beside the file (a writer has it open, or commits are not yet in
    the file). A catalog in a folder that no one may write (no write bit) is opened immutable
    without asking: no writer can work there.

    A writer refuses, before opening, a catalog whose file or folder it may not write, or that
    has no write bit at all (made read-only on purpose; refused even for root): one line, the
    file unchanged.

    Every open checks the schema: its version and the ``tiles`` columns must be the ones this
    workbench knows (a newer or hand-edited catalog is refused, not half-written). Writers also
    run SQLite's ``quick_check`` first, so an import never commits into a catalog with corrupt
    pages."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False, immutable: bool = False):
        self.path = Path(path) if path else paths.default_catalog()
        self.read_only = bool(read_only)
        if immutable and not self.read_only:
            raise ValueError("Catalog(immutable=True) is for reading: give read_only=True too")
        if self.read_only and not self.path.is_file():
            raise WorkbenchError(f"{self.path}: no such catalog (build one with: workbench data bluemarble)")
        self.root = self.path.parent.resolve()
        try:
            if self.read_only:
                self.conn = _connect_read_only(self.path, immutable)
                self._check_schema()
            else:                       # checks an existing file itself, before touching it
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _refuse_read_only(self.path)
                self.conn = self._connect_writer()
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc):
                raise WorkbenchError(f"{self.path}: the catalog is read-only here ({exc}); nothing was changed") \
                    from None
            raise WorkbenchError(f"{self.path}: not a workbench catalog, or a corrupt one ({exc})") from None
        except OSError as exc:
            raise WorkbenchError(f"{self.path}: cannot open the catalog ({exc.strerror or exc})") from None

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        self.conn = conn
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 120000")
        # no table yet: a new file, or one that another importer is creating right now
        fresh = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if not fresh:  # checked before anything (the WAL switch included) touches the file
            _quick_check(conn, self.path)
            self._check_schema()
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        with self.transaction():
            for stmt in filter(str.strip, SCHEMA.split(";")):
                conn.execute(stmt)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return conn

    def _check_schema(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"tiles", "meta"} <= tables:
            raise WorkbenchError(f"{self.path}: not a workbench catalog (no tiles/meta tables)")
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = row[0] if row else None
        if str(version) != str(SCHEMA_VERSION):
            raise WorkbenchError(f"{self.path}: catalog schema version {version}; this workbench reads version "
                                 f"{SCHEMA_VERSION} (made by another workbench version?)")
        have = [r[1] for r in self.conn.execute("PRAGMA table_info(tiles)")]
        want = ["id", *COLUMNS]
        if set(have) != set(want):
            extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
            raise WorkbenchError(f"{self.path}: the tiles table does not have this workbench's columns ("
                                 + "; ".join(p for p in (f"unknown: {', '.join(extra)}" if extra else "",
                                                         f"missing: {', '.join(missing)}" if missing else "")
                                             if p) + ")")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a write lock up front (IMMEDIATE) so concurrent writers queue.

        Inside another ``transaction()`` it joins the outer one (no BEGIN of its own): several
        writes that belong together (rows, then the links between them) commit as one."""
        if self.read_only:
            raise WorkbenchError(f"{self.path}: this catalog was opened read-only and cannot be written; "
                                 "nothing was changed")
        if self.conn.in_transaction:
            yield self.conn
            return
        _retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # ---- paths ---------------------------------------------------------------------------
    def _store_path(self, p: str | Path | None) -> str | None:
        return self._path_storer()(p)

    def _path_storer(self, batch: Iterable[str | Path | None] = ()) -> Callable[[str | Path | None], str | None]:
        """``_store_path`` for many paths: each folder resolved once (``Path.resolve`` walks every
        component, most of what storing a row cost), then only the file itself checked for a link
        -- by one listing of its folder when ``batch`` (the paths to come) holds many of that folder
        (bounded: a folder listing longer than 4x its share of the batch is not read), else by
        ``lstat``. What is stored is what ``Path(p).resolve()`` gives: a symlinked file is stored as
        its target, so two links to one file are one row. The caches live for one call."""
        root = str(self.root)
        prefix = root.rstrip(os.sep) + os.sep
        folders: dict[str, str] = {}
        sep = os.sep

        def split(text: str) -> tuple[str, str]:   # os.path.split's answer, as the cache key, faster
            head, _, name = text.rpartition(sep)
            return head or (sep if text.startswith(sep) else ""), name

        per_folder = Counter(split(os.fspath(p))[0] for p in batch if p is not None)
        links = {head: _links_in(head, 4 * k) for head, k in per_folder.items() if k >= LISTED_FOLDER}

        def store(p: str | Path | None) -> str | None:
            if p is None:
                return None
            text = os.fspath(p)
            head, name = split(text)
            if not name or name in (".", ".."):
                full = str(Path(text).resolve())
            else:
                folder = folders.get(head)
                if folder is None:
                    folder = folders[head] = str(Path(head or ".").resolve()).rstrip(sep)
                full = folder + sep + name
                listed = links.get(head)
                if (name in listed) if listed is not None else os.path.islink(full):
                    full = str(Path(full).resolve())
            if full.startswith(prefix):
                return full[len(prefix):]
            return "." if full == root else full

        return store

    def _load_path(self, p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p)
        return str(q if q.is_absolute() else self.root / q)

    def _load_paths(self, stored: Sequence[str | None]) -> list[str | None]:
        """``_load_path`` of many: stored paths are normalised already (``_store_path``), so a
        relative one joins the root as text."""
        prefix = str(self.root).rstrip(os.sep) + os.sep
        return [p if p is None or p.startswith(os.sep) else prefix + p for p in stored]

    # ---- writes --------------------------------------------------------------------------
    def add_tiles(self, tiles: Iterable[Tile], replace: bool = False) -> list[int]:
        """Insert tiles in one transaction; a path already present is kept (or replaced, with
        ``replace``); returns each tile's id, in input order.

        Bulk: the paths already there are looked up in chunks, the new rows get the ids SQLite
        would give them (max + 1 ...: assigned under the write lock, so no other writer can
        take them) and go in with one ``executemany``; no statement per row. A batch at least as
        large as the catalog (and of ``REBUILD_ROWS`` or more) goes in with the filter indexes
        dropped and built again after it, in the same transaction (readers keep seeing the
        catalog as it was, indexes included): at a million rows each row's random insert into
        seven indexes no longer fits SQLite's page cache, a sorted build per index does."""
        with _gc_paused():
            return self._add_rows(self._rows_of(tiles), replace)

    def _add_rows(self, rows: list[list], replace: bool) -> list[int]:
        p = COLUMNS.index("path")
        with self._page_cache(BULK_CACHE_KIB if len(rows) > 10_000 else None), self.transaction() as conn:
            have = self._ids_of(conn, list(dict.fromkeys(r[p] for r in rows))) if self._has_rows(conn) else {}
            first_id = next_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM tiles").fetchone()[0] + 1
            new: dict[str, list] = {}        # path -> [id, *values], in first-seen order
            changed: dict[str, list] = {}    # existing path -> its new values (replace)
            ids = []
            for row in rows:
                path = row[p]
                tid = have.get(path)
                if tid is not None:
                    if replace:
                        changed[path] = [*row, tid]
                elif path in new:
                    tid = new[path][0]
                    if replace:            # the last one given wins, as an upsert would
                        new[path] = [tid, *row]
                else:
                    tid = next_id
                    next_id += 1
                    new[path] = [tid, *row]
                ids.append(tid)
            marks = ", ".join("?" * len(ROW_NAMES))
            rebuild = len(new) >= REBUILD_ROWS and len(new) >= first_id - 1   # at least as many as there were
            if rebuild:
                for name in _INDEXES:
                    conn.execute(f"DROP INDEX IF EXISTS {name}")
            conn.executemany(f"INSERT INTO tiles ({', '.join(ROW_NAMES)}) VALUES ({marks})", new.values())
            if rebuild:         # one sorted build per index instead of a random insert per row and index
                for stmt in _INDEX_STATEMENTS:
                    conn.execute(stmt)
            if changed:
                sets = ", ".join(f"{c} = ?" for c in COLUMNS)
                conn.executemany(f"UPDATE tiles SET {sets} WHERE id = ?", changed.values())
        return ids

    def _rows_of(self, tiles: Iterable[Tile]) -> list[list]:
        """Each tile's values in ``COLUMNS`` order as stored (paths relative, JSON text, created_at)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        values = operator.attrgetter(*COLUMNS)
        p, m, b, e, c = (COLUMNS.index(k) for k in ("path", "mask_path", "bands", "extra", "created_at"))
        rows = []
        for t in tiles:
            if t.source not in SOURCES:
                raise WorkbenchError(f"unknown source {t.source!r} (known: {', '.join(SOURCES)})")
            rows.append(list(values(t)))
        store = self._path_storer(r[k] for r in rows for k in (p, m))
        band_text: dict[tuple, str] = {}
        for row in rows:
            row[p], row[m] = store(row[p]), store(row[m])
            bands = tuple(row[b] or ())
            text = band_text.get(bands)
            if text is None:
                text = band_text[bands] = json.dumps(list(bands))
            row[b] = text
            row[e] = _extra_json(row[e]) if row[e] else "{}"
            row[c] = row[c] or now
        return rows

    @contextmanager
    def _page_cache(self, kib: int | None) -> Iterator[None]:
        """SQLite's page cache at ``kib`` for the block (None: unchanged). A large insert updates
        every index at random places: with the default 2 MiB cache most of its time goes in
        fetching those pages again (about 2x the rate at 300 k rows with 128 MiB)."""
        if kib is None:
            yield
            return
        before = self.conn.execute("PRAGMA cache_size").fetchone()[0]
        self.conn.execute(f"PRAGMA cache_size = {-int(kib)}")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA cache_size = {int(before)}")

    @staticmethod
    def _has_rows(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM tiles LIMIT 1").fetchone() is not None

    @staticmethod
    def _ids_of(conn: sqlite3.Connection, stored: list[str]) -> dict[str, int]:
        """Stored path -> id of those of ``stored`` that have a row (chunked: SQLite caps parameters)."""
        found: dict[str, int] = {}
        cur = conn.cursor()
        cur.row_factory = None
        for i in range(0, len(stored), CHUNK):
            chunk = stored[i:i + CHUNK]
            found.update(cur.execute(f"SELECT path, id FROM tiles WHERE path IN ({', '.join('?' * len(chunk))})",
                                      chunk).fetchall())
        return found

    def set_predictions(self, predictions: Sequence[tuple[int, str, float]], model_id: str) -> int:
        """Write (tile id, label, score) for many tiles in one transaction."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE tiles SET pred_label = ?, pred_score = ?, model_id = ? WHERE id = ?",
                [(label, float(score), model_id, int(tid)) for tid, label, score in predictions])
        return len(predictions)

    def update(self, tile_id: int, **values: Any) -> None:
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise WorkbenchError(f"unknown catalog column(s): {', '.join(sorted(unknown))}")
        self.update_many([(tile_id, values)])

    def update_many(self, changes: Sequence[tuple[int, dict[str, Any]]]) -> None:
        with self.transaction() as conn:
            for tile_id, values in changes:
                values = dict(values)
                for key in ("path", "mask_path"):
                    if key in values:
                        values[key] = self._store_path(values[key])
                if "bands" in values:
                    values["bands"] = json.dumps(list(values["bands"]))
                if "extra" in values:
                    values["extra"] = json.dumps(values["extra"], sort_keys=True)
                sets = ", ".join(f"{k} = :{k}" for k in values)
                conn.execute(f"UPDATE tiles SET {sets} WHERE id = :_id", {**values, "_id": int(tile_id)})

    def delete(self, ids: Sequence[int]) -> None:
        with self.transaction() as conn:
            conn.executemany("DELETE FROM tiles WHERE id = ?", [(int(i),) for i in ids])

    def remove(self, ids: Sequence[int]) -> int:
        """Delete these rows in one transaction and return how many went (ids not there count 0).

        Only rows: the files they point at are the user's (or the workbench's own derived
        files, which the caller may mention); tiles whose ``parent_id`` named a removed row
        keep their row with ``parent_id`` NULL (the schema's ON DELETE SET NULL)."""
        ids = [int(i) for i in ids]
        removed = 0
        with self.transaction() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                removed += conn.execute(f"DELETE FROM tiles WHERE id IN ({', '.join('?' * len(chunk))})",
                                        chunk).rowcount
        return removed

    def set_splits(self, changes: Sequence[tuple[int, str | None, dict]]) -> int:
        """Set (tile id, split, extra) for many tiles in one transaction (a re-split); returns the count."""
        with self.transaction() as conn:
            conn.executemany("UPDATE tiles SET split = ?, extra = ? WHERE id = ?",
                             [(split, json.dumps(extra or {}, sort_keys=True), int(tid))
                              for tid, split, extra in changes])
        return len(changes)

    def imported_from(self, root: str | Path, **filters: Any) -> list[Tile]:
        """Tiles matching ``filters`` whose ``extra.imported_from`` (the file an import read) lies
        under ``root`` (a folder) or is ``root`` (a file): what one ``data import`` added.

        Compared as resolved paths, in Python, so a folder name that is a prefix of another
        (``/data/a`` vs ``/data/ab``) does not match."""
        base = Path(root).expanduser().resolve()
        where = "json_extract(extra, '$.imported_from') IS NOT NULL"
        if filters.get("where"):
            where = f"({filters['where']}) AND {where}"
        out = []
        for t in self.query(**{**filters, "where": where}):
            src = Path(t.extra["imported_from"])
            if src == base or src.is_relative_to(base):
                out.append(t)
        return out

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # ---- reads ---------------------------------------------------------------------------
    def query(self, **filters: Any) -> list[Tile]:
        """Tiles matching every filter given (see ``QUERY_KEYS``), in id order."""
        select = self._select(f"SELECT {', '.join(ROW_NAMES)} FROM tiles", filters, order=True)
        with _gc_paused():
            return self._tiles(self._read(select, filters.get("where")))

    def iter_query(self, batch_size: int = 10_000, **filters: Any) -> Iterator[Tile]:
        """``query``, lazily: Tiles read ``batch_size`` rows at a time (``fetchmany``), for a
        consumer that streams a large selection instead of holding it. Consume it before the
        next write on this catalog (it reads one snapshot)."""
        cur = self._rows(self._select(f"SELECT {', '.join(ROW_NAMES)} FROM tiles", filters, order=True),
                         filters.get("where"))
        while True:
            rows = _fetch(cur, batch_size, filters.get("where"))
            if not rows:
                return
            yield from self._tiles(rows)

    def table(self, columns: Sequence[str] | None = None, **filters: Any) -> TileTable:
        """The rows matching ``filters`` (as ``query``, in id order) as a
        :class:`~workbench.data.tile_table.TileTable`: ``columns`` (default: all; ``id`` always)
        as numpy arrays and lists, paths absolute, no Python object per row. What a dataset over
        hundreds of thousands of tiles is built from
        (``columns=workbench.data.tile_table.DATASET_COLUMNS``)."""
        from workbench.data.tile_table import concat, table_from_rows

        names = ROW_NAMES if columns is None else ["id", *dict.fromkeys(c for c in columns if c != "id")]
        unknown = [c for c in names if c not in ROW_NAMES]
        if unknown:
            raise WorkbenchError(f"unknown catalog column(s): {', '.join(unknown)} (known: {', '.join(ROW_NAMES)})")
        cur = self._rows(self._select(f"SELECT {', '.join(names)} FROM tiles", filters, order=True),
                         filters.get("where"))
        parts = []     # read in blocks: no list of every row's tuple at once (ten million rows)
        with _gc_paused():
            while True:
                rows = _fetch(cur, TABLE_BLOCK, filters.get("where"))
                if not rows and parts:
                    break
                parts.append(table_from_rows(names, rows, self._load_paths))
                if len(rows) < TABLE_BLOCK:
                    break
        return parts[0] if len(parts) == 1 else concat(parts)

    def count(self, **filters: Any) -> int:
        sql, params = self._select("SELECT COUNT(*) FROM tiles", {**filters, "limit": None})
        return self._read((sql, params), filters.get("where"))[0][0]

    def get(self, tile_id: int) -> Tile:
        rows = self.query(ids=[tile_id])
        if not rows:
            raise WorkbenchError(f"no tile with id {tile_id} in {self.path}")
        return rows[0]

    def chipped_scenes(self, sources: Iterable[str | Path]) -> set[str]:
        """Which of these scenes (absolute paths or GDAL paths) have chips here (``extra.imported_from``)."""
        keys = [str(p) if "://" in str(p) or str(p).startswith("/vsi") else str(Path(p).resolve()) for p in sources]
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self.conn.execute("SELECT DISTINCT json_extract(extra, '$.imported_from') FROM tiles WHERE "
                                     f"json_extract(extra, '$.imported_from') IN ({', '.join('?' * len(chunk))}) "
                                     "AND json_extract(extra, '$.chip') IS NOT NULL", chunk).fetchall()
            found.update(r[0] for r in rows)
        return found

    def existing_paths(self, candidates: Iterable[str | Path]) -> set[str]:
        """Which of these files already have a row (absolute paths): lets a re-import skip them."""
        store = self._path_storer()
        stored = list(dict.fromkeys(store(p) for p in candidates))
        return set(self._load_paths(list(self._ids_of(self.conn, stored))))

    def stats(self, **filters: Any) -> dict[str, Any]:
        """Counts per source / split / label and water-fraction summaries."""
        base, params = self._select("SELECT {cols} FROM tiles", {**filters, "limit": None})
        where = filters.get("where")

        def group(col: str) -> dict:
            sql = base.replace("{cols}", f"COALESCE({col}, '-') AS k, COUNT(*)", 1) + " GROUP BY k ORDER BY k"
            return {r[0]: r[1] for r in self._read((sql, params), where)}

        # the head's {cols} only: a user's --where is SQL, never a format string
        summary = self._read((base.replace("{cols}", "COUNT(*), AVG(water_fraction), MIN(water_fraction), "
                                                     "MAX(water_fraction), SUM(mask_path IS NOT NULL)", 1),
                              params), where)[0]
        wf_sql = base.replace("{cols}", "source, split, COUNT(*), AVG(water_fraction), "
                                        "SUM(water_fraction > 0.05 AND water_fraction < 0.95)", 1)
        by_source_split = [dict(source=r[0], split=r[1], tiles=r[2], mean_water=r[3], mixed=r[4])
                           for r in self._read((wf_sql + " GROUP BY source, split ORDER BY source, split",
                                                params), where)]
        return dict(tiles=summary[0], with_mask=summary[4] or 0, water_mean=summary[1],
                    water_min=summary[2], water_max=summary[3], by_source=group("source"),
                    by_split=group("split"), by_label=group("label"), by_pred_label=group("pred_label"),
                    by_source_split=by_source_split)

    def _select(self, head: str, f: dict[str, Any], order: bool = False) -> tuple[str, list]:
        """``head`` with the filters ``f`` as a WHERE clause and its parameters; rows in id order
        when ``order``."""
        unknown = set(k for k, v in f.items() if v is not None) - set(QUERY_KEYS)
        if unknown:
            raise WorkbenchError(f"unknown query filter(s): {', '.join(sorted(unknown))}")
        clauses, params = [], []

        def eq(col: str, value: Any) -> None:
            if value is None:
                return
            values = [value] if isinstance(value, str) else list(value)
            if len(values) > CHUNK:     # one parameter, whatever the count (SQLite caps parameters)
                clauses.append(f"{col} IN (SELECT value FROM json_each(?))")
                params.append(json.dumps(values))
                return
            clauses.append(f"{col} IN ({', '.join('?' * len(values))})")
            params.extend(values)

        if f.get("source") is not None:
            for s in [f["source"]] if isinstance(f["source"], str) else f["source"]:
                if s not in SOURCES:
                    raise WorkbenchError(f"unknown source {s!r} (known: {', '.join(SOURCES)})")
        eq("source", f.get("source"))
        eq("split", f.get("split"))
        eq("label", f.get("label"))
        eq("pred_label", f.get("pred_label"))
        eq("model_id", f.get("model_id"))
        if f.get("ids") is not None:
            eq("id", [int(i) for i in f["ids"]])
        if f.get("bbox") is not None:
            w, s, e, n = f["bbox"]
            clauses.append("lon BETWEEN ? AND ? AND lat BETWEEN ? AND ?")
            params += [w, e, s, n]
        for key, op in (("water_min", ">="), ("water_max", "<=")):
            if f.get(key) is not None:
                clauses.append(f"water_fraction {op} ?")
                params.append(float(f[key]))
        for key, op in (("date_from", ">="), ("date_to", "<=")):
            if f.get(key) is not None:
                clauses.append(f"date {op} ?")
                params.append(str(f[key]))
        if f.get("where"):
            clauses.append(f"({check_where(f['where'])})")
        sql = head + (" WHERE " + " AND ".join(clauses) if clauses else "")
        if order:
            sql += " ORDER BY id"
        if f.get("limit") is not None:
            sql += " LIMIT ?"
            params.append(int(f["limit"]))
        return sql, params

    def _rows(self, select: tuple[str, list], where: str | None) -> sqlite3.Cursor:
        """A cursor over ``select`` giving plain tuples (a ``sqlite3.Row`` per row costs more than
        the read); a user's raw ``where`` may only read, and a bad one is a user error."""
        sql, params = select
        cur = self.conn.cursor()
        cur.row_factory = None
        if not where:
            return cur.execute(sql, params)
        self.conn.set_authorizer(_read_only)   # consulted while the statement is prepared
        try:
            return cur.execute(sql, params)
        except sqlite3.Error as exc:
            raise _malformed(where, exc) from None
        finally:
            self.conn.set_authorizer(None)

    def _read(self, select: tuple[str, list], where: str | None) -> list[tuple]:
        """Every row of ``select`` (see ``_rows``)."""
        return _fetch(self._rows(select, where), None, where)

    def _tiles(self, rows: list[tuple]) -> list[Tile]:
        """``Tile`` objects of rows in ``ROW_NAMES`` order. Built without ``Tile.__init__``
        (a plain dataclass: its fields are its ``__dict__``), band lists decoded once per distinct
        list and copied, extras decoded unless empty: about 4x the rate of ``Tile(**dict(row))``."""
        p, m, b, e = (ROW_NAMES.index(k) for k in ("path", "mask_path", "bands", "extra"))
        prefix = str(self.root).rstrip(os.sep) + os.sep
        sep, loads, new, names = os.sep, json.loads, object.__new__, ROW_NAMES
        bands: dict[str | None, list] = {}
        out = []
        for row in rows:
            d = dict(zip(names, row))
            path, mask, text, extra = row[p], row[m], row[b], row[e]
            d["path"] = path if path is None or path.startswith(sep) else prefix + path
            d["mask_path"] = mask if mask is None or mask.startswith(sep) else prefix + mask
            decoded = bands.get(text)
            if decoded is None:
                decoded = bands[text] = loads(text) if text else []
            d["bands"] = list(decoded)
            d["extra"] = loads(extra) if extra and extra != "{}" else {}
            t = new(Tile)
            t.__dict__ = d
            out.append(t)
        return out


def _connect_read_only(path: Path, immutable: bool = False) -> sqlite3.Connection:
    """A connection that can never write and never takes a write lock (``mode=ro``), or, with
    ``immutable``, none at all. A WAL catalog needs its ``-shm`` file, which SQLite cannot make
    in a folder this process may not write: when no one may write that folder (no write bit)
    and no WAL lies beside the file, no writer can be at work and the file is opened immutable;
    a folder that only others may write could hold a writer any time, so then only the user's
    word (``immutable``) opens it."""
    wal = Path(f"{path}-wal")
    dirty = wal.is_file() and wal.stat().st_size > 0
    if immutable and dirty:
        raise WorkbenchError(f"{path}: cannot be read as immutable: {wal.name} beside it holds commits (a writer "
                             "has the catalog open, or left commits not yet in the file); close the writer, or "
                             "read it without --catalog-immutable")
    frozen = immutable or not (dirty or may_write(path.parent, by_anyone=True))
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro{'&immutable=1' if frozen else ''}", uri=True, timeout=120,
                               isolation_level=None)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        if frozen or may_write(path.parent):
            raise
        way = ("let the writer close it (or give it write access to the folder)" if dirty else
               "if nothing writes the catalog while this command runs, give --catalog-immutable")
        raise WorkbenchError(f"{path}: cannot be read read-only here: SQLite needs {path.name}-shm beside it and "
                             f"this process may not write {path.parent} ({exc}); {way}") from None
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 120000")
    conn.execute("PRAGMA query_only = ON")
    return conn


def _fetch(cur: sqlite3.Cursor, n: int | None, where: str | None) -> list[tuple]:
    """The next ``n`` rows of ``cur`` (None: all); an error SQLite meets only while running a
    user's ``where`` (a bad function argument ...) is a user error too."""
    try:
        return cur.fetchall() if n is None else cur.fetchmany(n)
    except sqlite3.Error as exc:
        if not where:
            raise
        raise _malformed(where, exc) from None


def _malformed(where: str, exc: Exception) -> WorkbenchError:
    return WorkbenchError(f"malformed query --where {where!r}: {exc}")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a bulk read or write: the rows are tuples and
    lists with no cycles, but each 700 new containers start a collection pass, which at a
    million rows costs about a third of building a table (a sixth of an insert)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _refuse_read_only(path: Path) -> None:
    """A writer's check before it opens: the file and its folder (where SQLite writes the
    ``-wal`` / ``-shm`` and the journal) must be writable."""
    if path.exists() and not may_write(path):
        raise WorkbenchError(f"{path}: the catalog is read-only (the file may not be written); this command "
                             "writes the catalog, nothing was changed")
    if not may_write(path.parent):
        raise WorkbenchError(f"{path}: the catalog is read-only (its folder may not be written, and SQLite "
                             "writes its -wal and -shm files there); this command writes the catalog, nothing "
                             "was changed")


def _links_in(folder: str, limit: int) -> set[str] | None:
    """Names of the symbolic links in ``folder`` (one ``scandir``: its entries' types, no stat per
    file); an empty set for a folder that does not exist (nothing in it can be a link); None when
    it holds more than ``limit`` entries or cannot be listed (then each file is checked alone)."""
    found: set[str] = set()
    try:
        with os.scandir(folder or ".") as entries:
            for n, entry in enumerate(entries):
                if n >= limit:
                    return None
                if entry.is_symlink():
                    found.add(entry.name)
    except FileNotFoundError:
        return set()
    except OSError:
        return None
    return found


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse to write into a catalog with corrupt pages (SQLite's quick_check: O(pages), no index
    cross-check) -- an import would otherwise commit beside damage and report success."""
    rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
    if rows != ["ok"]:
        raise WorkbenchError(f"{path}: the catalog is corrupt (SQLite quick_check: {'; '.join(rows)[:200]}); "
                             "restore it from a copy, nothing was written")


def _read_only(action: int, *_: Any) -> int:
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


def open_existing(path: str | Path | None = None, read_only: bool = False, immutable: bool = False) -> Catalog:
    """The catalog at ``path`` (default: the workbench home's); a path given but missing is a user
    error rather than a new empty catalog that would make a run train on nothing.

    A process that only reads passes ``read_only`` (no write lock, so it never holds up the
    writer; every rank of a distributed run can open it), and ``immutable`` when the user
    says the file does not change while it runs (see ``Catalog``)."""
    if path is not None and not Path(path).is_file():
        raise WorkbenchError(f"{path}: no such catalog (build one with: workbench data bluemarble)")
    return Catalog(path, read_only=read_only or immutable, immutable=immutable)


def check_where(where: str) -> str:
    """A ``--where`` must be one expression: its parentheses balanced outside quotes, no ``;``
    and no comment, so it cannot close the parentheses it is put in and drop the filters beside
    it (``1=1) OR (1=1`` would return test tiles to ``--split train``)."""
    depth, quote, i, text = 0, None, 0, str(where)
    closing = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == closing[quote]:
                quote = None
        elif ch in closing:
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                break
        elif ch == ";" or text.startswith("--", i) or text.startswith("/*", i):
            raise WorkbenchError(f"malformed query --where {where!r}: one expression only (no ';' and no comments)")
        i += 1
    if depth != 0 or quote:
        raise WorkbenchError(f"malformed query --where {where!r}: unbalanced {'quote' if quote else 'parentheses'}; "
                             "give one "
                             "expression, e.g. \"lat > 60 AND (label = 'coast' OR label = 'water')\"")
    return text


def run_query(source: str | Sequence[str] | None, where: str | None, override: dict | None = None) -> dict:
    """A run's tile filters: its config's ``source`` / ``where``, replaced key by key by the CLI's.

    ``source`` may name several sources as a comma list (``"bluemarble,generated"``, what a
    config or ``--set data.source=...`` can hold): it becomes a list, like ``--source a,b``."""
    q: dict[str, Any] = {}
    sources = _source_list(source)
    if sources:
        q["source"] = sources[0] if len(sources) == 1 else sources
    if where:
        q["where"] = where
    for key, value in (override or {}).items():
        if value is not None:
            q[key] = value
    return q


def _source_list(source: str | Sequence[str] | None) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blanks dropped); None -> []."""
    if source is None:
        return []
    items = source.split(",") if isinstance(source, str) else [str(s) for s in source]
    return [s.strip() for s in items if s and s.strip()]


@dataclass
class TileSelection:
    """The ``data:`` keys every task config starts with: which catalog, which tiles, which splits.

    Task schemas subclass it (``class DataConfig(TileSelection)``) and add their own keys."""

    catalog: str | None = None               # catalog path (None = the workbench home's catalog)
    source: str | None = "bluemarble"        # catalog source(s), a comma list for several (None = any source)
    where: str | None = None                 # extra SQL filter on the catalog
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"

    def query(self, override: dict | None = None) -> dict:
        """The run's tile filters with the command line's on top (see ``run_query``)."""
        return run_query(self.source, self.where, override)
