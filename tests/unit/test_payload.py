"""What jsonb cannot hold is found before it is sent, and said with its place."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from eventix_operator.db.payload import (
    NotStorable,
    PayloadTooLarge,
    clean,
    dump_error,
    dump_json,
)


def dump(value: Any, limit: int = 1_000_000) -> str:
    return dump_json(value, what="the result of t", root="result", limit=limit)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", "contains a character PostgreSQL cannot store (NUL, \\x00) at result"),
        ({"a": [1, 2, "x\x00"]}, 'at result["a"][2]'),
        ({"k\x00": 1}, "(NUL, \\x00) in the key 'k\\x00' at result"),
        (["\ud800"], "cannot store (a lone surrogate, '\\ud800') at result[0]"),
        (
            {"x": math.nan},
            "not JSON-serialisable: Out of range float values are not JSON compliant",
        ),
        ([1, math.inf], "(at result[1])"),
        ({"x": object()}, "not JSON-serialisable: Object of type object is not JSON serializable"),
    ],
)
def test_values_jsonb_refuses_are_named_with_their_place(value: Any, message: str) -> None:
    with pytest.raises(NotStorable) as raised:
        dump(value)
    assert message in str(raised.value)
    assert "\x00" not in str(raised.value)


def test_what_jsonb_holds_passes_unchanged() -> None:
    value = {"emoji": "\U0001f600", "text": "back\\u0000slash", "n": [1, 2.5, None, True]}
    assert json.loads(dump(value)) == value


def test_the_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="over the 10 byte limit"):
        dump("x" * 20, limit=10)


def test_errors_are_cleaned_not_refused() -> None:
    error = {"type": "E\x00", "message": "a\x00b", "traceback": "\ud800", "n": math.nan,
             "obj": object, "k\x00": [math.inf]}  # fmt: skip
    stored = json.loads(dump_error(error))
    assert stored["type"] == "E\\x00"
    assert stored["message"] == "a\\x00b"
    assert stored["traceback"] == "\ufffd"
    assert stored["n"] == "nan"
    assert stored["obj"] == "<class 'object'>"
    assert stored["k\\x00"] == ["inf"]
    plain = {"type": "E", "message": "m"}
    assert json.loads(dump_error(plain)) == plain
    assert clean(plain) == plain
