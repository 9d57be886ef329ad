from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Processes, make_processes


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Processes]:
    procs = make_processes(database_url, tmp_path)
    yield procs
    procs.stop_all()
