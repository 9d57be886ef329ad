from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pgbouncer import PgBouncer, pooler_trouble
from tests.support.processes import Processes, make_processes


@pytest.fixture
def connection(request: pytest.FixtureRequest) -> str:
    """How the processes reach the test's database: ``direct`` unless a test
    parametrizes this (``pgbouncer``: through PgBouncer in transaction mode, with no
    listen URL, so workers poll)."""
    return str(getattr(request, "param", "direct"))


@pytest.fixture
def processes(
    database_url: str, connection: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Processes]:
    """Real eventix processes on the test's database. Through PgBouncer, no pooler
    error may show in their logs or in PgBouncer's."""
    bouncer: PgBouncer | None = None
    url = database_url
    if connection == "pgbouncer":
        bouncer = request.getfixturevalue("pgbouncer")
        url = request.getfixturevalue("pooled_database_url")
    mark = bouncer.log_mark() if bouncer else 0
    procs = make_processes(url, tmp_path)
    yield procs
    procs.stop_all()
    if bouncer is not None:
        assert pooler_trouble(*procs.log_dir.glob("*.log")) == []
        assert bouncer.pooler_errors(mark) == []
