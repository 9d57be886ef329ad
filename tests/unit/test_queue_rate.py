"""Rate limits as people write them: COUNT/SECONDS, with s, m, h for one unit."""

from __future__ import annotations

import pytest

from eventix_operator.db.queues import parse_rate


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10/1", (10, 1.0)),
        ("10/s", (10, 1.0)),
        ("100/m", (100, 60.0)),
        ("5/2.5", (5, 2.5)),
        (" 3/h ", (3, 3600.0)),
        ("none", None),
        ("NONE", None),
    ],
)
def test_rates_that_parse(text: str, parsed: tuple[int, float] | None) -> None:
    assert parse_rate(text) == parsed


@pytest.mark.parametrize("text", ["10", "0/1", "-1/1", "10/0", "10/-1", "x/1", "10/y", "1.5/1",
                                  "10/nan", "10/inf"])  # fmt: skip
def test_rates_that_do_not(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)
