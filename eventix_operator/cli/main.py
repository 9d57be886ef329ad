"""`eventix`: the command line of eventix-operator.

User errors (bad JSON, unknown task uid, no database) print one line on stderr
and exit with status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

# Each command imports what it needs when it runs: `eventix --help` or `eventix
# tasks list` must not pay for kopf, the Kubernetes client, FastAPI or alembic
# (tests/unit/test_cli_imports.py checks which modules a command loads).
if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from eventix_operator.db.rows import TaskRecord
    from eventix_operator.settings import Settings

app = typer.Typer(
    name="eventix",
    help="Eventix tasks and schedules on PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: loading rich costs more than the help itself
)
tasks_app = typer.Typer(
    help="Inspect and manage tasks.", no_args_is_help=True, rich_markup_mode=None
)
queue_app = typer.Typer(
    help="Queue statistics and settings: pause, resume, limits, retention.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
schedule_app = typer.Typer(
    help="Preview and backfill schedules.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(tasks_app, name="tasks")
app.add_typer(queue_app, name="queue")
app.add_typer(schedule_app, name="schedule")

P = ParamSpec("P")
R = TypeVar("R")


class Output(StrEnum):
    table = "table"
    json = "json"


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix into one line and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as exc:
            message = user_error(exc)
            if message is None:
                raise
            fail(message)

    return wrapper


def user_error(exc: BaseException) -> str | None:
    """The line to show for an error the user can fix (passwords masked: libpq quotes
    a URL it cannot parse whole), or None for a bug."""
    from eventix_operator.masking import mask_secrets

    line = _user_error(exc)
    return None if line is None else mask_secrets(line)


def _user_error(exc: BaseException) -> str | None:
    if "sqlalchemy" in sys.modules or "psycopg" in sys.modules:  # loaded if it could have raised
        import psycopg
        from sqlalchemy.exc import SQLAlchemyError

        from eventix_operator.db.errors import database_unavailable, first_line

        if isinstance(exc, SQLAlchemyError | psycopg.Error):
            if database_unavailable(exc):
                return f"cannot reach the database: {first_line(exc).strip()}"
            return f"the database refused it: {first_line(exc).strip()}"
    if isinstance(exc, ValueError | TypeError | LookupError | RuntimeError | ModuleNotFoundError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return None


def settings(*, logs: bool = False) -> Settings:
    """The settings; ``logs`` for commands that log as they work (a process, not a query)."""
    from eventix_operator.settings import get_settings

    s = get_settings()
    if logs:
        from eventix_operator.logs import configure_logging

        configure_logging(s.log_level, s.log_format)
    return s


def engine() -> Engine:
    from eventix_operator.db.engine import make_engine

    return make_engine(settings())


def _timeout(s: Settings) -> dict[str, float]:
    """A one-shot connection's options (`enqueue`, `tasks list|show` and `queue stats`
    run their statements on plain psycopg, without importing SQLAlchemy: db/oneshot.py).
    Listings
    and counts tolerate replication lag: they read from ``EVENTIX_READ_DATABASE_URL``
    when it is set."""
    return {"connect_timeout": s.db_connect_timeout}


def parse_json(value: str | None, what: str, kind: type) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc}")
    if not isinstance(parsed, kind):
        fail(f"{what} must be a JSON {'array' if kind is list else 'object'}")
    return parsed


def parse_time(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        fail(f"{what} is not an ISO 8601 time: {value!r}")


def _import_path() -> None:
    """Task modules are usually the user's own code, next to where they run us."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


@app.command("config")
@user_errors
def config_cmd() -> None:
    """Print the effective settings (the database password masked)."""
    typer.echo(json.dumps(settings().masked(), indent=2, default=str))


