"""The one-shot read path (db/oneshot.py): the data layer's statements, compiled
once and cached on disk, run on plain psycopg; the same answers as the
SQLAlchemy path, and no SQLAlchemy import once the cache holds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from eventix_operator.db import admin, oneshot
from eventix_operator.db.enqueue import NewTask, insert_tasks

PROBE = """
import json, sys
from eventix_operator.db import oneshot
with oneshot.connect(sys.argv[1], connect_timeout=5) as conn:
    found = oneshot.list_tasks(conn, equals={"status": "scheduled"}, limit=5)
print(json.dumps({"modules": sorted(sys.modules), "found": len(found)}))
"""


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache directory of this test's own, and no texts kept from another test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(oneshot, "_loaded", None)
    return tmp_path / "cache" / "eventix-operator" / "statements.json"


def probe(url: str) -> tuple[set[str], int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, url],
        capture_output=True, text=True, check=True, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    return {m.split(".")[0] for m in answer["modules"]}, int(answer["found"])


def seed(engine: Engine) -> list[str]:
    tasks = [
        NewTask("mail.send", [1], queue="mail"),
        NewTask("mail.send", [2], {"to": "a@example.org"}, queue="mail"),
        NewTask("report.build", queue="default", priority=-3),
    ]
    with engine.begin() as conn:
        return insert_tasks(conn, tasks, payload_limit=1_000_000)


def test_a_miss_compiles_and_a_hit_imports_no_sqlalchemy(
    database_url: str, engine: Engine, cache_home: Path
) -> None:
    seed(engine)
    assert not cache_home.exists()
    loaded, found = probe(database_url)
    assert "sqlalchemy" in loaded  # the first run compiles the statements
    assert found == 3
    stored = json.loads(cache_home.read_text())
    assert stored["key"] == oneshot.cache_key()
    assert set(stored["statements"]) >= {"GET_TASK", "QUEUE_STATS", "tasks_page[status]"}

    loaded, found = probe(database_url)
    assert "sqlalchemy" not in loaded
    assert found == 3


@pytest.mark.parametrize("stale", ["key", "garbage", "shape"])
def test_a_stale_or_broken_cache_is_rebuilt(
    database_url: str, engine: Engine, cache_home: Path, stale: str
) -> None:
    seed(engine)
    cache_home.parent.mkdir(parents=True)
    broken = {"key": "an older eventix", "statements": {"GET_TASK": "SELECT 1"}}
    cache_home.write_text(
        {"key": json.dumps(broken), "garbage": "{not json", "shape": "[1, 2]"}[stale]
    )
    loaded, found = probe(database_url)
    assert "sqlalchemy" in loaded
    assert found == 3
    assert json.loads(cache_home.read_text())["key"] == oneshot.cache_key()
    assert "sqlalchemy" not in probe(database_url)[0]


def test_an_unwritable_cache_still_answers(
    database_url: str, engine: Engine, cache_home: Path
) -> None:
    seed(engine)
    cache_home.parent.parent.mkdir(parents=True)
    cache_home.parent.write_text("a file where the cache directory would be")
    with oneshot.connect(database_url, connect_timeout=5) as conn:
        assert len(oneshot.list_tasks(conn, equals={}, limit=10)) == 3


def test_the_same_answers_as_the_sqlalchemy_path(
    database_url: str, engine: Engine, cache_home: Path
) -> None:
    uids = seed(engine)
    with engine.connect() as sa, oneshot.connect(database_url, connect_timeout=5) as pg:
        for equals in ({}, {"status": "scheduled"}, {"namespace": "mail"},
                       {"namespace": "mail", "status": "done"}):  # fmt: skip
            for limit in (1, 100):
                expected = admin.list_tasks(
                    sa, equals=equals, order=[("created_time", True)], limit=limit
                )
                assert oneshot.list_tasks(pg, equals=equals, limit=limit) == expected
        for uid in [*uids, "00000000-0000-0000-0000-000000000000", "not a uid"]:
            assert oneshot.get_task(pg, uid) == admin.get_task(sa, uid)
        # the age of the oldest due task is read from the clock of each query
        same = [(s.queue, s.status, s.count, s.due, s.oldest_due_seconds is None)
                for s in admin.queue_stats(sa)]  # fmt: skip
        assert [(s.queue, s.status, s.count, s.due, s.oldest_due_seconds is None)
                for s in oneshot.queue_stats(pg)] == same  # fmt: skip
        assert oneshot.get_task(pg, uids[1]) is not None
        with pytest.raises(KeyError):
            oneshot.list_tasks(pg, equals={"worker_id": "x"}, limit=1)


def test_an_enqueue_merges_by_unique_key_as_the_sqlalchemy_path(
    database_url: str, engine: Engine, cache_home: Path
) -> None:
    with engine.begin() as sa:
        first = insert_tasks(
            sa, [NewTask("mail.send", [1], queue="mail", unique_key="k", priority=5)],
            payload_limit=1_000_000,
        )[0]  # fmt: skip
    with oneshot.connect(database_url, connect_timeout=5) as pg:
        again = NewTask("mail.send", [2], queue="mail", unique_key="k", priority=1)
        other = NewTask("mail.send", [3], queue="mail", delay=60)
        same = NewTask("mail.send", [4], queue="mail", unique_key="k", priority=3)
        uids = oneshot.insert_tasks(pg, [again, other, same], payload_limit=1_000_000)
        assert uids[0] == uids[2] == first
        assert uids[1] == other.uid
        merged = oneshot.get_task(pg, first)
        with pytest.raises(ValueError, match="limit"):
            oneshot.insert_tasks(pg, [NewTask("big", ["x" * 100])], payload_limit=50)
    assert merged is not None
    assert (merged.args, merged.priority, merged.status) == ([4], 1, "scheduled")
    with engine.connect() as sa:
        assert admin.get_task(sa, uids[1]) == oneshot_get(database_url, uids[1])
        assert len(admin.list_tasks(sa, limit=10)) == 2


def oneshot_get(url: str, uid: str) -> object:
    with oneshot.connect(url, connect_timeout=5) as pg:
        return oneshot.get_task(pg, uid)


def test_the_key_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit in a checkout (same version) or an upgrade changes the key; without the
    sources (bytecode only) there is no key and nothing is cached."""
    import shutil

    for name in oneshot._SOURCES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(oneshot.__file__).parent.parent / name, tmp_path / name)
    monkeypatch.setattr(oneshot, "_PACKAGE", tmp_path)
    before = oneshot.cache_key()
    assert before == oneshot.cache_key()
    os.utime(tmp_path / "db" / "statements.py", ns=(1, 1))
    assert oneshot.cache_key() not in ("", before)
    (tmp_path / "retry.py").unlink()
    assert oneshot.cache_key() == ""


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s%40cret@db.example:6432/tasks?sslmode=require",
        "postgres://app@h1:5432,h2:5433/tasks?target_session_attrs=read-write",
        "postgresql://app@[::1]:5432,[::2]/tasks",
        "postgresql://app@/tasks?host=/var/run/postgresql",
        "postgresql+psycopg://app:pw@db/tasks?application_name=cli",
    ],
)
def test_libpq_reads_a_url_as_the_engine_does(url: str) -> None:
    """One-shot connections hand libpq the URL; engines hand psycopg SQLAlchemy's
    reading of it: both reach the same server as the same user."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from eventix_operator.db.engine import connect_kwargs
    from eventix_operator.settings import Settings, libpq_url

    settings = Settings.model_validate({"DATABASE_URL": url})
    engine_side = {k: str(v) for k, v in connect_kwargs(settings).items() if k != "connect_timeout"}
    ours = conninfo_to_dict(libpq_url(settings.require_database_url()))
    assert ours == conninfo_to_dict(make_conninfo("", **engine_side))
