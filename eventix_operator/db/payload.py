"""JSON values as PostgreSQL will store them, checked before they are sent.

``jsonb`` cannot hold everything Python's ``json`` writes: no NUL character
(``\\u0000``), no lone surrogate, no NaN or infinity. A value the database would
refuse must not reach a batch statement, where it fails every row with it; so
user data (args, kwargs, results) is checked here and refused with a message
that says what and where (``result["a"][2]``), and what we write about a
failure (an error document) is cleaned instead, because the failure must be
recorded whatever its message holds.

The checks cost one ``json.dumps`` (which the statement needs anyway) and two
substring searches of its output; the value is walked only when the output
shows an escape that may be a refused character.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

#: Escapes in ``json.dumps`` output (ASCII-only) that may stand for a character
#: jsonb refuses: NUL, and the surrogates (paired ones are fine, lone ones not).
_SUSPECT = ("\\u0000", "\\ud")

#: What replaces a NUL character in a cleaned error: its escape, as text.
NUL_REPLACEMENT = "\\x00"


def load_json(data: str | bytes | bytearray | memoryview) -> Any:
    """``json.loads`` for every JSON value read from the database (the engines'
    deserializer). Most tasks' args or kwargs are ``[]`` or ``{}``: answered at once,
    they spare a claim of a thousand tasks two thousand parses; and text is parsed as
    ``str``, which spares ``json.loads`` its guess of the bytes' encoding."""
    if data == b"[]" or data == "[]":
        return []
    if data == b"{}" or data == "{}":
        return {}
    return json.loads(data if isinstance(data, str) else str(data, "utf-8"))


class PayloadTooLarge(ValueError):
    """Args, kwargs or a result exceed ``EVENTIX_MAX_PAYLOAD_BYTES``."""


class NotStorable(TypeError):
    """A value JSON or PostgreSQL cannot hold; the message says what and where."""


def dump_json(value: Any, *, what: str, root: str, limit: int) -> str:
    """JSON text of ``value`` as jsonb will take it, or :class:`NotStorable` /
    :class:`PayloadTooLarge` naming ``what`` and, under ``root``, where."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        where = next(_problems(value, root), None)
        at = f" (at {where[0]})" if where else ""
        raise NotStorable(f"{what} is not JSON-serialisable: {exc}{at}") from exc
    if _SUSPECT[0] in text or _SUSPECT[1] in text:
        for path, problem in _problems(value, root):
            raise NotStorable(f"{what} contains {problem} at {path}")
    if len(text) > limit:
        raise PayloadTooLarge(f"{what} is {len(text)} bytes of JSON, over the {limit} byte limit")
    return text


def dump_error(error: Any) -> str:
    """JSON text of an error document, cleaned so that the database stores it:
    NUL becomes the four characters ``\\x00``, a lone surrogate U+FFFD, a number
    that is not finite its name, anything JSON cannot hold its ``str``."""
    try:
        text = json.dumps(error, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(clean(error), separators=(",", ":"))
    if _SUSPECT[0] in text or _SUSPECT[1] in text:
        return json.dumps(clean(error), separators=(",", ":"))
    return text


def clean(value: Any) -> Any:
    """``value`` with everything jsonb refuses replaced (see :func:`dump_error`)."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {_clean_text(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return _clean_text(str(value))


def _clean_text(text: str) -> str:
    text = text.replace("\x00", NUL_REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def _problems(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(where, what) of each part of ``value`` that JSON or jsonb cannot hold."""
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            yield path, problem
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield path, f"{value!r}, a number JSON cannot hold"
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := _text_problem(key)):
                yield path, f"{problem} in the key {key!r}"
            elif not isinstance(key, str | int | float | bool) and key is not None:
                yield path, f"a key of type {type(key).__name__}"
            yield from _problems(item, f"{path}[{json.dumps(str(key))}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _problems(item, f"{path}[{i}]")
    elif not (value is None or isinstance(value, bool | int)):
        yield path, f"a value of type {type(value).__name__}"


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a character PostgreSQL cannot store (NUL, \\x00)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a character PostgreSQL cannot store (a lone surrogate, {text[exc.start]!r})"
    return None