@app.command()
@user_errors
def migrate() -> None:
    """Create or upgrade the database schema. Running it again changes nothing."""
    from eventix_operator.db.migrate import upgrade

    settings(logs=True)
    before, after = upgrade(engine())
    if before == after:
        typer.echo(f"schema is up to date (revision {after})")
    else:
        typer.echo(f"schema upgraded from {before or 'empty'} to {after}")


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
@user_errors
def worker(
    tasks: Annotated[str, typer.Option(help="Task modules to import, comma-separated.")],
    queues: Annotated[str, typer.Option(help="Queues to take tasks from.")] = "default",
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Tasks run at once [EVENTIX_WORKER_CONCURRENCY].")
    ] = None,
    burst: Annotated[bool, typer.Option(help="Exit 0 once no due task is left.")] = False,
) -> None:
    """Claim and run tasks until SIGTERM (then drain) or, with --burst, until done."""
    import asyncio

    from eventix_operator.registry import load_task_modules
    from eventix_operator.worker.run import run_worker, worker_config

    s = settings(logs=True)
    _import_path()
    registry = load_task_modules(_split(tasks))
    cfg = worker_config(s, queues=_split(queues), concurrency=concurrency, burst=burst)
    asyncio.run(run_worker(s, registry, cfg, s.require_database_url()))


@app.command()
@user_errors
def enqueue(
    task: Annotated[str, typer.Argument(help="Registered task name.")],
    args: Annotated[str | None, typer.Option(help="Positional arguments as a JSON array.")] = None,
    kwargs: Annotated[str | None, typer.Option(help="Keyword arguments as a JSON object.")] = None,
    queue: Annotated[str, typer.Option(help="Queue name.")] = "default",
    priority: Annotated[int, typer.Option(help="Lower runs first.")] = 0,
    eta: Annotated[str | None, typer.Option(help="Run at (ISO 8601; naive is UTC).")] = None,
    delay: Annotated[float | None, typer.Option(min=0, help="Run in N seconds.")] = None,
    unique_key: Annotated[str | None, typer.Option(help="Merge with a pending task.")] = None,
    max_retries: Annotated[int | None, typer.Option(min=0)] = None,
) -> None:
    """Enqueue a task and print its uid.

    With traces on (OTEL_* variables), the enqueue is a span, child of the
    TRACEPARENT of the environment if there is one, and the task's attempts its children.
    """
    from eventix_operator import tracing
    from eventix_operator.client import new_task
    from eventix_operator.db import oneshot

    item = new_task(
        task,
        parse_json(args, "--args", list) or (),
        parse_json(kwargs, "--kwargs", dict),
        queue=queue,
        priority=priority,
        eta=parse_time(eta, "--eta"),
        delay=delay,
        unique_key=unique_key,
        max_retries=max_retries,
        source="cli",
    )
    cfg = settings()
    with (
        tracing.enqueuing(
            task,
            parent=tracing.from_environment(),
            attributes={"messaging.destination.name": queue},
        ) as context,
        oneshot.connect(cfg.require_database_url(), **_timeout(cfg)) as conn,
    ):
        item.trace_context = context
        typer.echo(oneshot.insert_tasks(conn, [item], payload_limit=cfg.max_payload_bytes)[0])


def _print_tasks(records: Sequence[TaskRecord], output: Output) -> None:
    if output is Output.json:
        typer.echo(json.dumps([r.as_json() for r in records], indent=2, default=str))
        return
    header = f"{'UID':36}  {'TASK':30}  {'QUEUE':12}  {'STATUS':10}  {'PRI':>4}  {'ATT':>3}  ETA"
    typer.echo(header)
    for r in records:
        typer.echo(
            f"{r.uid:36}  {r.task[:30]:30}  {r.namespace[:12]:12}  {r.status:10}  "
            f"{r.priority:>4}  {r.attempts:>3}  {r.eta.isoformat(timespec='seconds')}"
        )


