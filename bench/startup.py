"""Start-up time and memory of the `eventix` command line, per command.

Run from the repository root::

    python bench/startup.py [--runs N]

Each command runs N times (as a person runs it: the `eventix` console script of
this environment, against an embedded PostgreSQL with the schema and a few
tasks); the table gives the minimum and median wall time, the same less a bare
``python -c pass`` start of the same interpreter (what the command itself
costs), and the peak resident memory. The minimum is the figure to compare on a
shared machine: noise only ever adds. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eventix_operator.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one run; a
    failed run stops the bench."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()}")
    if proc.stderr:
        proc.stderr.close()
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    args = parser.parse_args()

    eventix = Path(sys.prefix) / "bin" / "eventix"
    cli = [str(eventix)] if eventix.exists() else [sys.executable, "-m", "eventix_operator"]
    scratch = scratch_directory("eventix-bench-startup-")
    server = EmbeddedPostgres(scratch / "data")
    print(f"starting PostgreSQL in {server.data_dir}", flush=True)
    server.start()
    env = {**os.environ, "DATABASE_URL": server.libpq_url, "EVENTIX_LOG_LEVEL": "WARNING"}
    try:
        subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
        uid = subprocess.run(
            [*cli, "enqueue", "bench.noop", "--args", "[1]"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        commands: list[tuple[str, list[str]]] = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("eventix --help", [*cli, "--help"]),
            ("eventix config", [*cli, "config"]),
            ("eventix enqueue", [*cli, "enqueue", "bench.noop", "--args", "[2]"]),
            ("eventix tasks list", [*cli, "tasks", "list", "--limit", "20"]),
            ("eventix tasks show", [*cli, "tasks", "show", uid]),
            ("eventix queue stats", [*cli, "queue", "stats"]),
            ("eventix schedule preview", [*cli, "schedule", "preview", "0 2 * * *",
                                          "--tz", "Europe/Berlin", "--count", "5"]),
        ]  # fmt: skip
        rows: list[tuple[str, float, float, float, int]] = []
        for name, argv in commands:
            timed(argv, env)  # warm the file cache
            runs = [timed(argv, env) for _ in range(args.runs)]
            wall = [w for w, _, _ in runs]
            cpu = min(c for _, c, _ in runs)
            rss = max(r for _, _, r in runs)
            rows.append((name, min(wall), statistics.median(wall), cpu, rss))
            print(f"  {name}: min {min(wall) * 1000:.0f} ms", flush=True)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    base_min, base_cpu = rows[0][1], rows[0][3]
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{args.runs} runs per command, load average {load}, {cli[0]}\n")
    print(
        "| command | wall min | wall median | min, less python | CPU min, less python | peak RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, low, mid, cpu, rss in rows:
        print(
            f"| `{name}` | {low * 1000:.0f} ms | {mid * 1000:.0f} ms | "
            f"{(low - base_min) * 1000:+.0f} ms | {(cpu - base_cpu) * 1000:+.0f} ms | "
            f"{rss / 1024:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
