"""River's side of the peer comparison: a small Go program on the River library.

bench/river/main.go imitates ``river bench -n N``'s setup: River's own migrations, jobs
inserted with ``InsertMany`` in batches of 5,000, then one client with one queue,
``MaxWorkers`` 2,000, ``FetchCooldown`` 2 ms and ``FetchPollInterval`` 20 ms and a no-op
worker, running until N jobs are worked. River's version is the one pinned in
bench/river/go.mod. bench/river/build.sh builds the program once per machine from Go
modules (the Go module proxy) into the tools cache, outside the repository::

    bench/river/build.sh --print-path
    BENCH_PEER_DSN=postgresql://... river-bench migrate
    BENCH_PEER_DSN=postgresql://... river-bench insert -n 20000
    BENCH_PEER_DSN=postgresql://... river-bench work -n 20000
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent / "river"
BUILD_SCRIPT = HERE / "build.sh"
DSN_VARIABLE = "BENCH_PEER_DSN"
#: build.sh's exit status when there is no Go toolchain.
NO_GO = 3
INSERT_BATCH = 5_000
MAX_WORKERS = 2_000


def river_version() -> str:
    """The River release pinned in bench/river/go.mod."""
    text = (HERE / "go.mod").read_text()
    found = re.search(r"^\s*(?:require\s+)?github\.com/riverqueue/river\s+(v\S+)", text, re.M)
    return found.group(1) if found else "?"


def build() -> Path | None:
    """The river-bench binary, built first if this machine has none for these sources
    (build.sh prints its own progress on stderr); None when Go is missing."""
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--print-path"], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode == NO_GO:
        return None
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed (exit {result.returncode}); see above")
    return Path(result.stdout.strip())


def result_line(output: str, key: str) -> dict[str, float]:
    """The numbers of river-bench's last ``RIVER <key>=... name=value ...`` line."""
    lines = [line for line in output.splitlines() if line.startswith(f"RIVER {key}=")]
    if not lines:
        raise RuntimeError(f"no 'RIVER {key}=' line in river-bench's output:\n{output[-3000:]}")
    return {name: float(value) for name, value in re.findall(r"(\w+)=(\S+)", lines[-1])}


def run(binary: Path, dsn: str, *args: str) -> str:
    """Run one river-bench mode to its end; its stdout."""
    result = subprocess.run(
        [str(binary), *args, "-database-url", dsn], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"river-bench {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def install_and_insert(binary: Path, dsn: str, count: int) -> dict[str, float]:
    """River's migrations on ``dsn``, then ``count`` no-op jobs; returns the insert's
    ``inserted``, ``seconds`` and ``rate`` as river-bench measured them."""
    run(binary, dsn, "migrate")
    return result_line(run(binary, dsn, "insert", "-n", str(count)), "inserted")


def work_command(binary: Path, count: int, timeout: float) -> list[str]:
    """The drain: one River client until ``count`` jobs are worked (the database from
    ``BENCH_PEER_DSN``). It ends with a ``RIVER drained=...`` line on stdout."""
    return [str(binary), "work", "-n", str(count), "-timeout", f"{timeout:.0f}s"]
