"""Operator benchmark: apply-to-row latency, apply-to-Succeeded for 1,000 tasks,
schedule firing lateness, operator peak RSS. Prints figures; not a test.

Everything is real and local: an embedded PostgreSQL, a kube-apiserver + etcd
built from Go modules (tools/kube/build.sh), the operator and a worker as
processes. Run from the repository root:

    python bench/operator.py [--tasks 1000] [--schedule-seconds 60]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventix_operator.db.migrate import upgrade  # noqa: E402
from eventix_operator.embedded import EmbeddedPostgres, free_port, scratch_directory  # noqa: E402
from tools.kube.controlplane import kube_api_session  # noqa: E402

GROUP, VERSION = "eventix.io", "v1alpha1"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--schedule-seconds", type=int, default=60)
    args = parser.parse_args()

    work = scratch_directory("eventix-bench-operator-")
    pg = EmbeddedPostgres(work / "pg")
    url = pg.start()
    engine = create_engine(url)
    upgrade(engine)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with kube_api_session() as api:
            env = {**os.environ, "DATABASE_URL": url, "KUBECONFIG": str(api.kubeconfig),
                   "EVENTIX_LOG_LEVEL": "WARNING"}  # fmt: skip
            log = (work / "operator.log").open("wb")
            operator = subprocess.Popen(
                [sys.executable, "-m", "eventix_operator", "operator",
                 "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            worker = subprocess.Popen(
                [sys.executable, "-m", "eventix_operator", "worker", "--tasks", "bench.noop_tasks"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            procs += [operator, worker]
            namespace = api.create_namespace("bench")
            custom = k8s.CustomObjectsApi(api.api_client)
            time.sleep(5)  # let the operator start and list

            print("applying 50 EventixTasks one at a time …", flush=True)
            single: list[float] = []
            for i in range(50):
                name = f"single-{i:03d}"
                body: dict[str, Any] = {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "EventixTask",
                    "metadata": {"name": name}, "spec": {"task": "bench.noop"},
                }  # fmt: skip
                t0 = time.time()
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "eventixtasks", body
                )
                while True:
                    with engine.connect() as conn:
                        created = conn.execute(text(
                            "SELECT extract(epoch FROM created_at) FROM eventix_task "
                            "WHERE k8s_namespace = :ns AND k8s_name = :n"),
                            {"ns": namespace, "n": name}).scalar()  # fmt: skip
                    if created is not None:
                        single.append(float(created) - t0)
                        break
                    time.sleep(0.005)
                time.sleep(0.1)

            print(f"applying {args.tasks} EventixTasks at once …", flush=True)
            applied: dict[str, float] = {}

            def create(i: int) -> None:
                name = f"noop-{i:05d}"
                doc: dict[str, Any] = {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "EventixTask",
                    "metadata": {"name": name}, "spec": {"task": "bench.noop"},
                }  # fmt: skip
                applied[name] = time.time()
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "eventixtasks", doc
                )

            start = time.time()
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(args.tasks)))
            api_done = time.time()
            all_rows = all_succeeded = None
            while time.time() - start < 300:
                with engine.connect() as conn:
                    rows = conn.execute(text(
                        "SELECT k8s_name, extract(epoch FROM created_at) FROM eventix_task "
                        "WHERE k8s_namespace = :ns AND k8s_name LIKE 'noop-%'"),
                        {"ns": namespace}).all()  # fmt: skip
                if all_rows is None and len(rows) == args.tasks:
                    all_rows = time.time()
                    row_latency = [float(r[1]) - applied[r[0]] for r in rows]
                items = custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "eventixtasks"
                )["items"]
                done = sum(
                    1 for o in items
                    if o["metadata"]["name"].startswith("noop-")
                    and (o.get("status") or {}).get("phase") == "Succeeded"
                )  # fmt: skip
                if done == args.tasks:
                    all_succeeded = time.time()
                    break
                time.sleep(0.5)

            print(f"scheduling */1 s for {args.schedule_seconds} s …", flush=True)
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "eventixschedules", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "EventixSchedule",
                "metadata": {"name": "every-second"},
                "spec": {"schedule": "* * * * * *", "successfulRunsHistoryLimit": 100000,
                         "template": {"task": "bench.noop"}},
            })  # fmt: skip
            time.sleep(args.schedule_seconds)
            with engine.connect() as conn:
                lateness = [float(r[0]) for r in conn.execute(text(
                    "SELECT extract(epoch FROM created_at - schedule_time) FROM eventix_task "
                    "WHERE schedule_uid IS NOT NULL"))]  # fmt: skip
            rss = peak_rss_mib(operator.pid)

        print()
        print(f"machine: {os.cpu_count()} CPUs; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
              f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
        print(f"{'one at a time: apply-to-row p50 / p99':44} {pct(single, .5) * 1000:8.0f} ms "
              f"/ {pct(single, .99) * 1000:.0f} ms")  # fmt: skip
        print(f"{args.tasks} at once:")
        print(f"{'apply (API create calls, 16 threads)':44} {api_done - start:8.2f} s")
        if all_rows is not None:
            print(f"{'apply-to-row p50 / p99':44} {pct(row_latency, .5) * 1000:8.0f} ms "
                  f"/ {pct(row_latency, .99) * 1000:.0f} ms")  # fmt: skip
            print(f"{'all rows present after':44} {all_rows - start:8.2f} s")
        if all_succeeded is not None:
            print(f"{'all statuses Succeeded after':44} {all_succeeded - start:8.2f} s")
        else:
            print("not all statuses reached Succeeded within 300 s")
        print(f"{'schedule ticks fired':44} {len(lateness):8d}")
        print(f"{'firing lateness p50 / p99 / max':44} {pct(lateness, .5) * 1000:8.0f} ms / "
              f"{pct(lateness, .99) * 1000:.0f} ms / {max(lateness) * 1000:.0f} ms")  # fmt: skip
        print(f"{'operator peak RSS':44} {rss:8.1f} MiB")
        print(f"{'mean lateness':44} {statistics.mean(lateness) * 1000:8.0f} ms")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        engine.dispose()
        pg.destroy()


if __name__ == "__main__":
    main()
