"""eventix-operator: Eventix tasks and schedules on PostgreSQL, the Kubernetes way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventix_operator.client import enqueue, enqueue_many
    from eventix_operator.registry import task
    from eventix_operator.running import current_task

__all__ = ["current_task", "enqueue", "enqueue_many", "task"]
__version__ = "0.1.0"

#: Loaded on first use: the command line imports this package, and most of its
#: commands need neither SQLAlchemy nor the task registry.
_LAZY = {
    "enqueue": "eventix_operator.client",
    "enqueue_many": "eventix_operator.client",
    "task": "eventix_operator.registry",
    "current_task": "eventix_operator.running",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventix_operator' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
