"""What the task table's indexes cost the queue's hot path.

Run from the repository root::

    python bench/index_cost.py [--tasks N] [--rounds R]

One embedded PostgreSQL (as ``throughput.py``); for each variant of the dashboard's
listing indexes, in rounds so that each variant sees about the same load, a fresh
database gets N tasks by ``enqueue_many`` (timed) and then pgbench runs the worker's
own claim and write-back statements over them with one and two clients
(``throughput.py``'s yardstick). A task's row changes state three times on the hot
path, each a non-HOT update, so every index that holds the row takes an entry each
time: the figures say what each listing index costs. It prints a table; nothing
asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import psycopg
from sqlalchemy import create_engine

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import throughput  # noqa: E402
from eventix_operator.db.migrate import upgrade  # noqa: E402
from eventix_operator.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402

LISTING = {
    "ix_eventix_task_listing": "namespace, status, source, created_at, uid",
    "ix_eventix_task_task_listing": "task, status, source, created_at, uid",
}

#: Statements run on each fresh database before the measurement, per variant.
VARIANTS: dict[str, list[str]] = {
    "listing indexes of finished rows (0009, the schema)": [],
    "listing indexes of every row (0006-0008)": [
        s
        for name, columns in LISTING.items()
        for s in (f"DROP INDEX {name}", f"CREATE INDEX {name} ON eventix_task ({columns})")
    ],
    "no listing index": [f"DROP INDEX {name}" for name in LISTING],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    bench_options = throughput.parse_args(["--tasks", str(options.tasks), "--no-peers"])
    workdir = scratch_directory("eventix-index-cost-")
    embedded = EmbeddedPostgres(workdir / "pgdata")
    embedded.bin_dir = throughput.newest_bundled_bin_dir()
    throughput.say(f"starting PostgreSQL in {embedded.data_dir}")
    embedded.start()
    server = throughput.Server(embedded)
    fresh = server.fresh_database
    results: dict[str, list[list[str]]] = defaultdict(list)
    try:
        with server.admin() as conn:
            conn.execute(f"CREATE DATABASE {throughput.TEMPLATE}")
        engine = create_engine(server.sqlalchemy_url(throughput.TEMPLATE))
        upgrade(engine)
        engine.dispose()
        for round_ in range(options.rounds):
            for name, statements in VARIANTS.items():

                def prepared(label: str, *, template: str | None = throughput.TEMPLATE,
                             statements: list[str] = statements) -> str:  # fmt: skip
                    database = fresh(label, template=template)
                    with psycopg.connect(server.dsn(database), autocommit=True) as conn:
                        for statement in statements:
                            conn.execute(statement)
                    return database

                server.fresh_database = prepared  # type: ignore[method-assign]
                bench = throughput.Bench(server, bench_options, workdir)
                throughput.say(f"\nround {round_ + 1}: {name}")
                bench.bulk_enqueue()
                bench.pgbench(1, False)
                bench.pgbench(2, False)
                results[name].append([f.value for f in bench.report.figures])
        load = throughput.load_average()
    finally:
        embedded.stop()
    print(f"\nN = {options.tasks:,}; {os.cpu_count()} CPUs; load average at the end {load}")
    print("variant | bulk enqueue | pgbench, 1 client, 2 commits | 2 clients, 2 commits")
    for name, rounds in results.items():
        columns = [" / ".join(r[i] for r in rounds) for i in range(3)]
        print(f"{name} | " + " | ".join(columns))


if __name__ == "__main__":
    main()
