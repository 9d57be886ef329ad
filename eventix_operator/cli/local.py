"""`eventix local`: the whole queue on one machine, no cluster and no database to set up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import typer
import yaml
from sqlalchemy import Engine

from eventix_operator.db.engine import make_engine
from eventix_operator.db.enqueue import NewTask, insert_tasks_once
from eventix_operator.db.migrate import upgrade
from eventix_operator.db.queues import QueueSettings, set_queue
from eventix_operator.db.schedules import ScheduleDefinition
from eventix_operator.embedded import EmbeddedPostgres, default_data_dir, earlier_root_data_dir
from eventix_operator.registry import Registry, load_task_modules
from eventix_operator.resources import (
    queue_name,
    queue_settings,
    schedule_definition,
    task_from_spec,
)
from eventix_operator.schedules.loop import SchedulerLoop
from eventix_operator.schedules.scheduler import apply_schedule
from eventix_operator.settings import Settings
from eventix_operator.worker.run import run_worker, worker_config


@dataclass(frozen=True)
class QueueManifest:
    """An EventixQueue document: the queue it configures, its settings, and who
    configures it (namespace, name, ``local:`` key; its generation)."""

    queue: str
    settings: QueueSettings
    k8s: tuple[str, str, str]
    generation: int


@dataclass
class Manifests:
    tasks: list[NewTask] = field(default_factory=list)
    schedules: list[ScheduleDefinition] = field(default_factory=list)
    queues: list[QueueManifest] = field(default_factory=list)


def load_manifests(directory: Path, now: datetime) -> Manifests:
    """EventixTask, EventixSchedule and EventixQueue documents from the YAML files of
    ``directory``, keyed as ``local:<namespace>/<name>`` so that running `local` again
    finds them. An EventixQueue maps as the operator maps it (a queue left out is the
    resource's name; every setting the spec leaves out is cleared).

    Tenancy is ``shared`` here (docs/tenancy.md): one person's files on one machine,
    no cluster whose namespaces would separate teams; a resource without a queue gets
    ``default``, whatever its namespace."""
    found = Manifests()
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise ValueError(f"no YAML manifests in {directory}")
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            kind = (doc or {}).get("kind")
            if kind not in ("EventixTask", "EventixSchedule", "EventixQueue"):
                continue
            meta = doc.get("metadata") or {}
            namespace, name = meta.get("namespace", "default"), meta.get("name")
            if not name:
                raise ValueError(f"{path}: a {kind} without metadata.name")
            key = f"local:{namespace}/{name}"
            spec = doc.get("spec") or {}
            try:
                if kind == "EventixQueue":
                    found.queues.append(
                        QueueManifest(
                            queue_name(name, spec),
                            queue_settings(spec),
                            (namespace, name, key),
                            int(meta.get("generation") or 1),
                        )
                    )
                elif kind == "EventixTask":
                    found.tasks.append(
                        task_from_spec(
                            spec, source="k8s", k8s_namespace=namespace, k8s_name=name, k8s_uid=key
                        )
                    )
                else:
                    found.schedules.append(
                        schedule_definition(
                            spec,
                            uid=key,
                            namespace=namespace,
                            name=name,
                            generation=1,
                            created_at=now,
                        )
                    )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: {kind} {name}: {exc}") from exc
    return found


def apply_manifests(engine: Engine, directory: Path, payload_limit: int) -> None:
    found = load_manifests(directory, datetime.now(UTC))
    with engine.begin() as conn:
        for q in found.queues:
            paused = set_queue(conn, q.queue, q.settings, k8s=q.k8s, generation=q.generation)
            if paused is None:
                raise ValueError(
                    f"EventixQueue {q.k8s[1]}: queue {q.queue!r} is configured by another "
                    "EventixQueue; a queue has one"
                )
            typer.echo(f"queue {q.queue}: {'paused' if paused else 'active'}", err=True)
        new = insert_tasks_once(conn, found.tasks, payload_limit=payload_limit)
        for definition in found.schedules:
            record, error = apply_schedule(conn, definition, datetime.now(UTC))
            if error:
                raise ValueError(f"EventixSchedule {definition.k8s_name}: {error}")
            typer.echo(
                f"schedule {record.k8s_name}: {record.expression!r} in {record.time_zone}, "
                f"next run {record.next_tick.isoformat() if record.next_tick else 'never'}",
                err=True,
            )
    typer.echo(
        f"{len(new)} new task(s) from {directory} ({len(found.tasks) - len(new)} already known), "
        f"{len(found.schedules)} schedule(s), {len(found.queues)} queue(s)",
        err=True,
    )


async def run_worker_and_scheduler(
    settings: Settings, registry: Registry, queues: list[str], url: str
) -> None:
    engine = make_engine(settings, url)
    scheduler = SchedulerLoop(engine, payload_limit=settings.max_payload_bytes)
    scheduling = asyncio.create_task(scheduler.run())
    try:
        config = worker_config(settings, queues=queues, announce_tasks=True)  # a person watches
        await run_worker(settings, registry, config, url)
    finally:
        scheduler.stop()
        await scheduling
        engine.dispose()


def run_local(
    settings: Settings,
    *,
    modules: list[str],
    queues: list[str],
    data_dir: Path | None,
    port: int | None = None,
    manifests: Path | None = None,
) -> None:
    registry = load_task_modules(modules)
    server: EmbeddedPostgres | None = None
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
    else:
        if data_dir is None and (earlier := earlier_root_data_dir()) is not None:
            typer.echo(
                f"note: eventix now keeps root's embedded database in {default_data_dir()}; "
                f"the earlier one stays in {earlier} (to keep using it, stop eventix and "
                f"`mv {earlier} {default_data_dir()}`)",
                err=True,
            )
        server = EmbeddedPostgres(data_dir or default_data_dir(), port=port)
        typer.echo(f"starting embedded PostgreSQL in {server.data_dir} …", err=True)
        url = server.start()
        typer.echo(f"embedded PostgreSQL ready: {server.libpq_url}", err=True)
    try:
        engine = make_engine(settings, url)
        before, after = upgrade(engine)
        if before != after:
            typer.echo(f"schema upgraded to {after}", err=True)
        if manifests is not None:
            apply_manifests(engine, manifests, settings.max_payload_bytes)
        engine.dispose()
        typer.echo(f"worker running tasks {registry.names()} — Ctrl-C to stop", err=True)
        asyncio.run(run_worker_and_scheduler(settings, registry, queues, url))
    finally:
        if server is not None:
            server.stop()