@tasks_app.command("list")
@user_errors
def tasks_list(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    output: Annotated[Output, typer.Option()] = Output.table,
) -> None:
    """List tasks, newest first."""
    from eventix_operator.db import oneshot

    equals = {k: v for k, v in (("status", status), ("namespace", queue)) if v is not None}
    cfg = settings()
    with oneshot.connect(cfg.read_url() or cfg.require_database_url(), **_timeout(cfg)) as conn:
        found = oneshot.list_tasks(conn, equals=equals, limit=limit)
    _print_tasks(found, output)


@tasks_app.command("show")
@user_errors
def tasks_show(uid: str, output: Annotated[Output, typer.Option()] = Output.table) -> None:
    """Show one task with its result or error."""
    from eventix_operator.db import oneshot

    cfg = settings()
    with oneshot.connect(cfg.require_database_url(), **_timeout(cfg)) as conn:
        record = oneshot.get_task(conn, uid)
    if record is None:
        fail(f"no task {uid}")
    if output is Output.json:
        typer.echo(json.dumps(record.as_json(), indent=2, default=str))
        return
    for key, value in record.as_json().items():
        if value is not None:
            typer.echo(f"{key:16} {json.dumps(value) if isinstance(value, dict | list) else value}")


def _change_task(
    uid: str,
    change: Callable[[Connection, str], TaskRecord | None],
    done: str,
) -> None:
    """Apply ``change``; when it does not apply, say why (unknown uid, or the status)."""
    from eventix_operator.db import admin

    with engine().begin() as conn:
        record = admin.get_task(conn, uid)
        if record is None:
            fail(f"no task {uid}")
        if change(conn, uid) is None:
            fail(f"task {uid} is {record.status}")
    typer.echo(f"task {uid} {done}")


@tasks_app.command("retry")
@user_errors
def tasks_retry(uid: str) -> None:
    """Run a finished, failed or cancelled task (or one waiting for its retry) again,
    now, with fresh attempts."""
    from eventix_operator.db.admin import requeue_task

    _change_task(uid, requeue_task, "scheduled again")


@tasks_app.command("cancel")
@user_errors
def tasks_cancel(uid: str) -> None:
    """Cancel a task: a pending one at once; a running one is stopped by its worker
    (asyncio cancellation, or the flag a sync task checks; docs/cancelling.md) and
    recorded cancelled."""
    from eventix_operator.db.admin import cancel_task, get_task

    with engine().begin() as conn:
        record = cancel_task(conn, uid, "cli")
        if record is None:
            current = get_task(conn, uid)
            fail(f"no task {uid}" if current is None else f"task {uid} is {current.status}")
    if record.status == "processing":
        typer.echo(f"task {uid} is running: its worker was told to stop it")
    else:
        typer.echo(f"task {uid} cancelled")


@queue_app.command("stats")
@user_errors
def queue_stats(output: Annotated[Output, typer.Option()] = Output.table) -> None:
    """Tasks per queue and status, and how long the oldest due task has waited."""
    import dataclasses

    from eventix_operator.db import oneshot

    cfg = settings()
    with oneshot.connect(cfg.read_url() or cfg.require_database_url(), **_timeout(cfg)) as conn:
        stats = oneshot.queue_stats(conn)
    if output is Output.json:
        typer.echo(json.dumps([dataclasses.asdict(s) for s in stats], indent=2))
        return
    typer.echo(f"{'QUEUE':20}  {'STATUS':10}  {'COUNT':>8}  {'DUE':>8}  OLDEST DUE (s)")
    for s in stats:
        oldest = "" if s.oldest_due_seconds is None else f"{s.oldest_due_seconds:.1f}"
        typer.echo(f"{s.queue[:20]:20}  {s.status:10}  {s.count:>8}  {s.due:>8}  {oldest}")


@queue_app.command("pause")
@user_errors
def queue_pause(queue: str) -> None:
    """Stop claims of QUEUE at once (a claim already in flight may finish)."""
    from eventix_operator.db import queues

    with engine().begin() as conn:
        queues.pause(conn, queue)
    typer.echo(f"queue {queue} paused")


