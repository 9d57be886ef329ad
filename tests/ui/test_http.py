"""The dashboard's sessions, refusals and headers over plain HTTP, against real
``eventix api`` and ``eventix dashboard`` processes."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from sqlalchemy import text

from eventix_operator import enqueue
from eventix_operator.db import queues
from tests.ui.conftest import TOKEN, Server, launch


def csrf_of(server: Server, cookie: str) -> str:
    status, _, body = server.request("GET", "/ui/tasks", cookie=cookie)
    assert status == 200
    found = re.search(r'name="csrf" value="([^"]+)"', body)
    assert found is not None
    return found.group(1)


def test_pages_need_a_session_and_the_rest_api_still_its_bearer(server: Server) -> None:
    status, headers, _ = server.request("GET", "/ui/tasks?status=error")
    assert status == 303
    assert headers["location"] == "/ui/login?next=/ui/tasks%3Fstatus%3Derror"
    assert (
        server.request("GET", "/ui/tasks", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 303
    )
    assert server.request("PUT", "/tasks/dump")[0] == 401
    assert (
        server.request("PUT", "/tasks/dump", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    )
    status, headers, _ = server.request("GET", "/")
    assert (status, headers["location"]) == (307, "/ui/")
    assert server.request("GET", "/ui/static/app.css")[0] == 200  # no data in it


def test_the_session_cookie_is_httponly_strict_and_holds_no_token(server: Server) -> None:
    status, headers, _ = server.request("POST", "/ui/login", body=f"token={TOKEN}&next=/ui/pools")
    assert (status, headers["location"]) == (303, "/ui/pools")
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie
    assert "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind TLS it is Secure:
    _, behind_tls, _ = server.request(
        "POST", "/ui/login", body=f"token={TOKEN}", headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in behind_tls["set-cookie"]
    assert TOKEN not in cookie
    # wrong tokens and other places to go
    assert server.request("POST", "/ui/login", body="token=guess")[0] == 401
    _, elsewhere, _ = server.request(
        "POST", "/ui/login", body=f"token={TOKEN}&next=//evil.example/"
    )
    assert elsewhere["location"] == "/ui/"


def test_forged_or_foreign_cookies_are_no_session(server: Server, tmp_path: Path) -> None:
    cookie = server.sign_in()
    assert server.request("GET", "/ui/", cookie=cookie)[0] == 200
    version, issued, sid, mac = cookie.split(".")
    for forged in (
        f"{version}.{int(issued) + 999}.{sid}.{mac}",  # a later start, to outlive the expiry
        f"{version}.{issued}.{sid}x.{mac}",
        f"{version}.{issued}.{sid}.{mac[:-2]}AA",
        "v1.garbage",
        "",
    ):
        assert server.request("GET", "/ui/", cookie=forged)[0] == 303, forged
    with launch(
        server.database_url, tmp_path, EVENTIX_API_TOKEN="another-token-987654321"
    ) as other:
        assert other.request("GET", "/ui/", cookie=cookie)[0] == 303  # a new token ends sessions


def test_actions_are_refused_without_token_from_elsewhere_or_signed_out(server: Server) -> None:
    queue = f"http-{uuid.uuid4().hex[:6]}"
    with server.engine.begin() as conn:
        uid = enqueue("x", queue=queue, connection=conn)
    cookie = server.sign_in()
    csrf = csrf_of(server, cookie)
    path = f"/ui/tasks/{uid}/cancel"
    refusals = [
        ("no token", {"body": "", "cookie": cookie}, 403),
        ("another token", {"body": "csrf=" + "A" * 43, "cookie": cookie}, 403),
        ("signed out", {"body": f"csrf={csrf}"}, 401),
        ("another site", {"body": f"csrf={csrf}", "cookie": cookie,
                          "headers": {"Origin": "http://evil.example"}}, 403),
        ("cross-site fetch", {"body": f"csrf={csrf}", "cookie": cookie,
                              "headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
    ]  # fmt: skip
    for why, request, expected in refusals:
        assert server.request("POST", path, **request)[0] == expected, why  # type: ignore[arg-type]
    with server.engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM eventix_task WHERE uid = :u"), {"u": uid})
        assert status.scalar_one() == "scheduled"
    same_site = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    status, headers, _ = server.request(
        "POST", path, body=f"csrf={csrf}", cookie=cookie, headers=same_site
    )
    assert (status, headers["location"]) == (303, f"/ui/tasks/{uid}?note=cancel%3A1%3A0")
    log = server.log.read_text()
    line = next(line for line in log.splitlines() if "ui action " in line and uid in line)
    assert "action=cancel" in line
    assert "who='session " in line or "who=session " in line
    assert "token=" in line
    assert "client=127.0.0.1:" in line


def test_every_page_carries_the_security_headers(server: Server) -> None:
    cookie = server.sign_in()
    for path in (
        "/ui/",
        "/ui/queues",
        "/ui/tasks",
        "/ui/schedules",
        "/ui/pools",
        "/ui/triggers",
        "/ui/login",
    ):
        status, headers, _ = server.request("GET", path, cookie=cookie)
        assert status in (200, 303), path
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        if status == 200:
            assert re.fullmatch(r"app;dur=\d+\.\d", headers["server-timing"])
    _, headers, _ = server.request("GET", "/ui/static/app.js")
    assert headers["x-frame-options"] == "DENY"
    assert "cache-control" not in headers


def test_what_is_not_there_is_a_page_that_says_so(server: Server) -> None:
    cookie = server.sign_in()
    status, _, body = server.request("GET", f"/ui/tasks/{uuid.uuid4()}", cookie=cookie)
    assert status == 404
    assert "No such task" in body
    assert server.request("GET", "/ui/tasks/not-a-uid", cookie=cookie)[0] == 404
    assert server.request("GET", "/ui/schedules/nope", cookie=cookie)[0] == 404
    status, _, body = server.request(
        "GET", "/ui/tasks?status=exploded&since=yesterday&after=junk", cookie=cookie
    )
    assert status == 200
    assert "unknown status exploded" in body
    assert "since is not a time" in body


def test_a_retry_that_would_take_a_held_unique_key_says_who_holds_it(server: Server) -> None:
    queue = f"keys-{uuid.uuid4().hex[:6]}"
    with server.engine.begin() as conn:
        rows = conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, unique_key) VALUES"
                " ('x', :q, 'error', 'k'), ('x', :q, 'scheduled', 'k'),"
                " ('x', :q, 'done', 'free'), ('x', :q, 'error', 'free')"
                " RETURNING status, uid::text"
            ),
            {"q": queue},
        ).all()
    (failed, holder, *_), finished = [u for _, u in rows], [u for _, u in rows[2:]]
    cookie = server.sign_in()
    csrf = csrf_of(server, cookie)
    status, _, body = server.request(
        "POST", f"/ui/tasks/{failed}/retry", body=f"csrf={csrf}", cookie=cookie
    )
    assert status == 409
    assert f"Task {holder} of queue {queue} holds the unique key" in body
    # in bulk: the held one is left, and of two runs of a free key the newest goes
    form = "&".join([f"csrf={csrf}", "action=retry", "scope=selected"])
    form += "".join(f"&uid={u}" for u in [failed, *finished])
    status, headers, _ = server.request("POST", "/ui/tasks/bulk", body=form, cookie=cookie)
    assert (status, headers["location"]) == (303, "/ui/tasks?note=retry%3A1%3A2")
    with server.engine.connect() as conn:
        pending = conn.execute(
            text(
                "SELECT unique_key, count(*) FROM eventix_task WHERE namespace = :q"
                " AND status = 'scheduled' GROUP BY 1 ORDER BY 1"
            ),
            {"q": queue},
        ).all()
    assert [tuple(r) for r in pending] == [("free", 1), ("k", 1)]


def test_without_a_token_anyone_looks_and_forms_still_need_their_csrf_token(
    server: Server, tmp_path: Path
) -> None:
    with launch(server.database_url, tmp_path, EVENTIX_API_ALLOW_ANONYMOUS="true") as open_:
        status, headers, body = open_.request("GET", "/ui/")
        assert status == 200
        assert "Sign out" not in body
        cookie = headers["set-cookie"].split(";")[0].partition("=")[2]
        with open_.engine.begin() as conn:
            uid = enqueue("x", queue="anon", connection=conn)
        assert open_.request("POST", f"/ui/tasks/{uid}/cancel", body="", cookie=cookie)[0] == 403
        csrf = csrf_of(open_, cookie)
        status, _, _ = open_.request(
            "POST", f"/ui/tasks/{uid}/cancel", body=f"csrf={csrf}", cookie=cookie
        )
        assert status == 303
        assert "who=anonymous" in open_.log.read_text()


def test_eventix_dashboard_serves_the_dashboard_alone(server: Server, tmp_path: Path) -> None:
    with launch(
        server.database_url, tmp_path, command="dashboard", EVENTIX_API_TOKEN=TOKEN
    ) as alone:
        cookie = alone.sign_in()
        assert alone.request("GET", "/ui/", cookie=cookie)[0] == 200
        assert alone.request("GET", "/healthz")[0] == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert alone.request("PUT", "/tasks/dump", headers=bearer)[0] == 404
        assert alone.request("POST", "/task", headers=bearer)[0] == 404
        assert "dashboard started" in alone.log.read_text()


def test_cancelling_a_running_task_marks_it_for_its_worker(server: Server) -> None:
    queue = f"http-{uuid.uuid4().hex[:6]}"
    with server.engine.begin() as conn:
        uid = enqueue("x", queue=queue, connection=conn)
        conn.execute(  # as a worker's claim leaves it (no worker serves this queue)
            text("UPDATE eventix_task SET status = 'processing', worker_id = 'w', "
                 "worker_expires = now() + interval '1 hour', attempts = 1 WHERE uid = :u"),
            {"u": uid},
        )  # fmt: skip
    cookie = server.sign_in()
    status, _, page = server.request("GET", f"/ui/tasks/{uid}", cookie=cookie)
    assert 'id="cancel"' in page  # offered for a running task too
    same_site = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    body = f"csrf={csrf_of(server, cookie)}"
    path = f"/ui/tasks/{uid}/cancel"
    status, _, _ = server.request("POST", path, body=body, cookie=cookie, headers=same_site)
    assert status == 303
    _, _, page = server.request("GET", f"/ui/tasks/{uid}", cookie=cookie)
    assert "asked for by dashboard" in page
    with server.engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, cancelled_by FROM eventix_task WHERE uid = :u"), {"u": uid}
        ).one()
    assert tuple(row) == ("processing", "dashboard")  # its worker ends it


def row_of(page: str, queue: str) -> str:
    """The Queues page's row of ``queue``, as HTML."""
    found = re.search(rf'<tr data-queue="{re.escape(queue)}"[^>]*>(.*?)</tr>', page, re.S)
    assert found is not None, f"no row of {queue}"
    return found.group(0)


