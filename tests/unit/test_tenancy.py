"""The tenancy rule: which queues the resources of a namespace may use."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from eventix_operator.settings import Settings
from eventix_operator.tenancy import (
    SHARED,
    QueuePattern,
    TenancyPolicy,
    allowed_queues,
    default_queue,
    like_patterns,
    queue_refusal,
)

NAMESPACED = TenancyPolicy("namespaced")
GRANTS = TenancyPolicy(
    "namespaced", {"team-a": ["mail", "legacy_reports-*"], "*": ["shared"], "platform": ["*"]}
)


@pytest.mark.parametrize(
    ("queue", "allowed"),
    [
        ("team-a", True),  # its own
        ("team-a.reports", True),  # below its own
        ("team-a.reports.v2", True),
        ("team-b", False),  # another team's
        ("team-b.reports", False),
        ("team-a-b", False),  # the queue of namespace team-a-b: `-` is no separator
        ("team", False),
        ("team-a.", True),  # the schema refuses it; the rule alone would allow it
        ("default", False),
        ("Team-a", False),  # queue names are case-sensitive
    ],
)
def test_namespaced_a_namespace_owns_its_queue_and_those_below_it(
    queue: str, allowed: bool
) -> None:
    refusal = queue_refusal("team-a", queue, NAMESPACED)
    assert (refusal is None) == allowed, refusal
    if not allowed:
        assert refusal == (
            f"namespace 'team-a' may not use queue {queue!r}; it may use team-a, team-a.* "
            "(EVENTIX_TENANCY=namespaced; the operator's EVENTIX_TENANCY_ALLOW grants more)"
        )


def test_the_default_namespace_keeps_the_default_queue() -> None:
    """Manifests applied to the namespace `default` (the README's) keep queue `default`."""
    assert default_queue("default", NAMESPACED) == "default"
    assert queue_refusal("default", "default", NAMESPACED) is None


def test_a_resource_without_a_queue_gets_one_it_may_use() -> None:
    for policy in (NAMESPACED, GRANTS, SHARED):
        for namespace in ("team-a", "default", "x"):
            queue = default_queue(namespace, policy)
            assert queue_refusal(namespace, queue, policy) is None
    assert default_queue("team-a", NAMESPACED) == "team-a"
    assert default_queue("team-a", SHARED) == "default"


def test_shared_allows_everything() -> None:
    assert allowed_queues("team-a", SHARED) is None
    assert like_patterns("team-a", SHARED) is None
    for queue in ("team-b", "default", "anything.at_all"):
        assert queue_refusal("team-a", queue, SHARED) is None


@pytest.mark.parametrize(
    ("namespace", "queue", "allowed"),
    [
        ("team-a", "mail", True),  # granted by name
        ("team-a", "mail.x", False),  # a name is not a prefix
        ("team-a", "legacy_reports-eu", True),  # granted by prefix
        ("team-a", "legacy_reports", False),
        ("team-a", "shared", True),  # granted to every namespace
        ("team-b", "shared", True),
        ("team-b", "mail", False),  # granted to team-a only
        ("team-b", "team-b.x", True),
        ("platform", "team-a", True),  # `*`: every queue
    ],
)
def test_the_allow_list_grants_more(namespace: str, queue: str, allowed: bool) -> None:
    assert (queue_refusal(namespace, queue, GRANTS) is None) == allowed


def test_allowed_queues_lists_own_then_granted_once() -> None:
    policy = TenancyPolicy("namespaced", {"team-a": ["team-a", "mail"], "*": ["mail"]})
    patterns = allowed_queues("team-a", policy)
    assert patterns is not None
    assert [p.text for p in patterns] == ["team-a", "team-a.*", "mail"]
    assert allowed_queues("platform", GRANTS) is None


def like_matches(pattern: str, text: str) -> bool:
    """SQL LIKE with the default escape character, as PostgreSQL reads it."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
            out += re.escape(pattern[i])
        elif c == "%":
            out += ".*"
        elif c == "_":
            out += "."
        else:
            out += re.escape(c)
        i += 1
    return re.fullmatch(out, text, re.DOTALL) is not None


@pytest.mark.parametrize(
    "text", ["team-a", "team-a.*", "legacy_reports-*", "mail", "a_b", "x%y", "back\\slash*"]
)
def test_like_patterns_say_what_matches_says(text: str) -> None:
    pattern = QueuePattern(text)
    for queue in ("team-a", "team-a.x", "teamXa", "legacy_reports-1", "legacyXreports-1", "mail",
                  "a_b", "aXb", "x%y", "xzzy", "back\\slash", "backXslash", "other"):  # fmt: skip
        assert like_matches(pattern.like(), queue) == pattern.matches(queue), (text, queue)


def test_settings_read_the_mode_and_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().tenancy == "namespaced"  # secure by default
    monkeypatch.setenv("EVENTIX_TENANCY", "shared")
    monkeypatch.setenv("EVENTIX_TENANCY_ALLOW", '{"team-a": ["mail", "x-*"], "*": ["shared"]}')
    policy = TenancyPolicy.from_settings(Settings())
    assert policy == TenancyPolicy("shared", {"team-a": ("mail", "x-*"), "*": ("shared",)})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EVENTIX_TENANCY", "per-team", "'namespaced' or 'shared'"),
        ("EVENTIX_TENANCY_ALLOW", '{"Team_A": ["x"]}', "neither a namespace name nor '*'"),
        ("EVENTIX_TENANCY_ALLOW", '{"a": ["x y"]}', "neither a queue name"),
        ("EVENTIX_TENANCY_ALLOW", '{"a": ["*x"]}', "neither a queue name"),
        ("EVENTIX_TENANCY_ALLOW", '{"a": ["x-"]}', "neither a queue name"),
        ("EVENTIX_TENANCY_ALLOW", '{"a": "x"}', "valid list"),
        ("EVENTIX_TENANCY_ALLOW", '["x"]', "valid dictionary"),
    ],
)
def test_bad_tenancy_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings()
