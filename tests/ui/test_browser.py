"""The dashboard in Chromium, against a real ``eventix api``, PostgreSQL and worker:
what a person sees and what happens when they click."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from eventix_operator import enqueue_many
from eventix_operator.db.enqueue import insert_tasks_once
from eventix_operator.resources import schedule_definition, task_from_spec
from eventix_operator.schedules.scheduler import apply_schedule
from tests.support.browser import settled, wait_until
from tests.support.processes import ROOT, Processes
from tests.ui.conftest import TOKEN, WORK_QUEUE, Page, Server, launch


def status_of(engine: Engine, uid: str) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT status FROM eventix_task WHERE uid = :u"), {"u": uid})
        return found.scalar()


def add(engine: Engine, *tasks: dict[str, Any]) -> list[str]:
    with engine.begin() as conn:
        return enqueue_many(tasks, connection=conn)


def test_signing_in_takes_the_token_and_nothing_else(browser: Any, server: Server) -> None:
    page = Page(browser, server).open("/ui/login")
    browser.delete_all_cookies()
    page.open("/ui/tasks?status=error")
    assert page.path.startswith("/ui/login?next=")
    page.css("#token").send_keys("not-the-token-at-all")
    page.click("#sign-in")
    assert "That is not the token" in page.text("main")
    page.css("#token").send_keys(TOKEN)
    page.click("#sign-in")
    page.arrive("/ui/tasks?status=error")  # back where the person was going
    (cookie,) = [c for c in browser.get_cookies() if c["name"] == "eventix_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert TOKEN not in cookie["value"]
    assert browser.execute_script("return document.cookie") == ""  # no script reads it


def test_the_overview_shows_a_queues_counts_after_tasks_are_enqueued(
    page: Page, server: Server, queue: str
) -> None:
    add(server.engine, *({"task": "tests.record", "args": [i], "queue": queue} for i in range(3)))
    add(server.engine, {"task": "tests.record", "args": [9], "queue": queue, "delay": 3600})
    page.open("/ui/")
    row = f"#queues tr[data-queue='{queue}']"
    assert page.text(f"{row} td[data-status=scheduled]") == "4"
    assert page.text(f"{row} td[data-status=done]") == "0"
    cells = page.texts(f"{row} td")
    assert cells[0] == "3"  # due: the delayed one is not
    # the count links to the tasks it counts
    page.click(f"{row} td[data-status=scheduled] a")
    assert len(page.all("#task-list tbody tr")) == 4
    # live: another task shows up without a reload
    page.open("/ui/")
    stamp = browser_refreshed(page)
    add(server.engine, {"task": "tests.record", "args": [4], "queue": queue})
    wait_until(
        "the live refresh",
        lambda: (
            browser_refreshed(page) != stamp
            and page.text(f"{row} td[data-status=scheduled]") == "5"
        ),
    )


def browser_refreshed(page: Page) -> str | None:
    value = page.driver.execute_script("return document.body.getAttribute('data-refreshed')")
    return None if value is None else str(value)


def test_a_failed_tasks_page_shows_its_error(
    page: Page, server: Server, workers: Processes
) -> None:
    marker = f"kaboom-{uuid.uuid4().hex[:6]}"
    (uid,) = add(
        server.engine,
        {"task": "tests.fail", "kwargs": {"message": marker}, "queue": WORK_QUEUE,
         "max_retries": 0},
    )  # fmt: skip
    wait_until("the failure", lambda: status_of(server.engine, uid) == "error")
    page.open(f"/ui/tasks?queue={WORK_QUEUE}&status=error")
    page.click(f"#task-list tr[data-uid='{uid}'] a")
    page.arrive(f"/ui/tasks/{uid}")
    assert page.text("#task-status") == "error"
    assert page.text("#error-type") == "ValueError"
    assert page.text("#error-message") == marker
    assert f"ValueError: {marker}" in page.text("#traceback")
    assert json.loads(page.text("#kwargs")) == {"message": marker}
    assert page.has("#retry")
    assert page.has("#delete")
    assert not page.has("#cancel")  # it is not pending


def test_clicking_retry_runs_the_task_again(page: Page, server: Server, workers: Processes) -> None:
    key = uuid.uuid4().hex[:8]
    (uid,) = add(
        server.engine,
        {"task": "tests.fail_once", "args": [key], "queue": WORK_QUEUE, "max_retries": 0},
    )
    wait_until("the first failure", lambda: status_of(server.engine, uid) == "error")
    page.open(f"/ui/tasks/{uid}")
    assert "first run of" in page.text("#error-message")
    page.click("#retry")
    page.arrive(f"/ui/tasks/{uid}?note=retry", exact=False)
    assert "Retried 1 task" in page.text(".note")
    page.wait_text("#task-status", "done")
    assert json.loads(page.text("#result")) == f"{key} made it"
    assert page.text("#attempts").startswith("1")  # attempts start afresh


def test_a_filter_narrows_the_list(page: Page, server: Server, queue: str) -> None:
    uids = add(
        server.engine,
        *({"task": "reports.daily", "args": [i], "queue": queue} for i in range(3)),
        *({"task": "mail.send", "args": [i], "queue": queue} for i in range(4)),
    )
    with server.engine.begin() as conn:  # one of the mails has run
        conn.execute(text("UPDATE eventix_task SET status = 'done' WHERE uid = :u"), {"u": uids[3]})
    page.open(f"/ui/tasks?queue={queue}")
    assert len(page.all("#task-list tbody tr")) == 7
    page.css("#f-task").send_keys("mail.send")
    page.click("#apply-filter")
    rows = page.texts("#task-list tbody tr")
    assert len(rows) == 4
    assert all("mail.send" in r for r in rows)
    from selenium.webdriver.support.ui import Select

    Select(page.css("#f-status")).select_by_value("scheduled")
    page.click("#apply-filter")
    shown = settled(lambda: {r.get_attribute("data-uid") for r in page.all("#task-list tbody tr")})
    assert shown == set(uids[4:])
    assert "status=scheduled" in page.path
    assert "task=mail.send" in page.path  # a URL a person can share
    # the first digits of a uid find it
    page.css("#f-uid").send_keys(uids[0][:10])
    page.submit("#f-uid")
    page.arrive(f"/ui/tasks/{uids[0]}")


def test_the_schedule_page_shows_the_fire_times_of_eventix_schedule_preview(
    page: Page, server: Server
) -> None:
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    definition = schedule_definition(
        {"schedule": "30 2 * * *", "timeZone": "Europe/Berlin", "template": {"task": "nightly"}},
        uid=f"uid-{name}", namespace="team", name=name, generation=1,
        created_at=datetime.now(UTC),
    )  # fmt: skip
    with server.engine.begin() as conn:
        apply_schedule(conn, definition, datetime.now(UTC))
    page.open("/ui/schedules")
    page.click(f"tr[data-schedule='team/{name}'] a")
    assert page.text("#zone") == "Europe/Berlin"
    start = page.text("#preview-from")
    shown = settled(
        lambda: [
            [cell.text for cell in row.find_elements("css selector", "td")[:2]]
            for row in page.all("#fire-times tbody tr")
        ]
    )
    assert len(shown) == 10
    cli = subprocess.run(
        [sys.executable, "-m", "eventix_operator", "schedule", "preview", "30 2 * * *",
         "--tz", "Europe/Berlin", "--from", start, "--count", "10", "--output", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert shown == [[t["local"], t["utc"]] for t in json.loads(cli.stdout)]
    # GitOps: the page says where to suspend it and offers no switch
    assert "spec.suspend: true" in page.text(".owned")
    assert not page.has("#suspend")


def test_run_now_adds_a_manual_run_to_the_schedules_history(
    page: Page, server: Server, workers: Processes
) -> None:
    name = f"often-{uuid.uuid4().hex[:6]}"
    definition = schedule_definition(
        {"schedule": "0 0 1 1 *", "template": {"task": "tests.record", "args": [1],
                                               "queue": WORK_QUEUE}},
        uid=f"uid-{name}", namespace="team", name=name, generation=1,
        created_at=datetime.now(UTC),
    )  # fmt: skip
    with server.engine.begin() as conn:
        apply_schedule(conn, definition, datetime.now(UTC))
    page.open(f"/ui/schedules/uid-{name}")
    assert not page.has("#runs")
    page.click("#run-now", confirm=True)
    assert "Started a manual run" in page.text(".note")
    page.wait_text("#runs tbody tr", "done")
    assert "manual" in page.text("#runs tbody tr")


def test_bulk_retry_of_everything_a_filter_matches(page: Page, server: Server, queue: str) -> None:
    uids = add(server.engine, *({"task": "x", "args": [i], "queue": queue} for i in range(5)))
    with server.engine.begin() as conn:
        conn.execute(
            text("UPDATE eventix_task SET status = 'error' WHERE uid = ANY(CAST(:u AS uuid[]))"),
            {"u": uids[:3]},
        )
    page.open(f"/ui/tasks?queue={queue}&status=error")
    assert len(page.all("#task-list tbody tr")) == 3
    page.click("#bulk-matching", confirm=True)
    assert "Retried 3 task(s)" in page.text(".note")
    assert [status_of(server.engine, u) for u in uids] == ["scheduled"] * 5
    assert page.has("#no-tasks")  # the filter (errors) matches none now
    # the selection: tick two and cancel them
    page.open(f"/ui/tasks?queue={queue}")
    for uid in uids[:2]:
        box = f"#task-list tr[data-uid='{uid}'] input[name=uid]"
        settled(lambda b=box: page.css(b).click())  # type: ignore[misc]
    from selenium.webdriver.support.ui import Select

    Select(page.css("#bulk-action")).select_by_value("cancel")
    page.click("#bulk-selected", confirm=True)
    assert "Cancelled 2 task(s)" in page.text(".note")
    assert [status_of(server.engine, u) for u in uids[:3]] == [
        "cancelled",
        "cancelled",
        "scheduled",
    ]


def test_a_task_of_an_eventixtask_is_changed_in_git_not_here(
    page: Page, server: Server, queue: str
) -> None:
    spec = {"task": "reports.build", "queue": queue}
    task = task_from_spec(
        spec, source="k8s", k8s_namespace="team", k8s_name="build", k8s_uid=str(uuid.uuid4())
    )
    with server.engine.begin() as conn:
        insert_tasks_once(conn, [task], payload_limit=10**6)
        conn.execute(
            text("UPDATE eventix_task SET status = 'error' WHERE uid = :u"), {"u": task.uid}
        )
    page.open(f"/ui/tasks/{task.uid}")
    assert "Owned by EventixTask team/build" in page.text("#owner")
    assert "EventixTask team/build" in page.text("#origin")
    assert page.has("#retry")
    assert not page.has("#delete")  # Git would bring it back
    # asked anyway (a stale page, a crafted form): refused, and the row stays
    csrf = page.css("input[name=csrf]").get_attribute("value")
    cookie = next(c["value"] for c in page.driver.get_cookies() if c["name"] == "eventix_session")
    status, _, body = server.request(
        "POST", f"/ui/tasks/{task.uid}/delete", body=f"csrf={csrf}", cookie=cookie
    )
    assert status == 409
    assert "EventixTask team/build owns this task" in body
    assert status_of(server.engine, task.uid) == "error"


def test_an_action_without_the_csrf_token_is_refused(
    page: Page, server: Server, queue: str
) -> None:
    (uid,) = add(server.engine, {"task": "x", "queue": queue})
    page.open(f"/ui/tasks/{uid}")
    # a form whose token is gone (what a forged cross-site form would lack)
    page.driver.execute_script(
        "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())"
    )
    page.driver.execute_script(
        "window.confirm = () => true; document.getElementById('cancel').click()"
    )
    wait_until("the refusal", lambda: page.has("#refused"))
    assert "CSRF token is missing" in page.text("#refused")
    assert status_of(server.engine, uid) == "scheduled"
    # and a token of another session does not do either
    other = server.sign_in()
    page.open(f"/ui/tasks/{uid}")
    csrf = page.css("input[name=csrf]").get_attribute("value")
    status, _, _ = server.request(
        "POST", f"/ui/tasks/{uid}/cancel", body=f"csrf={csrf}", cookie=other
    )
    assert status == 403
    assert status_of(server.engine, uid) == "scheduled"


def test_read_only_hides_the_actions_and_the_server_refuses_them(
    browser: Any, server: Server, tmp_path: Path, queue: str
) -> None:
    (uid,) = add(server.engine, {"task": "x", "queue": queue})
    with server.engine.begin() as conn:
        conn.execute(text("UPDATE eventix_task SET status = 'error' WHERE uid = :u"), {"u": uid})
    with launch(
        server.database_url, tmp_path, EVENTIX_API_TOKEN=TOKEN, EVENTIX_UI_READ_ONLY="true"
    ) as read_only:
        page = Page(browser, read_only).sign_in()
        page.open(f"/ui/tasks/{uid}")
        assert page.text("#task-status") == "error"
        assert "read-only" in page.text("header")
        assert not page.all("#actions button")
        page.open(f"/ui/tasks?queue={queue}")
        assert not page.has("#bulk-matching")
        assert not page.has("#task-list input[name=uid]")
        page.open("/ui/schedules")
        csrf = page.css("input[name=csrf]").get_attribute("value")  # the sign-out form's
        cookie = next(c["value"] for c in browser.get_cookies() if c["name"] == "eventix_session")
        for path, body in (
            (f"/ui/tasks/{uid}/retry", f"csrf={csrf}"),
            ("/ui/tasks/bulk", f"csrf={csrf}&action=delete&scope=matching&queue={queue}"),
        ):
            status, _, text_ = read_only.request("POST", path, body=body, cookie=cookie)
            assert status == 403, path
            assert "read-only" in text_
        assert status_of(server.engine, uid) == "error"
        page.click("header button")  # signing out still works
        page.arrive("/ui/login", exact=False)


def test_pages_load_nothing_from_elsewhere_and_break_no_policy(page: Page, server: Server) -> None:
    page.console_errors()  # what earlier tests left (a refusal's 403 is logged as one)
    for path in ("/ui/", "/ui/queues", "/ui/tasks", "/ui/schedules", "/ui/pools", "/ui/triggers"):
        page.open(path)
        resources = page.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert resources
        assert all(r.startswith(server.url + "/ui/static/") for r in resources), resources
        assert page.console_errors() == [], path  # a CSP violation would be one


def queue_paused(engine: Engine, queue: str) -> bool | None:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT paused FROM eventix_queue WHERE name = :q"), {"q": queue})
        return found.scalar()


def test_pausing_and_resuming_a_queue_from_the_queues_page(
    page: Page, server: Server, queue: str
) -> None:
    add(server.engine, *({"task": "x", "args": [i], "queue": queue} for i in range(2)))
    page.open("/ui/")
    page.click("header nav a[href='/ui/queues']")
    page.arrive("/ui/queues")
    row = f"#queue-list tr[data-queue='{queue}']"
    assert page.text(f"{row} .state") == "active"
    assert page.text(f"{row} .due") == "2"
    assert page.text(f"{row} .owner") == "none"  # no settings yet
    page.click(f"{row} button.pause", confirm=True)
    page.arrive("/ui/queues?note=pause", exact=False)
    assert "Paused the queue" in page.text(".note")
    assert page.text(f"{row} .state") == "paused"
    assert page.text(f"{row} .owner") == "CLI/API"
    assert queue_paused(server.engine, queue) is True
    page.open("/ui/")  # the overview marks it
    assert page.text(f"#queues tr[data-queue='{queue}'] .paused") == "paused"
    page.open("/ui/queues")
    page.click(f"{row} button.resume")
    page.arrive("/ui/queues?note=resume", exact=False)
    assert "Resumed the queue" in page.text(".note")
    assert page.text(f"{row} .state") == "active"
    assert queue_paused(server.engine, queue) is False
    # the name leads to the queue's tasks
    page.click(f"{row} th a")
    page.arrive(f"/ui/tasks?queue={queue}")
    assert len(page.all("#task-list tbody tr")) == 2