def paused_in_db(server: Server, queue: str) -> bool | None:
    with server.engine.connect() as conn:
        found = conn.execute(text("SELECT paused FROM eventix_queue WHERE name = :q"), {"q": queue})
        return found.scalar()


def test_the_queues_page_lists_each_queues_settings_figures_and_who_configures_it(
    server: Server,
) -> None:
    tag = uuid.uuid4().hex[:6]
    limited, owned, plain = f"limited-{tag}", f"owned-{tag}", f"plain-{tag}"
    with server.engine.begin() as conn:
        for i in range(3):
            enqueue("x", args=[i], queue=limited, connection=conn)
        enqueue("x", queue=limited, delay=3600, connection=conn)  # not due
        running = enqueue("x", queue=limited, connection=conn)
        conn.execute(  # as a worker's claim leaves it (no worker serves this queue)
            text("UPDATE eventix_task SET status = 'processing', worker_id = 'w', "
                 "worker_expires = now() + interval '1 hour' WHERE uid = :u"),
            {"u": running},
        )  # fmt: skip
        enqueue("x", queue=plain, connection=conn)
        queues.set_queue(
            conn,
            limited,
            queues.everything(
                concurrency_limit=3, rate_count=10, rate_per_seconds=1.0,
                retain_succeeded_seconds=3600, retain_failed_seconds=7 * 86400,
            ),
        )  # fmt: skip
        queues.set_queue(
            conn, owned, queues.everything(paused=True), k8s=("team", "reports", f"uid-{tag}")
        )
    cookie = server.sign_in()
    status, _, page = server.request("GET", "/ui/queues", cookie=cookie)
    assert status == 200
    assert '<a href="/ui/queues" class="current"' in page  # in the navigation
    row = row_of(page, limited)
    assert f'<a href="/ui/tasks?queue={limited}">{limited}</a>' in row  # its tasks
    cells = dict(re.findall(r'<td class="(?:num )?(?:nw )?(\w+)[^"]*">(.*?)</td>', row, re.S))
    assert cells["state"] == "active"
    assert cells["concurrency"] == "3"
    assert cells["rate"] == "10 / 1 s"
    assert cells["retention"] == "succeeded 1 h, failed 7 d"
    assert cells["due"] == "3"  # not the delayed one, nor the running one
    assert ">1<" in cells["running"]
    assert cells["oldest"] != "—"
    assert cells["owner"] == "CLI/API"
    assert 'action="/ui/queues/pause"' in row
    row = row_of(page, owned)  # settings only, no task
    assert '<span class="pill warn">paused</span>' in row
    assert "EventixQueue <code>team/reports</code>" in row
    assert "disabled" in row
    assert "change <code>spec.paused</code>" in row
    assert "<form" not in row  # nothing to click: Git owns it
    row = row_of(page, plain)  # tasks only, no settings
    assert ">none<" in row
    assert "tasks' own" in row
    assert 'action="/ui/queues/pause"' in row


