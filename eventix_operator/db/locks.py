"""Session advisory locks: how one replica among several takes a job (status
sync, pool scaling) and hands it over when it dies."""

from __future__ import annotations

from sqlalchemy import Connection

from eventix_operator.db import statements


def try_lock(conn: Connection, key: int) -> bool:
    """Take a session advisory lock without waiting; held until released or the
    connection ends (so a replica that dies lets go of it)."""
    held: bool = conn.execute(statements.TRY_ADVISORY_LOCK, {"key": key}).scalar_one()
    conn.commit()  # the lock is the session's; end the transaction the query began
    return held


def unlock(conn: Connection, key: int) -> None:
    conn.execute(statements.ADVISORY_UNLOCK, {"key": key})
    conn.commit()


def ping(conn: Connection) -> None:
    """Check that the lock's connection (and so the lock) is still there."""
    conn.execute(statements.PING)
    conn.commit()
