"""`eventix local`: the whole queue on one machine, no cluster and no database to set up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import platformdirs
import typer
import yaml

from eventix_operator.db.engine import make_engine
from eventix_operator.db.migrate import upgrade
from eventix_operator.db.tasks import NewTask, insert_tasks_once
from eventix_operator.embedded import EmbeddedPostgres
from eventix_operator.registry import load_task_modules
from eventix_operator.resources import task_from_spec
from eventix_operator.settings import Settings
from eventix_operator.worker.run import run_worker, worker_config


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("eventix-operator")) / "pgdata"


def load_manifests(directory: Path) -> list[NewTask]:
    """EventixTask documents from every YAML file in ``directory``, keyed like
    resources so that running `local` twice does not enqueue them twice."""
    tasks: list[NewTask] = []
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise ValueError(f"no YAML manifests in {directory}")
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "EventixTask":
                continue
            meta = doc.get("metadata") or {}
            namespace, name = meta.get("namespace", "default"), meta.get("name")
            if not name:
                raise ValueError(f"{path}: an EventixTask without metadata.name")
            try:
                tasks.append(
                    task_from_spec(
                        doc.get("spec") or {},
                        source="k8s",
                        k8s_namespace=namespace,
                        k8s_name=name,
                        k8s_uid=f"local:{namespace}/{name}",
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: EventixTask {name}: {exc}") from exc
    return tasks


def run_local(
    settings: Settings,
    *,
    modules: list[str],
    queues: list[str],
    data_dir: Path | None,
    manifests: Path | None = None,
) -> None:
    registry = load_task_modules(modules)
    server: EmbeddedPostgres | None = None
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
    else:
        server = EmbeddedPostgres(data_dir or default_data_dir())
        typer.echo(f"starting embedded PostgreSQL in {server.data_dir} …", err=True)
        url = server.start()
        typer.echo(f"embedded PostgreSQL ready: {server.libpq_url}", err=True)
    try:
        engine = make_engine(settings, url)
        before, after = upgrade(engine)
        if before != after:
            typer.echo(f"schema upgraded to {after}", err=True)
        if manifests is not None:
            tasks = load_manifests(manifests)
            with engine.begin() as conn:
                new = insert_tasks_once(conn, tasks, payload_limit=settings.max_payload_bytes)
            typer.echo(
                f"{len(new)} new task(s) from {manifests} ({len(tasks) - len(new)} already known)",
                err=True,
            )
        engine.dispose()
        typer.echo(f"worker running tasks {registry.names()} — Ctrl-C to stop", err=True)
        asyncio.run(run_worker(settings, registry, worker_config(settings, queues=queues), url))
    finally:
        if server is not None:
            server.stop()
