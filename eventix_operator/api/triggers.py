"""Events and triggers in the API process: Eventix's code triggers, the table's
declarative triggers, and the counters of both.

Eventix's trigger configuration is YAML (``triggers:`` → name → ``event_name``,
``namespace``, ``trigger_type``, ``code``), where ``code`` defines
``execute(self, event)`` returning a ``TEventixTask`` or calling
``self.ignore()``. That code was written against the globals of Eventix's
``eventix.pydantic.event`` module (``TEventixTask`` without an import, for one),
so it runs here with the same names bound to our equivalents. It is the
deployer's own configuration and runs with the server's rights, as in Eventix:
only trusted files belong in ``EVENTIX_TRIGGER_CONFIG_DIRECTORY``. Code is
compiled once at start, and a file that does not compile stops the start with a
message naming it, rather than failing every event later.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import inspect
import logging
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import BaseModel, Field, ValidationError

from eventix_operator.api.convert import new_task
from eventix_operator.api.models import EventixEventIn, EventixTaskIn
from eventix_operator.db.enqueue import NewTask
from eventix_operator.db.triggers import EventContext, TriggerOutcome
from eventix_operator.logs import get_logger

log = get_logger("eventix.api.triggers")


class TriggerIgnored(Exception):
    """Raised by ``self.ignore()``: the trigger has nothing to do with this event."""

    def __init__(self, name: str) -> None:
        super().__init__(f"[{name}] Trigger ignored.")


class TriggerConfigError(RuntimeError):
    """A trigger file that cannot be used; the message names the file and trigger."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _code_globals() -> dict[str, Any]:
    """The names Eventix trigger code finds without importing them."""
    return {
        "__builtins__": builtins,
        "__name__": "eventix_trigger",
        "datetime": datetime,
        "inspect": inspect,
        "logging": logging,
        "textwrap": textwrap,
        "log": logging.getLogger("eventix.trigger"),
        "Any": Any,
        "Callable": Callable,
        "Literal": Literal,
        "Type": type,
        "BaseModel": BaseModel,
        "Field": Field,
        "TEventixTask": EventixTaskIn,
        "TEventixEvent": EventixEventIn,
        "TEventixEventTrigger": CodeTrigger,
        "TriggerIgnored": TriggerIgnored,
        "utcnow": _utcnow,
    }


@dataclass
class CodeTrigger:
    """An Eventix trigger from YAML; it is the ``self`` its code receives."""

    name: str
    event_name: str
    code: str
    namespace: str | None = "default"
    trigger_type: str | None = "default"
    source: str = ""
    execute: Callable[[Any, Any], Any] = field(repr=False, default=lambda s, e: None)

    def ignore(self) -> NoReturn:
        raise TriggerIgnored(self.name)

    def run(self, event: EventixEventIn) -> EventixTaskIn | None:
        """The task this trigger makes of ``event``; None when it ignores the event."""
        try:
            value = self.execute(self, event)
        except Exception as exc:
            if type(exc).__name__ == "TriggerIgnored":  # ours, or Eventix's own class
                return None
            raise
        return as_task(value)


def as_task(value: Any) -> EventixTaskIn | None:
    """Accept what Eventix code returns: our task model, Eventix's own (when the
    ``eventix`` package is importable here), a dict, or None for 'ignored'."""
    if value is None or isinstance(value, EventixTaskIn):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return EventixTaskIn.model_validate(value)
    raise TypeError(f"execute() returned {type(value).__name__}, not a task")


_TRIGGER_KEYS = {
    "event_name",
    "code",
    "namespace",
    "trigger_type",
    "name",
    "uid",
    "revision",
    "version",
    "created_time",
    "updated_time",
}


def load_code_triggers(directory: str | Path) -> dict[str, dict[str, CodeTrigger]]:
    """Triggers of every ``*.yaml``/``*.yml`` file in ``directory``, by event name
    then trigger name (a later file's trigger of the same name replaces an
    earlier one, as Eventix registers them)."""
    found: dict[str, dict[str, CodeTrigger]] = {}
    root = Path(directory)
    if not root.is_dir():
        raise TriggerConfigError(f"trigger config directory {root} does not exist")
    for path in sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TriggerConfigError(f"{path}: not valid YAML: {exc}") from exc
        triggers = data.get("triggers", {}) if isinstance(data, dict) else None
        if not isinstance(triggers, dict):
            raise TriggerConfigError(f"{path}: `triggers` must map trigger names to triggers")
        for name, spec in triggers.items():
            trigger = _compile(path, str(name), spec)
            found.setdefault(trigger.event_name, {})[trigger.name] = trigger
            log.info(
                "trigger registered",
                trigger=trigger.name,
                event_name=trigger.event_name,
                file=str(path),
            )
    return found


