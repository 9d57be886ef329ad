import pytest

from eventix_operator.backoff import retry_delay


def delays(
    max_retries: int | None, inc: int = 15, cap: int = 300, n: int = 8
) -> list[float | None]:
    return [
        retry_delay(
            attempts=a,
            max_retries=max_retries,
            retry=True,
            backoff_seconds=inc,
            max_backoff_seconds=cap,
        )
        for a in range(1, n + 1)
    ]


def test_doubles_from_the_increment_up_to_the_cap() -> None:
    assert delays(None) == [15, 30, 60, 120, 240, 300, 300, 300]


def test_max_retries_counts_retries_after_the_first_run() -> None:
    # attempt 1 fails -> retry 1, attempt 2 fails -> retry 2, attempt 3 fails -> final
    assert delays(2, n=4) == [15, 30, None, None]


def test_zero_retries_fails_on_first_error() -> None:
    assert delays(0, n=1) == [None]


def test_retry_disabled() -> None:
    assert retry_delay(attempts=1, max_retries=None, retry=False, backoff_seconds=1,
                       max_backoff_seconds=1) is None  # fmt: skip


@pytest.mark.parametrize("attempts", [65, 1000, 10**6])
def test_retry_forever_stays_finite_at_the_cap(attempts: int) -> None:
    assert retry_delay(attempts=attempts, max_retries=None, retry=True, backoff_seconds=15,
                       max_backoff_seconds=300) == 300.0  # fmt: skip
