"""The ``@task`` decorator and the registry a worker runs tasks from."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, overload

from eventix_operator.client import enqueue


@dataclass(frozen=True)
class TaskFunction:
    """A registered callable. Calling it runs it here; ``delay`` enqueues it."""

    name: str
    func: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    #: Known once: the worker asks for every task it runs.
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.func))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> str:
        """Enqueue with the decorator's options, like Eventix's ``.delay()``."""
        return enqueue(self.name, args, kwargs, **self.options)

    def enqueue(
        self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> str:
        return enqueue(self.name, tuple(args), kwargs, **(self.options | options))


class Registry:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskFunction] = {}

    def add(self, task: TaskFunction) -> None:
        existing = self._tasks.get(task.name)
        if existing is not None and existing.func is not task.func:
            raise ValueError(f"two tasks are registered as {task.name!r}")
        self._tasks[task.name] = task

    def get(self, name: str) -> TaskFunction | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


#: Where ``@task`` registers; a worker loads modules and then reads it.
default_registry = Registry()


@overload
def task(func: Callable[..., Any], /) -> TaskFunction: ...
@overload
def task(
    *, name: str | None = None, registry: Registry | None = None, **options: Any
) -> Callable[[Callable[..., Any]], TaskFunction]: ...
def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> TaskFunction | Callable[[Callable[..., Any]], TaskFunction]:
    """Register a sync or async callable as a task.

    The default name is ``module.qualname``, which is what a worker on another
    machine imports too; ``name=`` keeps a stable name across refactors. Other
    keywords (``queue``, ``priority``, ``max_retries``, …) are the defaults of
    ``.delay()``.
    """

    def register(f: Callable[..., Any]) -> TaskFunction:
        wrapped = TaskFunction(name or f"{f.__module__}.{f.__qualname__}", f, dict(options))
        (default_registry if registry is None else registry).add(wrapped)
        return wrapped

    return register(func) if func is not None else register


def load_task_modules(modules: Iterable[str], registry: Registry | None = None) -> Registry:
    """Import the modules that define tasks; a missing module is a clear error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"cannot import task module {module!r}: {exc}") from exc
    return default_registry if registry is None else registry
