"""Queue settings: pause, concurrency and rate limits, retention (issue #15).

The settings live in ``eventix_queue`` and the claim consults them itself
(``CLAIMABLE_QUEUES`` in :mod:`.statements`), so every front end (CLI, REST API,
the operator's EventixQueue resources) only writes the row; nothing here checks a
limit. Writes are upserts: replaying one changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from eventix_operator.db import statements


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A change of settings: each field given (not None in ``given``) is written.

    ``None`` as a value clears that setting (no limit, the tasks' own retention);
    a field left out of ``given`` keeps its value."""

    paused: bool | None = None
    concurrency_limit: int | None = None
    rate_count: int | None = None
    rate_per_seconds: float | None = None
    retain_succeeded_seconds: int | None = None
    retain_failed_seconds: int | None = None
    given: frozenset[str] = frozenset()


def everything(**values: Any) -> QueueSettings:
    """Settings that replace every field (what a resource declares in full)."""
    return QueueSettings(**values, given=frozenset(statements.QUEUE_SETTINGS))


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue's settings and figures."""

    name: str
    paused: bool
    concurrency_limit: int | None
    rate_count: int | None
    rate_per_seconds: float | None
    retain_succeeded_seconds: int | None
    retain_failed_seconds: int | None
    k8s_namespace: str | None
    k8s_name: str | None
    k8s_uid: str | None
    k8s_generation: int | None  # the generation of the resource's spec applied last
    updated_at: datetime
    due: int
    running: int
    oldest_due_seconds: float | None

    @classmethod
    def from_row(cls, row: Any) -> Queue:
        values = dict(row._mapping)
        oldest = values.pop("oldest_due_seconds")
        return cls(**values, oldest_due_seconds=None if oldest is None else float(oldest))


def set_queue(
    conn: Connection,
    name: str,
    settings: QueueSettings,
    *,
    k8s: tuple[str, str, str] | None = None,
    generation: int | None = None,
) -> bool | None:
    """Write the given settings of ``name`` (creating its row); returns whether the
    queue is paused now. Leaving it unpaused wakes its workers.

    ``k8s`` is the (namespace, name, uid) of the EventixQueue that configures it:
    then a queue another resource configures is left as it is, and the answer is
    None. Without, the change applies whoever configures the queue."""
    params: dict[str, Any] = {"name": name}
    for field in statements.QUEUE_SETTINGS:
        params[field] = getattr(settings, field)
        params[f"set_{field}"] = field in settings.given
    namespace, resource, uid = k8s or (None, None, None)
    params.update(
        k8s_namespace=namespace, k8s_name=resource, k8s_uid=uid, k8s_generation=generation
    )
    row = conn.execute(statements.SET_QUEUE, params).first()
    return None if row is None else bool(row.paused)


def pause(conn: Connection, name: str) -> None:
    """Stop claims of ``name`` from the commit on (a claim in flight may finish)."""
    set_queue(conn, name, QueueSettings(paused=True, given=frozenset({"paused"})))


def resume(conn: Connection, name: str) -> None:
    """Let ``name`` be claimed again, and wake its workers at the commit."""
    set_queue(conn, name, QueueSettings(paused=False, given=frozenset({"paused"})))


def delete_queue(conn: Connection, name: str | None, *, k8s_uid: str | None = None) -> bool:
    """Drop the settings of ``name`` (only if ``k8s_uid`` still configures them, when
    given); with ``name`` None, those of whichever queue ``k8s_uid`` configures."""
    return (
        conn.execute(statements.DELETE_QUEUE, {"name": name, "k8s_uid": k8s_uid}).first()
        is not None
    )


def get_queue(conn: Connection, name: str) -> Queue | None:
    row = conn.execute(statements.GET_QUEUE, {"name": name}).first()
    return None if row is None else Queue.from_row(row)


def list_queues(conn: Connection) -> list[Queue]:
    return [Queue.from_row(r) for r in conn.execute(statements.LIST_QUEUES)]


def parse_rate(text: str) -> tuple[int, float] | None:
    """``"10/1"`` or ``"10/s"``, ``"600/60"``, ``"100/m"``, ``"5/2.5"`` → (count, per
    seconds); ``"none"`` → None. A ValueError says what is wrong."""
    value = text.strip().lower()
    if value in ("none", "off", ""):
        return None
    count_text, sep, per_text = value.partition("/")
    if not sep:
        raise ValueError(f"rate {text!r}: expected COUNT/SECONDS, e.g. 10/1 or 100/m")
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        count = int(count_text)
        per = units[per_text] if per_text in units else float(per_text)
    except (KeyError, ValueError):
        raise ValueError(f"rate {text!r}: expected COUNT/SECONDS, e.g. 10/1 or 100/m") from None
    if count < 1 or not per > 0 or per != per or per == float("inf"):
        raise ValueError(f"rate {text!r}: the count must be >= 1 and the seconds > 0")
    return count, per