def test_pause_and_resume_change_the_queue_and_its_row(server: Server) -> None:
    queue = f"pause-{uuid.uuid4().hex[:6]}"
    with server.engine.begin() as conn:
        enqueue("x", queue=queue, connection=conn)
    cookie = server.sign_in()
    csrf = csrf_of(server, cookie)
    form = f"csrf={csrf}&queue={queue}"
    status, headers, _ = server.request("POST", "/ui/queues/pause", body=form, cookie=cookie)
    assert (status, headers["location"]) == (303, "/ui/queues?note=pause%3A1")
    assert paused_in_db(server, queue) is True
    _, _, page = server.request("GET", headers["location"], cookie=cookie)
    assert "Paused the queue" in page
    row = row_of(page, queue)
    assert '<span class="pill warn">paused</span>' in row
    assert 'action="/ui/queues/resume"' in row
    _, _, overview = server.request("GET", "/ui/", cookie=cookie)
    assert "paused</a>" in row_of(overview, queue)  # the overview marks it too
    status, headers, _ = server.request("POST", "/ui/queues/resume", body=form, cookie=cookie)
    assert (status, headers["location"]) == (303, "/ui/queues?note=resume%3A1")
    assert paused_in_db(server, queue) is False
    _, _, page = server.request("GET", headers["location"], cookie=cookie)
    assert 'action="/ui/queues/pause"' in row_of(page, queue)
    _, _, overview = server.request("GET", "/ui/", cookie=cookie)
    assert "paused</a>" not in row_of(overview, queue)
    log = server.log.read_text()
    line = next(line for line in log.splitlines() if "ui action " in line and queue in line)
    assert "action=pause" in line
    assert "who='session " in line or "who=session " in line


