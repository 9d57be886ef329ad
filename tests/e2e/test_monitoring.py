"""The chart's dashboard and alert rules name only metrics that a live operator and worker
really export: both processes run against their own database, do some work (a task that
succeeds, one that fails, a schedule whose runs pile up under Forbid), and are scraped; every
metric name in every PromQL expression of the rendered dashboard and PrometheusRule must be
among the names those scrapes show."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from eventix_operator import enqueue_many
from eventix_operator.resources import schedule_definition
from eventix_operator.schedules.scheduler import apply_schedule
from tests.e2e.conftest import Cluster
from tests.helm.conftest import EVERYTHING, Tools, by_kind, make_tools, one
from tests.helm.test_monitoring import dashboard_queries, dashboard_variable_metrics
from tests.support.gitops import GitOpsTool
from tests.support.postgres import PostgresServer
from tests.support.processes import free_port

pytestmark = pytest.mark.kube

#: The series names a family of each type shows in the text format (prometheus_client 0.2x
#: also shows ``_created`` for counters and histograms).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def exposed(port: int) -> tuple[set[str], set[str]]:
    """(names of the samples a scrape shows, names its families declare in # TYPE lines)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    samples: set[str] = set()
    declared: set[str] = set()
    for family in text_string_to_metric_families(body):
        declared.update(family.name + suffix for suffix in SUFFIXES[family.type])
        samples.update(sample.name for sample in family.samples)
    return samples, declared


@pytest.fixture
def own_database(pg_server: PostgresServer) -> Iterator[str]:
    """A database of this test's own, so that its operator leads there."""
    name = f"monitoring_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE eventix_template")
    yield pg_server.url_for(name)
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def chart_tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return make_tools(tmp_path_factory.mktemp("helm-home"))


def test_dashboard_and_rules_name_only_metrics_the_processes_export(
    cluster: Cluster, own_database: str, chart_tools: Tools, gitops_tool: GitOpsTool
) -> None:
    # What the chart ships, and the metric names its PromQL reads.
    objects = chart_tools.template(EVERYTHING)
    rules = gitops_tool.rules(yaml.safe_dump(one(objects, "PrometheusRule")["spec"]))
    assert rules["errors"] == []
    [config] = [o for o in by_kind(objects, "ConfigMap") if "eventix.json" in o.get("data", {})]
    dashboard = json.loads(config["data"]["eventix.json"])
    parsed = gitops_tool.promql(dashboard_queries(dashboard))
    assert [p for p in parsed if p.get("error")] == []
    used = {name for rule in rules["rules"] for name in rule["metrics"]}
    used |= {name for p in parsed for name in p["metrics"]}
    used |= dashboard_variable_metrics(dashboard)

    # A worker and an operator with work to show.
    engine = create_engine(own_database)
    try:
        with engine.begin() as conn:
            enqueue_many(
                [{"task": "tests.record", "args": [1], "queue": "mon"},
                 {"task": "tests.fail", "args": ["no"], "queue": "mon", "max_retries": 0}],
                connection=conn,
            )  # fmt: skip
            # Every second, runs that no worker takes: under Forbid the next ticks are missed.
            spec = {
                "schedule": "* * * * * *", "concurrencyPolicy": "Forbid",
                "template": {"task": "tests.record", "queue": "mon-unserved"},
            }  # fmt: skip
            definition = schedule_definition(
                spec, uid=str(uuid.uuid4()), namespace=cluster.namespace, name="every-second",
                generation=1, created_at=datetime.now(UTC),
            )  # fmt: skip
            apply_schedule(conn, definition, datetime.now(UTC))
        worker_port, operator_port = free_port(), free_port()
        worker = cluster.procs.worker(
            "--queues", "mon", DATABASE_URL=own_database, EVENTIX_METRICS_PORT=str(worker_port)
        )

        def finished() -> bool:
            query = "SELECT count(*) FROM eventix_task WHERE namespace = 'mon'"
            with engine.connect() as conn:
                n = conn.execute(text(query + " AND status IN ('done', 'error')")).scalar_one()
            return int(n) == 2

        cluster.wait("2 tasks finished", finished, 30)
        env = {"DATABASE_URL": own_database, "EVENTIX_METRICS_PORT": str(operator_port)}
        operator = cluster.operator("--namespace", cluster.namespace, **env)

        def operator_shows_all() -> tuple[set[str], set[str]] | None:
            try:
                samples, declared = exposed(operator_port)
            except OSError:
                return None
            wanted = {
                "eventix_operator_leader", "eventix_queue_due_tasks",
                "eventix_schedule_lateness_seconds_bucket", "eventix_schedule_missed_runs_total",
            }  # fmt: skip
            return (samples, declared) if wanted <= samples else None

        operator_samples, operator_declared = cluster.wait(
            "operator metrics", operator_shows_all, 60
        )
        worker_samples, worker_declared = exposed(worker_port)
        cluster.procs.stop(operator)
        cluster.procs.stop(worker)
    finally:
        engine.dispose()

    shown = operator_samples | operator_declared | worker_samples | worker_declared
    assert used, "no metric names found in the dashboard and rules"
    assert used <= shown, f"named but not exported: {sorted(used - shown)}"
    # Most are more than declared: the work above gave them samples.
    sampled = operator_samples | worker_samples
    assert len(used & sampled) >= len(used) - 4, sorted(used - sampled)
