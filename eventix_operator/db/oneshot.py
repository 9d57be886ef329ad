"""The data layer for one-shot commands (`eventix tasks list|show`, `eventix queue
stats`, `eventix enqueue`), run on plain psycopg without importing SQLAlchemy.

Why: importing SQLAlchemy costs a command line about a quarter of a second, several
times the query it runs; a command a person types should answer within a few
tenths of a second of python's own start (#11). The statements stay those of
:mod:`.statements`, and values map to rows and back through the same functions
(:class:`~.rows.TaskRecord`, :func:`~.rows.queue_stat`,
:func:`~.enqueue.insert_batch`). SQLAlchemy compiles the statements for psycopg
once, and the texts are cached in a file with a key of the sources they are built
from and of SQLAlchemy's installation, so a changed statement (an upgrade, or an
edit in a checkout) is compiled afresh. A cache that cannot be read or written
costs only time: the statements are then compiled in the process, as on a first
run.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads

from eventix_operator.db.enqueue import NewTask, insert_batch
from eventix_operator.db.payload import load_json
from eventix_operator.db.rows import QueueStat, TaskRecord, parse_uid, queue_stat, records
from eventix_operator.settings import libpq_url

#: The columns a command-line listing filters on, in the order of the cached variants'
#: names; each combination is compiled (four statements).
LISTING_FILTERS = ("namespace", "status")
#: The sources the compiled texts are built from: a change to any of them is a new key.
_SOURCES = (
    "db/statements.py",
    "db/schema.py",
    "db/trigger_schema.py",
    "db/rows.py",
    "retry.py",
    "db/oneshot.py",
)
_PACKAGE = Path(__file__).resolve().parent.parent


def _listing_name(filters: Sequence[str]) -> str:
    return "tasks_page[" + ",".join(f for f in LISTING_FILTERS if f in filters) + "]"


def compile_statements() -> dict[str, str]:
    """Every statement this module runs, as SQLAlchemy compiles it for psycopg
    (``%(name)s`` parameters). Imports SQLAlchemy: only on a cache miss."""
    from itertools import combinations

    from sqlalchemy import bindparam

    from eventix_operator.db import statements

    text_of = statements.for_psycopg
    out = {
        "GET_TASK": text_of(statements.GET_TASK),
        "QUEUE_STATS": text_of(statements.QUEUE_STATS),
        "INSERT_TASKS": text_of(statements.INSERT_TASKS),
    }
    for size in range(len(LISTING_FILTERS) + 1):
        for filters in combinations(LISTING_FILTERS, size):
            page = statements.tasks_page(
                equals={name: bindparam(name) for name in filters},
                within={},
                order=[("created_time", True)],
                skip=bindparam("skip"),  # type: ignore[arg-type]
                limit=bindparam("limit"),  # type: ignore[arg-type]
            )
            out[_listing_name(filters)] = text_of(page)
    return out


def cache_key() -> str:
    """What the cached texts depend on: the sources they are built from and
    SQLAlchemy's compiler, each by path, size and modification time (as Python's own
    bytecode cache; an editable install keeps its version across edits, an upgrade
    rewrites the files)."""
    import importlib.util

    spec = importlib.util.find_spec("sqlalchemy")
    paths = [_PACKAGE / name for name in _SOURCES]
    if spec is not None and spec.origin is not None:
        paths.append(Path(spec.origin))
    parts = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:  # an install of bytecode only: no stamp to compare, compile each time
            return ""
        parts.append(f"{path}:{info.st_size}:{info.st_mtime_ns}")
    return "\n".join(parts)


def cache_path() -> Path:
    """The cache file, under ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eventix-operator" / "statements.json"


_loaded: dict[str, str] | None = None


def cached_statements() -> dict[str, str]:
    """The compiled texts, from the cache file when its key is the current one, or
    compiled here (and the file replaced)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    path, key = cache_path(), cache_key()
    try:
        found = json.loads(path.read_text())
        if key and found["key"] == key:
            _loaded = {str(k): str(v) for k, v in found["statements"].items()}
            return _loaded
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # none yet, stale, or unreadable: compile
    _loaded = compile_statements()
    if not key:
        return _loaded
    with contextlib.suppress(OSError):  # a read-only home: compile each time instead
        import tempfile

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".statements-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "statements": _loaded}, f)
            os.replace(tmp, path)  # readers see the old file or the whole new one
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return _loaded


@contextlib.contextmanager
def connect(url: str, *, connect_timeout: float) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for one or two statements: libpq reads the URL
    (``postgresql+psycopg://`` as :func:`~.settings.normalise_database_url` writes
    it, multi-host lists as query parameters), and nothing is prepared (a
    statement runs once; a pooler may sit in between)."""
    conn = psycopg.connect(
        libpq_url(url),
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=max(1, int(connect_timeout)),
    )
    set_json_loads(load_json, conn)
    try:
        yield conn
    finally:
        conn.close()


def _rows(conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any]) -> list[Any]:
    return conn.execute(cached_statements()[name], params).fetchall()


def get_task(conn: psycopg.Connection[Any], uid: str) -> TaskRecord | None:
    """:func:`~.admin.get_task` on a one-shot connection."""
    if parse_uid(uid) is None:
        return None
    rows = _rows(conn, "GET_TASK", {"uid": uid})
    return TaskRecord.from_row(rows[0]) if rows else None


def list_tasks(
    conn: psycopg.Connection[Any], *, equals: Mapping[str, str], limit: int
) -> list[TaskRecord]:
    """:func:`~.admin.list_tasks` newest first, filtered on :data:`LISTING_FILTERS`."""
    for name in equals:
        if name not in LISTING_FILTERS:
            raise KeyError(name)
    params = {**equals, "skip": 0, "limit": limit}
    return records(_rows(conn, _listing_name(list(equals)), params))


def queue_stats(conn: psycopg.Connection[Any]) -> list[QueueStat]:
    """:func:`~.admin.queue_stats` on a one-shot connection."""
    return [queue_stat(row) for row in _rows(conn, "QUEUE_STATS", {})]


def insert_tasks(
    conn: psycopg.Connection[Any], tasks: Sequence[NewTask], *, payload_limit: int
) -> list[str]:
    """:func:`~.enqueue.insert_tasks` for the few tasks of a command (one INSERT,
    merged by unique key; committed by itself: the connection is in autocommit)."""

    def run(params: dict[str, list[Any]]) -> Sequence[Any]:
        with conn.cursor(row_factory=namedtuple_row) as cursor:
            return cursor.execute(cached_statements()["INSERT_TASKS"], params).fetchall()

    return insert_batch(run, tasks, payload_limit=payload_limit)
