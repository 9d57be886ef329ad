"""The dashboard's pure parts: sessions and CSRF tokens, the origin check, filters
from query strings, cursors, formatting and the SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventix_operator.api.ui.auth import Sessions, same_origin
from eventix_operator.api.ui.pages import _note, filter_params, parse_filter
from eventix_operator.api.ui.views import (
    approx,
    duration,
    pool_chart,
    rate,
    throughput_chart,
)
from eventix_operator.db.dashboard import Cursor, PoolRecord, PoolSample, TaskFilter, Throughput

NOW = 1_800_000_000.0


def sessions(token: str | None = "a-token-of-some-length") -> Sessions:
    return Sessions(token=token, anonymous_secret="db-url", lifetime_seconds=3600)


def test_a_session_reads_back_until_it_expires() -> None:
    s = sessions()
    session, cookie = s.issue(now=NOW)
    assert s.read(cookie, now=NOW + 10) == session
    assert s.read(cookie, now=NOW + 3601) is None
    assert s.read(cookie, now=NOW - 3600) is None  # from the future: a forged start
    assert session.who == f"session {session.sid[:8]}"
    assert "a-token" not in cookie


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.replace("v1.", "v2.", 1),
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
        lambda c: ".".join([*c.split(".")[:2], "other", c.split(".")[3]]),
        lambda c: "",
        lambda c: "v1..x.y",
    ],
)
def test_a_changed_cookie_is_no_session(change: object) -> None:
    s = sessions()
    _, cookie = s.issue(now=NOW)
    assert s.read(change(cookie), now=NOW) is None  # type: ignore[operator]


def test_sessions_and_csrf_tokens_belong_to_one_token() -> None:
    first, second = sessions("token-one-0123456789"), sessions("token-two-0123456789")
    session, cookie = first.issue(now=NOW)
    assert second.read(cookie, now=NOW) is None
    token = first.csrf_token(session)
    assert first.check_csrf(session, token)
    assert not second.check_csrf(session, token)
    other, _ = first.issue(now=NOW)
    assert not first.check_csrf(other, token)
    assert not first.check_csrf(session, None)
    assert not first.check_csrf(session, "")


def test_the_login_takes_exactly_the_token() -> None:
    s = sessions("the-token-0123456789")
    assert s.check_token("the-token-0123456789")
    assert s.check_token(" the-token-0123456789\n")  # pasted with a newline
    assert not s.check_token("the-token")
    assert not s.check_token("")
    anonymous = sessions(None)
    assert anonymous.anonymous
    assert anonymous.issue(now=NOW)[0].who == "anonymous"
    assert anonymous.fingerprint == "none"


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({}, True),
        ({"host": "h:1", "origin": "http://h:1"}, True),
        ({"host": "h:1", "origin": "http://evil"}, False),
        ({"host": "h:1", "origin": "null"}, False),
        ({"sec-fetch-site": "same-origin"}, True),
        ({"sec-fetch-site": "cross-site"}, False),
        ({"sec-fetch-site": "same-site"}, False),
        ({"host": "internal:8000", "x-forwarded-host": "eventix.example",
          "origin": "https://eventix.example"}, True),
    ],
)  # fmt: skip
def test_same_origin(headers: dict[str, str], same: bool) -> None:
    assert same_origin(headers) is same


def test_filters_come_from_the_query_and_go_back_into_links() -> None:
    params = {
        "queue": ["mails"],
        "status": ["error", "retry", "bogus"],
        "origin": ["k8s"],
        "task": [" send "],
        "since": ["2026-11-24T10:00"],
        "until": ["tomorrow"],
    }
    where, problems = parse_filter(params)
    assert where == TaskFilter(
        queue="mails",
        statuses=("error", "retry"),
        task="send",
        sources=("k8s",),
        since=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
    )
    assert problems == ["unknown status bogus", "until is not a time (YYYY-MM-DDTHH:MM, UTC)"]
    again, _ = parse_filter(
        {k: [v] if isinstance(v, str) else v for k, v in _group(filter_params(where)).items()}
    )
    assert again == where


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def test_a_cursor_survives_a_link_and_junk_is_no_cursor() -> None:
    cursor = Cursor(
        datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC),
        "0" * 8 + "-0000-4000-8000-" + "0" * 12,
    )
    assert Cursor.decode(cursor.encode()) == cursor
    for junk in ("", "x", "2026-11-24T10:00:00_notauid", f"2026-11-24T10:00:00_{cursor.uid}"):
        assert Cursor.decode(junk) is None  # the last: a time without its zone


def test_notes_are_chosen_by_code_never_taken_from_the_request() -> None:
    assert _note({"note": ["retry:3:2"]}) == (
        "Retried 3 task(s): they run again, with fresh attempts. 2 left as they were (in a "
        "state the action does not apply to, or owned by a resource)."
    )
    assert _note({"note": ["pause:1"]}) == (
        "Paused the queue: none of its tasks starts until it is resumed; running ones finish."
    )
    assert _note({"note": ["<script>:1:0"]}) is None
    assert _note({"note": ["cancel:<b>:0"]}) is None
    assert _note({}) is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.25, "250 ms"), (4.25, "4.2 s"), (42, "42 s"), (125, "2 min 5 s"), (3600, "1 h"),
     (7260, "2 h 1 min"), (3 * 86400 + 7200, "3 d 2 h"), (-90, "1 min 30 s"), (None, "—")],
)  # fmt: skip
def test_durations_read_as_people_say_them(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("count", "per", "shown"),
    [(10, 1.0, "10 / 1 s"), (5, 2.5, "5 / 2.5 s"), (600, 60.0, "600 / 1 min"),
     (1000, 3600.0, "1,000 / 1 h"), (None, None, "—")],
)  # fmt: skip
def test_rate_limits_read_as_the_cli_takes_them(
    count: int | None, per: float | None, shown: str
) -> None:
    assert rate(count, per) == shown


def test_estimates_are_rounded_as_estimates() -> None:
    assert approx(1234) == "≈ 1,234"
    assert approx(312_456) == "≈ 312k"
    assert approx(1_234_567) == "≈ 1.2M"


def test_the_throughput_chart_is_svg_with_a_bar_and_a_tooltip_per_minute() -> None:
    minutes = [datetime(2026, 11, 24, 10, m, tzinfo=UTC) for m in range(60)]
    flow = Throughput(
        minutes, {"": [m % 7 for m in range(60)]}, {"": [1 if m == 5 else 0 for m in range(60)]}
    )
    svg = str(throughput_chart(flow))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert svg.count("<g><title>") == 60
    assert "10:05 UTC: 5 done, 1 failed" in svg
    assert svg.count('class="bar-failed"') == 1
    assert "<script" not in svg
    assert "style=" not in svg


def test_the_pool_chart_draws_replicas_as_steps_and_escapes_nothing_it_should_not() -> None:
    minutes = [datetime(2026, 11, 24, 10, m, tzinfo=UTC) for m in range(60)]
    samples = [PoolSample(minutes[m], 3, 2 if m < 50 else 3, 40 - m // 2, 1) for m in range(30, 60)]
    svg = str(pool_chart(samples, minutes))
    assert svg.count("<polyline") == 2
    assert svg.count('class="bar-depth"') == 30
    assert "queue depth: top of the scale is 50" in svg


def test_the_rule_a_pool_is_shown_against() -> None:
    pool = PoolRecord(
        "u", "ns", "p", "Deployment", "w", ["q"], 1, 5, 10, 1, 300.0, 2, 2, 35, 4, 2,
        True, "Scaling", "ok", None, datetime.now(UTC) - timedelta(seconds=3),
    )  # fmt: skip
    assert pool.wanted_by_rule == 4  # ceil(39 / 10)
