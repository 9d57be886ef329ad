"""Leadership leases: which operator replica does a job that only one may do.

A lease is a row of ``eventix_lease`` (name, holder, expiry). A replica takes or
renews all the leases it wants in one statement, and gets back the names it
holds: a row that is free, expired or already its own. It holds through any
connection pooler, since no session state is involved (a session advisory lock,
through a transaction pooler, stays on a server connection that other clients
are then given), and it can be read by anyone (``SELECT * FROM eventix_lease``).
The database's clock alone judges expiry; the holder stops acting before that
(see :class:`eventix_operator.operator.leadership.Leadership`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from eventix_operator.db import statements


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    live: bool


def acquire(conn: Connection, names: Iterable[str], holder: str, seconds: float) -> set[str]:
    """Take or renew ``names`` for ``holder`` for ``seconds``; the names it holds now."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    rows = conn.execute(
        statements.ACQUIRE_LEASES, {"names": wanted, "holder": holder, "seconds": seconds}
    )
    return {name for (name,) in rows}


def release(conn: Connection, names: Iterable[str], holder: str) -> None:
    """Give up those of ``names`` that ``holder`` holds."""
    wanted = sorted(set(names))
    if wanted:
        conn.execute(statements.RELEASE_LEASES, {"names": wanted, "holder": holder})


def leases(conn: Connection) -> list[Lease]:
    return [Lease(*row) for row in conn.execute(statements.LIST_LEASES)]
