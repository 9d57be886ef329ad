"""Tenancy: which Eventix queues the resources of a Kubernetes namespace may use.

The one rule (docs/tenancy.md), as pure functions of a namespace, a queue and the
policy. The operator applies it to everything a resource enqueues: an
``EventixTask``, the template of an ``EventixSchedule`` (when the schedule is
applied, not at each tick) and of an ``EventixTrigger``, which also sees only the
events of queues its namespace may use (:func:`like_patterns`, for the lookup).

- ``shared``: every namespace may use every queue; a resource without a queue gets
  ``default``. One team per cluster, and ``eventix local`` (no cluster at all).
- ``namespaced`` (the default): namespace ``team-a`` may use the queue ``team-a``,
  every queue starting with ``team-a.``, and what the allow-list grants it (or
  grants ``*``, every namespace); a resource without a queue gets ``team-a``.

Why a dot: Kubernetes namespace names cannot hold one, so ``team-a.reports``
belongs to namespace ``team-a`` alone. With ``-`` namespace ``team`` would own
``team-a``, the queue of namespace ``team-a``.

An allow-list entry is a queue name, a prefix followed by ``*`` (``reports-*``), or
``*`` alone (every queue): entries are checked when the settings are read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from eventix_operator.settings import Settings

__all__ = [
    "QUEUE_NOT_ALLOWED",
    "SEPARATOR",
    "SHARED",
    "QueuePattern",
    "TenancyPolicy",
    "allowed_queues",
    "default_queue",
    "like_patterns",
    "queue_refusal",
]

#: The condition reason (and event reason) of a resource refused by the rule.
QUEUE_NOT_ALLOWED = "QueueNotAllowed"
#: Between a namespace's name and the rest of the name of a queue it owns.
SEPARATOR = "."
#: The allow-list key that grants a queue to every namespace.
EVERY_NAMESPACE = "*"


@dataclass(frozen=True, slots=True)
class QueuePattern:
    """A queue name, or a prefix of queue names (written with a trailing ``*``)."""

    text: str

    @property
    def prefix(self) -> str | None:
        return self.text[:-1] if self.text.endswith("*") else None

    def matches(self, queue: str) -> bool:
        prefix = self.prefix
        return queue == self.text if prefix is None else queue.startswith(prefix)

    def like(self) -> str:
        """The same test as a SQL ``LIKE`` pattern (``_`` and ``%`` of a name escaped)."""
        prefix = self.prefix
        literal = self.text if prefix is None else prefix
        escaped = literal.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped if prefix is None else escaped + "%"


@dataclass(frozen=True, slots=True)
class TenancyPolicy:
    """The operator's tenancy settings (``EVENTIX_TENANCY``, ``EVENTIX_TENANCY_ALLOW``)."""

    mode: Literal["namespaced", "shared"] = "namespaced"
    allow: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TenancyPolicy:
        allow = {ns: tuple(queues) for ns, queues in settings.tenancy_allow.items()}
        return cls(settings.tenancy, allow)


#: Every namespace may use every queue.
SHARED = TenancyPolicy("shared")


def default_queue(namespace: str, policy: TenancyPolicy) -> str:
    """The queue of a resource that names none: its namespace's own, or ``default``."""
    return namespace if policy.mode == "namespaced" else "default"


def allowed_queues(namespace: str, policy: TenancyPolicy) -> tuple[QueuePattern, ...] | None:
    """What the resources of ``namespace`` may use; None: every queue."""
    if policy.mode == "shared":
        return None
    granted = [*policy.allow.get(namespace, ()), *policy.allow.get(EVERY_NAMESPACE, ())]
    if "*" in granted:
        return None
    own = (namespace, f"{namespace}{SEPARATOR}*")
    return tuple(QueuePattern(t) for t in dict.fromkeys([*own, *granted]))


def queue_refusal(namespace: str, queue: str, policy: TenancyPolicy) -> str | None:
    """Why the resources of ``namespace`` may not use ``queue`` (None: they may)."""
    patterns = allowed_queues(namespace, policy)
    if patterns is None or any(p.matches(queue) for p in patterns):
        return None
    return (
        f"namespace {namespace!r} may not use queue {queue!r}; it may use "
        f"{', '.join(p.text for p in patterns)} (EVENTIX_TENANCY=namespaced; the operator's "
        "EVENTIX_TENANCY_ALLOW grants more)"
    )


def like_patterns(namespace: str, policy: TenancyPolicy) -> list[str] | None:
    """:func:`allowed_queues` as SQL ``LIKE`` patterns, for a lookup that must filter
    in the database; None: every queue."""
    patterns = allowed_queues(namespace, policy)
    return None if patterns is None else [p.like() for p in patterns]