def test_queue_actions_are_refused_signed_out_from_elsewhere_read_only_or_owned_by_git(
    server: Server, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    queue, owned = f"refuse-{tag}", f"owned-{tag}"
    with server.engine.begin() as conn:
        enqueue("x", queue=queue, connection=conn)
        queues.set_queue(conn, owned, queues.everything(), k8s=("team", "mail", f"uid-{tag}"))
    cookie = server.sign_in()
    csrf = csrf_of(server, cookie)
    form = f"csrf={csrf}&queue={queue}"
    refusals = [
        ("signed out", {"body": form}, 401),
        ("no token", {"body": f"queue={queue}", "cookie": cookie}, 403),
        ("another site", {"body": form, "cookie": cookie,
                          "headers": {"Origin": "http://evil.example"}}, 403),
    ]  # fmt: skip
    for why, request, expected in refusals:
        assert server.request("POST", "/ui/queues/pause", **request)[0] == expected, why  # type: ignore[arg-type]
    assert server.request("POST", "/ui/queues/drain", body=form, cookie=cookie)[0] == 404
    assert server.request("POST", "/ui/queues/pause", body=f"csrf={csrf}", cookie=cookie)[0] == 400
    assert paused_in_db(server, queue) is None  # no settings were written
    # an EventixQueue configures it: Git says whether it is paused, not the dashboard
    status, _, body = server.request(
        "POST", "/ui/queues/pause", body=f"csrf={csrf}&queue={owned}", cookie=cookie
    )
    assert status == 409
    assert f"EventixQueue team/mail configures queue {owned}" in body
    assert "spec.paused: true" in body
    assert paused_in_db(server, owned) is False
    # read-only: no buttons, and the server refuses
    with launch(
        server.database_url, tmp_path, EVENTIX_API_TOKEN=TOKEN, EVENTIX_UI_READ_ONLY="true"
    ) as read_only:
        ro_cookie = read_only.sign_in()
        _, _, page = read_only.request("GET", "/ui/queues", cookie=ro_cookie)
        assert "<button" not in row_of(page, queue)
        ro_csrf = csrf_of(read_only, ro_cookie)
        status, _, body = read_only.request(
            "POST", "/ui/queues/pause", body=f"csrf={ro_csrf}&queue={queue}", cookie=ro_cookie
        )
        assert status == 403
        assert "read-only" in body
    assert paused_in_db(server, queue) is None
