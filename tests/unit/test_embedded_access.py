"""Who may reach what, as the kernel decides it: the rule by which the embedded
server, run as its own account when we are root, is given a copy of the
binaries or refused a data directory it could not enter."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventix_operator.embedded import Account, _one_line, blocking_directory

NOBODY = Account("nobody-like", uid=123_456, gids=frozenset({123_456}))


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory every account can enter (pytest's own base directory is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="eventix-access-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_private_directory_blocks_everyone_else(tmp_path: Path) -> None:
    private = tmp_path / "clone"
    (private / "site" / "bin").mkdir(parents=True)
    private.chmod(0o700)
    assert blocking_directory(private / "site" / "bin" / "postgres", NOBODY) == private


def test_search_permission_for_others_is_enough(tmp_path: Path) -> None:
    walk = tmp_path / "home"
    (walk / "data").mkdir(parents=True)
    walk.chmod(0o711)  # no listing, but a way through
    assert blocking_directory(walk / "data", NOBODY) is None


def test_the_group_class_applies_to_members(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o710)
    member = Account("member", uid=123_457, gids=frozenset({os.stat(shared).st_gid}))
    assert blocking_directory(shared / "x", member) is None
    assert blocking_directory(shared / "x", NOBODY) == shared


def test_directories_still_to_create_do_not_block(tmp_path: Path) -> None:
    assert blocking_directory(tmp_path / "not" / "yet", NOBODY) is None


@pytest.mark.parametrize(
    ("output", "line"),
    [
        (
            "The files belonging to this database system will be owned by user\n"
            'initdb: error: could not create directory "/d/pg_wal": No space left on device\n'
            "initdb: removing data directory",
            'could not create directory "/d/pg_wal": No space left on device',
        ),
        (
            "2026-12-02 12:00:00 UTC [7] LOG:  starting PostgreSQL 18.4\n"
            "2026-12-02 12:00:00 UTC [7] FATAL:  database files are incompatible with server\n"
            "2026-12-02 12:00:00 UTC [7] DETAIL:  The data directory was initialized by 16",
            "database files are incompatible with server",
        ),
        ("", "no output"),
    ],
)
def test_a_tool_failure_becomes_its_telling_line(output: str, line: str) -> None:
    assert _one_line(output) == line
