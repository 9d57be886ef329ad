from datetime import UTC, datetime, timedelta

import pytest

from eventix_operator.client import new_task
from eventix_operator.db.enqueue import NewTask, insert_params, merge_duplicates
from eventix_operator.db.payload import PayloadTooLarge


def test_eta_and_delay_together_is_an_error() -> None:
    with pytest.raises(ValueError, match="eta or delay"):
        new_task("t", eta=datetime.now(UTC), delay=3)


def test_naive_eta_is_utc() -> None:
    t = new_task("t", eta=datetime(2030, 1, 1, 12, 0))
    assert t.eta == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"args": "abc"}, "args must be a sequence"),
        ({"kwargs": [1]}, "kwargs must be a mapping"),
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"delay": -1}, "delay must be >= 0"),
        ({"timeout_seconds": 0}, "timeout_seconds must be > 0"),
    ],
)
def test_bad_options_name_the_option(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        new_task("t", **kwargs)  # type: ignore[arg-type]


def test_unserialisable_args_are_refused_with_the_task_name() -> None:
    with pytest.raises(TypeError, match="args of mytask is not JSON-serialisable"):
        insert_params([NewTask("mytask", args=(object(),))], payload_limit=1000)


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="over the 100 byte limit"):
        insert_params([NewTask("t", kwargs={"blob": "x" * 200})], payload_limit=100)


def test_duplicates_in_one_batch_merge_like_eventix() -> None:
    now = datetime.now(UTC)
    batch = [
        NewTask(
            "t", args=(1,), queue="q", unique_key="k", priority=5, eta=now + timedelta(hours=1)
        ),
        NewTask(
            "t", args=(2,), queue="q", unique_key="k", priority=1, eta=now + timedelta(hours=2)
        ),
        NewTask("t", args=(3,), queue="other", unique_key="k"),
        NewTask("t", args=(4,)),
    ]
    merged, mapping = merge_duplicates(batch)
    assert len(merged) == 3
    assert mapping == {0: 0, 1: 0, 2: 1, 3: 2}
    first = merged[0]
    assert first.uid == batch[0].uid  # one task, one uid
    assert first.args == (2,)  # newest args
    assert first.priority == 1  # lowest priority number
    assert first.eta == now + timedelta(hours=1)  # earliest eta