@queue_app.command("resume")
@user_errors
def queue_resume(queue: str) -> None:
    """Let QUEUE be claimed again, and wake its workers."""
    from eventix_operator.db import queues

    with engine().begin() as conn:
        queues.resume(conn, queue)
    typer.echo(f"queue {queue} resumed")


def _limit(value: str | None, what: str) -> int | None:
    if value is None or value.strip().lower() == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        fail(f"{what} {value!r}: expected a whole number or none")
    if number < 0 or (what == "--concurrency" and number < 1):
        fail(f"{what} {value!r}: too small")
    return number


@queue_app.command("set")
@user_errors
def queue_set(
    queue: str,
    concurrency: Annotated[
        str | None, typer.Option(help="Tasks running at once across all workers, or none.")
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="At most COUNT starts per SECONDS (10/1, 100/m), or none.")
    ] = None,
    retain_succeeded: Annotated[
        str | None, typer.Option(help="Seconds to keep succeeded tasks, or none (their own).")
    ] = None,
    retain_failed: Annotated[
        str | None, typer.Option(help="Seconds to keep failed tasks, or none (their own).")
    ] = None,
) -> None:
    """Change the settings given; the others keep their values."""
    from eventix_operator.db import queues

    values: dict[str, Any] = {}
    if concurrency is not None:
        values["concurrency_limit"] = _limit(concurrency, "--concurrency")
    if rate is not None:
        try:
            parsed = queues.parse_rate(rate)
        except ValueError as exc:
            fail(str(exc))
        values["rate_count"], values["rate_per_seconds"] = parsed or (None, None)
    if retain_succeeded is not None:
        values["retain_succeeded_seconds"] = _limit(retain_succeeded, "--retain-succeeded")
    if retain_failed is not None:
        values["retain_failed_seconds"] = _limit(retain_failed, "--retain-failed")
    if not values:
        fail("nothing to set: give --concurrency, --rate, --retain-succeeded or --retain-failed")
    with engine().begin() as conn:
        queues.set_queue(conn, queue, queues.QueueSettings(**values, given=frozenset(values)))
    typer.echo(f"queue {queue} set: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@queue_app.command("show")
@user_errors
def queue_show(queue: str, output: Annotated[Output, typer.Option()] = Output.table) -> None:
    """QUEUE's settings, due and running tasks, and how long its oldest due task waited."""
    import dataclasses

    from eventix_operator.db import queues

    with engine().connect() as conn:
        found = queues.get_queue(conn, queue)
    if found is None:
        fail(f"queue {queue} has no settings (unpaused, unlimited)")
    values = dataclasses.asdict(found)
    if output is Output.json:
        typer.echo(json.dumps(values, indent=2, default=str))
        return
    for key, value in values.items():
        typer.echo(f"{key:26} {'' if value is None else value}")


def _aware(value: datetime, zone: str) -> datetime:
    """A time without an offset is read in the schedule's zone, as people write it."""
    from zoneinfo import ZoneInfo

    return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(zone))


@schedule_app.command("preview")
@user_errors
def schedule_preview(
    expression: Annotated[
        str, typer.Argument(help="Cron (5 or 6 fields, seconds first) or @daily…")
    ],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone.")] = "UTC",
    start: Annotated[
        str | None, typer.Option("--from", help="Start (ISO 8601; no offset: in --tz).")
    ] = None,
    count: Annotated[int, typer.Option(min=1, max=10_000)] = 10,
    output: Annotated[Output, typer.Option()] = Output.table,
) -> None:
    """Print the next fire times, in the zone and in UTC."""
    from eventix_operator.schedules.ticks import parse_schedule, preview

    cron = parse_schedule(expression, tz)
    begin = _aware(parse_time(start, "--from") or datetime.now(UTC), tz)
    ticks = preview(cron, begin, count)
    if output is Output.json:
        rows = [{"local": t.local.isoformat(), "utc": t.utc.isoformat()} for t in ticks]
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'IN ' + tz:32}  UTC")
    for t in ticks:
        typer.echo(f"{t.local.isoformat():32}  {t.utc.isoformat()}")


