"""The dashboard's pages and actions, each at a URL a person can share.

=============================  =====================================================
``/ui/``                       overview: queues, throughput, live workers
``/ui/queues``                 queue settings and figures; pause, resume
``/ui/tasks?queue=…&status=…`` tasks, filtered, newest first, a keyset page at a time
``/ui/tasks/{uid}``            one task: payload, result or error, origin, actions
``/ui/schedules``              schedules; ``/ui/schedules/{uid}`` one, with runs
``/ui/pools``                  worker pools: replicas, history, depth against the rule
``/ui/triggers``               triggers: fired, ignored, failed, last error
=============================  =====================================================

Actions are POSTs from forms (retry, cancel, delete, bulk, run now, pause, resume),
each checked for session, same origin, CSRF token and read-only mode (:mod:`.auth`), logged
with who did it, and answered with a redirect to a page that says what happened
(a fixed message chosen by code, never text from the request).

What a resource in Git owns stays Git's: a task of an ``EventixTask`` can be
retried or cancelled but not deleted, a schedule's run likewise, a schedule is
never suspended from here, nor is a queue an ``EventixQueue`` configures paused
or resumed (the CLI and the REST API can, as an emergency override); the pages say
which resource owns what and how to change it. No SQL here: every read and write
is a data-layer function run in one transaction (:meth:`ApiContext.run`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Connection

from eventix_operator.api.context import ApiContext, package_version
from eventix_operator.api.ui import views
from eventix_operator.api.ui.auth import (
    COOKIE,
    COOKIE_PATH,
    Session,
    Sessions,
    same_origin,
)
from eventix_operator.db import admin, dashboard
from eventix_operator.db import schedules as schedule_db
from eventix_operator.db.dashboard import Cursor, TaskFilter
from eventix_operator.db.rows import TaskRecord, parse_uid
from eventix_operator.logs import get_logger
from eventix_operator.schedules.scheduler import run_now
from eventix_operator.schedules.ticks import ScheduleError, parse_schedule, preview

log = get_logger("eventix.ui")

HERE = Path(__file__).parent
P = ParamSpec("P")
R = TypeVar("R")

#: Sources of tasks, as the list's origin filter offers them.
ORIGINS: dict[str, str] = {
    "k8s": "EventixTask resource",
    "schedule": "schedule",
    "trigger": "trigger",
    "api": "REST API",
    "client": "Python client",
    "cli": "CLI",
}
#: Sources whose rows a resource owns: Git (or kubectl) changes them, not the dashboard.
OWNED_SOURCES = frozenset({"k8s", "schedule"})
#: States from which each action applies (the data layer's rules, for the buttons).
RETRYABLE = frozenset({"done", "error", "cancelled", "retry"})
CANCELLABLE = frozenset({"scheduled", "retry", "processing"})
#: Running tasks the overview lists under each live worker (then "and N more").
LIVE_TASKS_SHOWN = 5
#: A bulk action on everything a filter matches goes a batch at a time, and one
#: click stops after this many seconds or batches (a "continue" button resumes).
BULK_BATCH = 500
BULK_SECONDS = 5.0
BULK_MAX_BATCHES = 40
#: A pool whose row the operator has not refreshed for this long is shown as stale.
POOL_STALE_SECONDS = 300
#: Runs shown per schedule, and fire times previewed.
SCHEDULE_RUNS = 20
PREVIEW_COUNT = 10

NOTES = {
    "retry": "Retried {changed} task(s): they run again, with fresh attempts.",
    "cancel": "Cancelled {changed} task(s).",
    "delete": "Deleted {changed} task(s).",
    "run": "Started a manual run of the schedule.",
    "pause": "Paused the queue: none of its tasks starts until it is resumed; running ones finish.",
    "resume": "Resumed the queue: its workers were woken.",
}
#: The queue actions and whether each leaves the queue paused.
QUEUE_ACTIONS = {"pause": True, "resume": False}


def _now() -> datetime:
    return datetime.now(UTC)


def _owner(record: TaskRecord) -> str | None:
    """``EventixTask ns/name`` (or ``EventixSchedule ns/name``) when a resource owns
    the task, else None."""
    if record.source == "k8s" and record.k8s_name:
        return f"EventixTask {record.k8s_namespace}/{record.k8s_name}"
    if record.source == "schedule" and record.k8s_name:
        return f"EventixSchedule {record.k8s_namespace}/{record.k8s_name}"
    return None


def _key_holder(conn: Connection, record: TaskRecord) -> str | None:
    """The uid of another pending task holding ``record``'s unique key in its queue
    and Kubernetes namespace (so retrying it would break the key's rule), or None."""
    pending = ("scheduled", "retry")  # what uq_eventix_task_pending_unique_key covers
    if record.unique_key is None or record.status in pending:
        return None
    holders = admin.tasks_by_unique_key(
        conn, record.unique_key, namespace=record.namespace, stati=pending, limit=100
    )  # at most one per Kubernetes namespace
    mine = record.k8s_namespace or ""
    return next((h.uid for h in holders if (h.k8s_namespace or "") == mine), None)


def _time_field(value: str | None) -> datetime | None:
    """A ``datetime-local`` field (or ISO 8601), naive read as UTC; ValueError if bad."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_filter(params: Mapping[str, list[str]]) -> tuple[TaskFilter, list[str]]:
    """The task list's filter from query (or form) parameters, and what was wrong
    with them (each bad field is dropped and named)."""
    problems: list[str] = []

    def one(name: str) -> str | None:
        values = [v.strip() for v in params.get(name, []) if v.strip()]
        return values[0] if values else None

    statuses = tuple(s for s in params.get("status", []) if s)
    bad = [s for s in statuses if s not in dashboard.TASK_STATUSES]
    if bad:
        problems.append(f"unknown status {', '.join(bad)}")
        statuses = tuple(s for s in statuses if s not in bad)
    sources = tuple(s for s in params.get("origin", []) if s)
    bad = [s for s in sources if s not in dashboard.TASK_SOURCES]
    if bad:
        problems.append(f"unknown origin {', '.join(bad)}")
        sources = tuple(s for s in sources if s not in bad)
    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            times[name] = _time_field(one(name))
        except ValueError:
            problems.append(f"{name} is not a time (YYYY-MM-DDTHH:MM, UTC)")
            times[name] = None
    found = TaskFilter(
        queue=one("queue"),
        statuses=statuses,
        task=one("task"),
        unique_key=one("unique_key"),
        sources=sources,
        since=times["since"],
        until=times["until"],
    )
    return found, problems


def filter_params(where: TaskFilter) -> list[tuple[str, str]]:
    """The query parameters that give ``where`` back (for links and hidden fields)."""
    pairs: list[tuple[str, str]] = []
    for name, value in (("queue", where.queue), ("task", where.task)):
        if value:
            pairs.append((name, value))
    if where.unique_key:
        pairs.append(("unique_key", where.unique_key))
    pairs += [("status", s) for s in where.statuses]
    pairs += [("origin", s) for s in where.sources]
    for name, stamp in (("since", where.since), ("until", where.until)):
        if stamp is not None:
            pairs.append((name, stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")))
    return pairs


class Dashboard:
    """The dashboard of one app: its sessions, templates and the API's context."""

    def __init__(self, ctx: ApiContext, *, token: str | None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        anonymous_secret = settings.database_url.get_secret_value() if settings.database_url else ""
        self.sessions = Sessions(
            token=token,
            anonymous_secret=anonymous_secret,
            lifetime_seconds=settings.ui_session_hours * 3600,
        )
        self.read_only = settings.ui_read_only
        self.page_size = settings.ui_page_size
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.filters.update(
            utc=views.utc,
            duration=views.duration,
            count=views.count,
            approx=views.approx,
            pretty=views.pretty_json,
            short=views.short,
            in_zone=views.in_zone,
            rate=views.rate,
        )
        env.globals.update(
            version=package_version(),
            origins=ORIGINS,
            statuses=dashboard.TASK_STATUSES,
            refresh=settings.ui_refresh_seconds,
        )

    # -- sessions and answers ------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(COOKIE))

    def set_cookie(self, request: Request, response: Response, value: str) -> None:
        secure = (
            request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=int(self.sessions.lifetime),
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    def begin(self, request: Request) -> Session | Response:
        """The session of a page request: the cookie's, a new one when anyone may
        look (no token), else a redirect to the login page (back here after)."""
        found = self.session(request)
        if found is not None:
            return found
        if self.sessions.anonymous:
            found, cookie = self.sessions.issue()
            request.state.new_cookie = cookie
            return found
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)

    def render(
        self,
        request: Request,
        session: Session | None,
        template: str,
        status: int = 200,
        **values: Any,
    ) -> Response:
        context: dict[str, Any] = {
            "session": session,
            "csrf": self.sessions.csrf_token(session) if session is not None else "",
            "can_act": not self.read_only,
            "read_only": self.read_only,
            "anonymous": self.sessions.anonymous,
            "now": _now(),
            "path": request.url.path,
            "live": True,
            **values,
        }
        response = self.templates.TemplateResponse(request, template, context, status_code=status)
        cookie = getattr(request.state, "new_cookie", None)
        if cookie is not None:
            self.set_cookie(request, response, cookie)
        return response

    def refuse(self, request: Request, session: Session | None, status: int, why: str) -> Response:
        return self.render(request, session, "refused.html", status=status, why=why, live=False)

    async def action(
        self, request: Request, what: str, *, changes: bool = True
    ) -> tuple[Session, dict[str, list[str]]] | Response:
        """Check an action's request (signed in, allowed to act unless it ``changes``
        nothing, same origin, CSRF token) and read its form; a Response is the
        refusal."""
        session = self.session(request)
        client = request.client.host if request.client else "?"

        def refused(why: str) -> None:
            who = session.who if session is not None else None
            log.warning("ui action refused", action=what, why=why, who=who, client=client)

        if session is None:
            refused("not signed in")
            return self.refuse(request, None, 401, "You are not signed in (or your session ended).")
        if self.read_only and changes:
            refused("read-only")
            return self.refuse(
                request, session, 403, "This dashboard is read-only (EVENTIX_UI_READ_ONLY)."
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not same_origin(headers):
            refused("cross-origin")
            return self.refuse(request, session, 403, "The request came from another site.")
        form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        if not self.sessions.check_csrf(session, (form.get("csrf") or [""])[0] or None):
            refused("csrf")
            return self.refuse(
                request,
                session,
                403,
                "The form's CSRF token is missing or is not this session's. Reload the "
                "page and try again.",
            )
        return session, form

    def audit(self, request: Request, session: Session, action: str, **what: Any) -> None:
        """One log line per action: who (session, token fingerprint, address) and what."""
        client = request.client
        log.info(
            "ui action",
            action=action,
            who=session.who,
            token=self.sessions.fingerprint,
            client=f"{client.host}:{client.port}" if client else "?",
            forwarded_for=request.headers.get("x-forwarded-for"),
            **what,
        )

    async def run(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return await self.ctx.run(fn, *args, **kwargs)


def _note_url(base: str, pairs: list[tuple[str, str]], note: str) -> str:
    return f"{base}?{urlencode([*pairs, ('note', note)])}"


def _note(values: Mapping[str, list[str]]) -> str | None:
    """The message a redirect after an action carries (``action:changed:skipped``),
    from :data:`NOTES` only."""
    raw = (values.get("note") or [""])[0]
    action, _, rest = raw.partition(":")
    changed, _, skipped = rest.partition(":")
    if action not in NOTES or (changed and not changed.isdigit()):
        return None
    text = NOTES[action].format(changed=changed or "0")
    if skipped.isdigit() and int(skipped):
        text += (
            f" {skipped} left as they were (in a state the action does not apply to, "
            "or owned by a resource)."
        )
    return text


def router(ui: Dashboard) -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    ctx = ui.ctx

    @routes.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    # -- sign-in -------------------------------------------------------------------------

    def safe_next(value: str | None) -> str:
        """Only a path of the dashboard: never an address elsewhere."""
        if value and value.startswith("/ui") and not value.startswith("//"):
            return value
        return "/ui/"

    @routes.get("/ui/login")
    async def login_page(request: Request) -> Response:
        if ui.sessions.anonymous or ui.session(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return ui.render(request, None, "login.html", next=request.query_params.get("next", ""))

    @routes.post("/ui/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        target = safe_next((form.get("next") or [""])[0])
        client = request.client.host if request.client else "?"
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not same_origin(headers):
            return ui.refuse(request, None, 403, "The request came from another site.")
        if not ui.sessions.check_token((form.get("token") or [""])[0]):
            log.warning("ui sign-in refused", client=client)
            return ui.render(request, None, "login.html", status=401, next=target, failed=True)
        session, cookie = ui.sessions.issue()
        log.info("ui sign-in", who=session.who, token=ui.sessions.fingerprint, client=client)
        response = RedirectResponse(target, status_code=303)
        ui.set_cookie(request, response, cookie)
        return response

    @routes.post("/ui/logout")
    async def logout(request: Request) -> Response:
        checked = await ui.action(request, "sign-out", changes=False)
        if isinstance(checked, Response):
            return checked
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response

    # -- overview --------------------------------------------------------------------------

    @routes.get("/ui/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session
        cap = ctx.settings.ui_count_cap

        Overview = tuple[
            list[dashboard.QueueOverview], dashboard.Throughput, list[dashboard.LiveWorker], bool
        ]

        def load(conn: Connection) -> Overview:
            queues = dashboard.queue_overview(conn, cap=cap)
            flow = dashboard.throughput(conn)
            workers, capped = dashboard.live_workers(conn, per_worker=LIVE_TASKS_SHOWN)
            return queues, flow, workers, capped

        queues, flow, workers, workers_capped = await ui.run(load)
        return ui.render(
            request,
            session,
            "overview.html",
            queues=queues,
            flow=flow,
            chart=views.throughput_chart(flow),
            workers=workers,
            workers_capped=workers_capped,
            workers_read=dashboard.LIVE_TASKS_READ,
            running=sum(q.running for q in queues),
        )

    # -- queues ----------------------------------------------------------------------------

    @routes.get("/ui/queues", response_class=HTMLResponse)
    async def queue_list(request: Request) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session
        found = await ui.run(dashboard.queue_controls, cap=ctx.settings.ui_count_cap)
        return ui.render(
            request,
            session,
            "queues.html",
            queues=found,
            cap=ctx.settings.ui_count_cap,
            note=_note(parse_qs(request.url.query)),
        )

    @routes.post("/ui/queues/{action}")
    async def queue_action(request: Request, action: str) -> Response:
        checked = await ui.action(request, action)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        name = (form.get("queue") or [""])[0]
        if action not in QUEUE_ACTIONS:
            return ui.refuse(request, session, 404, "No such action.")
        if not name:
            return ui.refuse(request, session, 400, "Name the queue to pause or resume.")
        paused = QUEUE_ACTIONS[action]
        owner = await ui.run(dashboard.set_paused, name, paused)
        if owner is not None:
            ns, _, resource = owner.partition("/")
            value = json.dumps(paused)
            patch = json.dumps({"spec": {"paused": paused}}, separators=(",", ":"))
            return ui.refuse(
                request,
                session,
                409,
                f"EventixQueue {owner} configures queue {name}: to {action} it, set "
                f"spec.paused: {value} there, in Git (or, where Git "
                f"does not manage it, kubectl patch eventixqueue {resource} -n {ns} --type "
                f"merge -p '{patch}'). An emergency override is `eventix queue {action} "
                f"{name}`: it holds until the resource's spec changes or the operator "
                "restarts.",
            )
        ui.audit(request, session, action, queue=name, changed=True)
        return RedirectResponse(_note_url("/ui/queues", [], f"{action}:1"), 303)

    # -- tasks -----------------------------------------------------------------------------

    @routes.get("/ui/tasks", response_class=HTMLResponse)
    async def tasks(request: Request) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session
        params = parse_qs(request.url.query, keep_blank_values=True)
        search = (params.get("uid") or [""])[0].strip()
        if search:
            if parse_uid(search) is not None:
                return RedirectResponse(f"/ui/tasks/{parse_uid(search)}", status_code=303)
            found = await ui.run(dashboard.find_by_uid_prefix, search)
            if len(found) == 1:
                return RedirectResponse(f"/ui/tasks/{found[0].uid}", status_code=303)
            return ui.render(
                request,
                session,
                "tasks.html",
                where=TaskFilter(),
                problems=[] if found else [f"no task's uid starts with {search!r}"],
                rows=found,
                search=search,
                next_cursor=None,
                after=None,
                queues=await ui.run(dashboard.queues),
                pairs=[],
                note=None,
            )
        where, problems = parse_filter(params)
        after = Cursor.decode((params.get("after") or [""])[0])

        def load(conn: Connection) -> tuple[list[str], list[dashboard.TaskSummary], Cursor | None]:
            page, following = dashboard.list_tasks(conn, where, after=after, limit=ui.page_size)
            return dashboard.queues(conn), page, following

        queues, rows, following = await ui.run(load)
        pairs = filter_params(where)
        return ui.render(
            request,
            session,
            "tasks.html",
            where=where,
            problems=problems,
            rows=rows,
            search="",
            next_cursor=following,
            after=after,
            queues=queues,
            pairs=pairs,
            query=urlencode(pairs),
            note=_note(params),
        )

    @routes.post("/ui/tasks/bulk")
    async def bulk(request: Request) -> Response:
        checked = await ui.action(request, "bulk")
        if isinstance(checked, Response):
            return checked
        session, form = checked
        action = (form.get("action") or [""])[0]
        if action not in dashboard.BULK_ACTIONS:
            return ui.refuse(request, session, 400, "Choose retry, cancel or delete.")
        where, _ = parse_filter(form)
        pairs = filter_params(where)
        if (form.get("scope") or [""])[0] == "matching":
            changed = skipped = 0
            cursor = Cursor.decode((form.get("after") or [""])[0])
            deadline = time.monotonic() + BULK_SECONDS
            for _ in range(BULK_MAX_BATCHES):
                uids, cursor = await ui.run(
                    dashboard.matching_uids, where, after=cursor, limit=BULK_BATCH
                )
                if uids:
                    done = await ui.run(dashboard.bulk_action, action, uids)
                    changed, skipped = changed + done.changed, skipped + done.skipped
                if cursor is None or time.monotonic() > deadline:
                    break
            ui.audit(
                request,
                session,
                f"bulk {action}",
                scope="matching",
                filter=dict(pairs),
                changed=changed,
                skipped=skipped,
                finished=cursor is None,
            )
            extra = [("more", cursor.encode())] if cursor is not None else []
            return RedirectResponse(
                _note_url("/ui/tasks", [*pairs, *extra], f"{action}:{changed}:{skipped}"), 303
            )
        uids = [u for u in form.get("uid", []) if u]
        outcome = await ui.run(dashboard.bulk_action, action, uids)
        ui.audit(
            request,
            session,
            f"bulk {action}",
            scope="selected",
            uids=list(outcome.uids)[:50],
            changed=outcome.changed,
            skipped=outcome.skipped,
        )
        note = f"{action}:{outcome.changed}:{outcome.skipped}"
        return RedirectResponse(_note_url("/ui/tasks", pairs, note), 303)

    @routes.get("/ui/tasks/{uid}", response_class=HTMLResponse)
    async def task(request: Request, uid: str) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session

        def load(conn: Connection) -> tuple[TaskRecord | None, schedule_db.ScheduleRecord | None]:
            record = admin.get_task(conn, uid)
            schedule = None
            if record is not None and record.schedule_uid:
                schedule = schedule_db.get_schedule(conn, record.schedule_uid)
            return record, schedule

        record, schedule = await ui.run(load)
        if record is None:
            return ui.render(request, session, "missing.html", status=404, what="task", name=uid)
        params = parse_qs(request.url.query)
        return ui.render(
            request,
            session,
            "task.html",
            task=record,
            owner=_owner(record),
            schedule=schedule,
            can_retry=record.status in RETRYABLE,
            can_cancel=record.status in CANCELLABLE,
            can_delete=record.source not in OWNED_SOURCES,
            manual=record.schedule_time is not None and record.schedule_time.microsecond != 0,
            note=_note(params),
        )

    @routes.post("/ui/tasks/{uid}/{action}")
    async def task_action(request: Request, uid: str, action: str) -> Response:
        checked = await ui.action(request, action)
        if isinstance(checked, Response):
            return checked
        session, _form = checked
        if action not in dashboard.BULK_ACTIONS or parse_uid(uid) is None:
            return ui.refuse(request, session, 404, "No such action.")

        def act(conn: Connection) -> tuple[TaskRecord | None, bool, str | None]:
            """The task, whether it changed, and why it may not (a refusal)."""
            record = admin.get_task(conn, uid)
            if record is None:
                return None, False, None
            if action == "delete":
                owner = _owner(record)
                if owner is not None:
                    return (
                        record,
                        False,
                        f"{owner} owns this task: delete or change the resource in Git (or "
                        "with kubectl), and the operator removes the task.",
                    )
                return record, admin.delete_task(conn, uid), None
            if action == "retry":
                holder = _key_holder(conn, record)
                if holder is not None:
                    return (
                        record,
                        False,
                        f"Task {holder} of queue {record.namespace} holds the unique key "
                        f"{record.unique_key!r} while it is pending, and only one pending "
                        "task may: retry this one once that one has run, or cancel that one "
                        "first.",
                    )
            if action == "retry":
                return record, admin.requeue_task(conn, uid) is not None, None
            return record, admin.cancel_task(conn, uid, "dashboard") is not None, None

        record, changed, refusal = await ui.run(act)
        if record is None:
            return ui.render(request, session, "missing.html", status=404, what="task", name=uid)
        if refusal is not None:
            return ui.refuse(request, session, 409, refusal)
        ui.audit(request, session, action, task=uid, name=record.task, changed=changed)
        note = f"{action}:{int(changed)}:{int(not changed)}"
        if action == "delete" and changed:
            return RedirectResponse(_note_url("/ui/tasks", [], note), 303)
        return RedirectResponse(_note_url(f"/ui/tasks/{uid}", [], note), 303)

    # -- schedules -------------------------------------------------------------------------

    @routes.get("/ui/schedules", response_class=HTMLResponse)
    async def schedules(request: Request) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session

        def load(
            conn: Connection,
        ) -> tuple[list[schedule_db.ScheduleRecord], dict[str, list[dashboard.ScheduleRun]]]:
            found = dashboard.list_schedules(conn)
            return found, dashboard.recent_schedule_runs(conn, [s.uid for s in found], limit=5)

        found, runs = await ui.run(load)
        now = _now()
        upcoming: dict[str, Any] = {}
        for s in found:
            try:
                upcoming[s.uid] = preview(parse_schedule(s.expression, s.time_zone), now, 1)
            except ScheduleError as exc:
                upcoming[s.uid] = str(exc)
        return ui.render(
            request, session, "schedules.html", schedules=found, runs=runs, upcoming=upcoming
        )

    @routes.get("/ui/schedules/{uid}", response_class=HTMLResponse)
    async def schedule(request: Request, uid: str) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session

        def load(
            conn: Connection,
        ) -> tuple[schedule_db.ScheduleRecord | None, list[dashboard.ScheduleRun]]:
            record = schedule_db.get_schedule(conn, uid)
            if record is None:
                return None, []
            return record, dashboard.recent_schedule_runs(conn, [uid], limit=SCHEDULE_RUNS)[uid]

        record, runs = await ui.run(load)
        if record is None:
            return ui.render(
                request, session, "missing.html", status=404, what="schedule", name=uid
            )
        start = _now().replace(microsecond=0)
        try:
            ticks: list[Any] | str = preview(
                parse_schedule(record.expression, record.time_zone), start, PREVIEW_COUNT
            )
        except ScheduleError as exc:
            ticks = str(exc)
        return ui.render(
            request,
            session,
            "schedule.html",
            schedule=record,
            runs=runs,
            ticks=ticks,
            preview_from=start,
            note=_note(parse_qs(request.url.query)),
        )

    @routes.post("/ui/schedules/{uid}/run")
    async def schedule_run(request: Request, uid: str) -> Response:
        checked = await ui.action(request, "run now")
        if isinstance(checked, Response):
            return checked
        session, _form = checked
        limit = ctx.payload_limit

        def act(conn: Connection) -> tuple[schedule_db.ScheduleRecord | None, str | None]:
            record = schedule_db.get_schedule(conn, uid)
            if record is None:
                return None, None
            task_uid, _key = run_now(conn, record, _now(), payload_limit=limit)
            return record, task_uid

        record, task_uid = await ui.run(act)
        if record is None:
            return ui.render(
                request, session, "missing.html", status=404, what="schedule", name=uid
            )
        ui.audit(
            request,
            session,
            "run now",
            schedule=f"{record.k8s_namespace}/{record.k8s_name}",
            task=task_uid,
        )
        return RedirectResponse(_note_url(f"/ui/schedules/{uid}", [], "run:1"), 303)

    # -- pools and triggers --------------------------------------------------------------

    @routes.get("/ui/pools", response_class=HTMLResponse)
    async def pools(request: Request) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session
        now = _now()
        current = now.replace(second=0, microsecond=0)
        minutes = [current - timedelta(minutes=59 - i) for i in range(60)]

        def load(
            conn: Connection,
        ) -> tuple[list[dashboard.PoolRecord], dict[str, list[dashboard.PoolSample]]]:
            found = dashboard.list_pools(conn)
            return found, dashboard.pool_samples(conn, [p.uid for p in found], minutes[0])

        found, samples = await ui.run(load)
        charts = {p.uid: views.pool_chart(samples[p.uid], minutes) for p in found}
        stale = {p.uid: (now - p.updated_at).total_seconds() > POOL_STALE_SECONDS for p in found}
        return ui.render(request, session, "pools.html", pools=found, charts=charts, stale=stale)

    @routes.get("/ui/triggers", response_class=HTMLResponse)
    async def triggers(request: Request) -> Response:
        session = ui.begin(request)
        if isinstance(session, Response):
            return session
        found = await ui.run(dashboard.list_triggers)
        table_names = {t.name for t in found}
        code = {n: c for n, c in sorted(ctx.stats.snapshot().items()) if n not in table_names}
        return ui.render(request, session, "triggers.html", triggers=found, code=code)

    return routes


def add_ui(app: FastAPI, ctx: ApiContext, *, token: str | None) -> Dashboard:
    """Serve the dashboard under ``/ui`` of ``app`` (static files included)."""
    ui = Dashboard(ctx, token=token)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.include_router(router(ui))
    return ui