def _compile(path: Path, name: str, spec: Any) -> CodeTrigger:
    where = f"{path}: trigger {name}"
    if not isinstance(spec, dict):
        raise TriggerConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(spec) - _TRIGGER_KEYS)
    if unknown:
        raise TriggerConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    event_name, code = spec.get("event_name"), spec.get("code")
    if not isinstance(event_name, str) or not event_name:
        raise TriggerConfigError(f"{where}: needs an event_name")
    if not isinstance(code, str) or not code.strip():
        raise TriggerConfigError(f"{where}: needs code defining execute(self, event)")
    scope = _code_globals()
    try:
        exec(compile(textwrap.dedent(code), f"<trigger {name} in {path.name}>", "exec"), scope)
    except Exception as exc:
        raise TriggerConfigError(f"{where}: code does not load: {exc!r}") from exc
    execute = scope.get("execute")
    if not callable(execute):
        raise TriggerConfigError(f"{where}: code does not define execute(self, event)")
    return CodeTrigger(
        name=name,
        event_name=event_name,
        code=code,
        namespace=spec.get("namespace", "default"),
        trigger_type=spec.get("trigger_type", "default"),
        source=str(path),
        execute=execute,
    )


def event_context(event: EventixEventIn) -> EventContext:
    return EventContext(
        name=event.name or "TEventixEvent",
        namespace=event.namespace or "default",
        priority=event.priority or 0,
        operator=event.operator,
        payload=dict(event.payload or {}),
        timestamp=None if event.timestamp is None else event.timestamp.isoformat(),
        uid=event.uid,
    )


def from_event(task: NewTask, event: EventContext) -> NewTask:
    """Eventix's rule for a trigger's task: the event's priority and operator, and
    the event's queue unless the trigger named one other than ``default``."""
    queue = event.namespace if task.queue in ("", "default") else task.queue
    return dataclasses.replace(
        task, queue=queue, priority=event.priority, operator=event.operator, source="trigger"
    )


@dataclass(frozen=True, slots=True)
class CodeResult:
    trigger: str
    task: NewTask | None = None
    error: str | None = None


def run_code_triggers(
    triggers: Mapping[str, CodeTrigger], event: EventixEventIn, context: EventContext
) -> list[CodeResult]:
    """Run each code trigger of the event (in a worker thread: the code may block).
    One that fails or ignores the event does not stop the others."""
    results: list[CodeResult] = []
    for trigger in triggers.values():
        try:
            task = trigger.run(event)
        except ValidationError as exc:
            log.warning(
                "trigger returned an invalid task",
                trigger=trigger.name,
                event_name=context.name,
                error=str(exc)[:500],
            )
            results.append(CodeResult(trigger.name, error=f"invalid task: {exc}"))
            continue
        except Exception as exc:
            log.warning(
                "trigger failed", trigger=trigger.name, event_name=context.name, error=repr(exc)
            )
            results.append(CodeResult(trigger.name, error=repr(exc)))
            continue
        if task is None:
            log.info("trigger ignored the event", trigger=trigger.name, event_name=context.name)
            results.append(CodeResult(trigger.name))
            continue
        results.append(CodeResult(trigger.name, from_event(new_task(task), context)))
    return results


class TriggerStats:
    """Counters of what triggers did in this process.

    Code triggers are counted here only (they have no row). Table triggers'
    outcomes are also queued for their row, and written in one statement about
    once a second rather than in each event's transaction, so that a busy
    trigger's row is not a lock every event waits for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = {}
        self._pending: list[TriggerOutcome] = []

    def count(self, trigger: str, outcome: str) -> None:
        with self._lock:
            self.counts.setdefault(trigger, Counter())[outcome] += 1

    def queue(self, outcome: TriggerOutcome) -> None:
        with self._lock:
            self._pending.append(outcome)

    def drain(self) -> list[TriggerOutcome]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def requeue(self, outcomes: list[TriggerOutcome]) -> None:
        with self._lock:
            self._pending[:0] = outcomes

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(c) for name, c in self.counts.items()}