@schedule_app.command("backfill")
@user_errors
def schedule_backfill(
    name: Annotated[str, typer.Argument(help="EventixSchedule name.")],
    start: Annotated[str, typer.Option("--from", help="First instant (ISO 8601).")],
    end: Annotated[str, typer.Option("--to", help="Last instant (ISO 8601).")],
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace.")] = None,
) -> None:
    """Create the runs of every tick in a range; ticks that ran already are left alone."""
    from eventix_operator.db import schedules as schedule_db
    from eventix_operator.schedules.scheduler import backfill

    with engine().begin() as conn:
        found = schedule_db.find_schedules(conn, name, namespace)
        if not found:
            fail(f"no schedule named {name!r}" + (f" in {namespace}" if namespace else ""))
        if len(found) > 1:
            fail(f"{name!r} exists in several namespaces; pass --namespace")
        schedule = found[0]
        first = _aware(parse_time(start, "--from"), schedule.time_zone)  # type: ignore[arg-type]
        last = _aware(parse_time(end, "--to"), schedule.time_zone)  # type: ignore[arg-type]
        if last < first:
            fail("--to is before --from")
        created, existing = backfill(
            conn, schedule, first, last, payload_limit=settings().max_payload_bytes
        )
    typer.echo(f"{len(created)} run(s) created, {len(existing)} tick(s) had run already")


@app.command()
@user_errors
def local(
    tasks: Annotated[str, typer.Option(help="Task modules to import, comma-separated.")],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Embedded database directory (default: the user's data directory; "
            "as root /var/lib/eventix-operator/pgdata)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Embedded database port (default: a free one)."),
    ] = None,
    queues: Annotated[str, typer.Option(help="Queues to take tasks from.")] = "default",
    manifests: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Directory of EventixTask YAML to load."),
    ] = None,
) -> None:
    """Run everything on this machine: embedded PostgreSQL, schema, worker, schedules.

    Uses DATABASE_URL instead when it is set. Stop with Ctrl-C.
    """
    from eventix_operator.cli.local import run_local

    s = settings(logs=True)
    _import_path()
    run_local(
        s,
        modules=_split(tasks),
        queues=_split(queues),
        data_dir=data_dir,
        port=port,
        manifests=manifests,
    )


@app.command()
@user_errors
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only these namespaces (default: all)."),
    ] = None,
    peering: Annotated[
        str | None,
        typer.Option(help="Kopf peering object shared by the replicas (default: run alone)."),
    ] = None,
    priority: Annotated[int, typer.Option(help="Peering priority; the highest one acts.")] = 0,
    liveness: Annotated[
        str | None, typer.Option(help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
    ] = "http://0.0.0.0:8080/healthz",
) -> None:
    """Run the Kubernetes operator (migrates the schema at start).

    Reconciles Eventix resources into the database, fires schedules, scales
    worker pools and syncs status back.
    """
    from eventix_operator.operator.main import run_operator

    settings(logs=True)
    run_operator(namespaces=namespace or [], peering=peering, priority=priority, liveness=liveness)


@app.command()
@user_errors
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the Eventix-compatible REST API on the same tables, and the web
    dashboard under /ui.

    Existing Eventix clients and workers run against it unchanged.
    """
    from eventix_operator.api.serve import serve

    serve(settings(logs=True), host=host, port=port, workers=workers)


@app.command()
@user_errors
def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the web dashboard alone (the /ui of `eventix api`, without the REST routes).

    Sign in with EVENTIX_API_TOKEN; EVENTIX_UI_READ_ONLY=true hides and refuses actions.
    """
    from eventix_operator.api.serve import serve

    serve(settings(logs=True), host=host, port=port, workers=workers, dashboard_only=True)


def main() -> None:
    app()
