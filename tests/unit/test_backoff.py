import pytest

from eventix_operator.retry import RetryPolicy


def delays(
    max_retries: int | None, inc: int = 15, cap: int = 300, n: int = 8
) -> list[float | None]:
    policy = RetryPolicy(retry=True, max_retries=max_retries, backoff_seconds=inc,
                         max_backoff_seconds=cap)  # fmt: skip
    return [policy.after_failure(a) for a in range(1, n + 1)]


def test_doubles_from_the_increment_up_to_the_cap() -> None:
    assert delays(None) == [15, 30, 60, 120, 240, 300, 300, 300]


def test_max_retries_counts_retries_after_the_first_run() -> None:
    # attempt 1 fails -> retry 1, attempt 2 fails -> retry 2, attempt 3 fails -> final
    assert delays(2, n=4) == [15, 30, None, None]


def test_zero_retries_fails_on_first_error() -> None:
    assert delays(0, n=1) == [None]


def test_retry_disabled() -> None:
    assert RetryPolicy(max_retries=None, retry=False, backoff_seconds=1,
                       max_backoff_seconds=1).after_failure(1) is None  # fmt: skip


@pytest.mark.parametrize("attempts", [65, 1000, 10**6])
def test_retry_forever_stays_finite_at_the_cap(attempts: int) -> None:
    assert RetryPolicy(max_retries=None, retry=True, backoff_seconds=15,
                       max_backoff_seconds=300).after_failure(attempts) == 300.0  # fmt: skip


def test_eventix_view_counts_retries_down_and_shows_the_next_wait() -> None:
    policy = RetryPolicy(max_retries=3, backoff_seconds=10, max_backoff_seconds=300)
    # claimed for the first time: no retry used yet, the first failure waits 10 s
    assert (policy.remaining("processing", 1), policy.next_wait("processing", 1)) == (3, 10)
    # that run failed and waits for its retry: one retry used, the next failure waits 20 s
    assert (policy.remaining("retry", 1), policy.next_wait("retry", 1)) == (2, 20)
    assert (policy.remaining("processing", 2), policy.next_wait("processing", 2)) == (2, 20)
    assert policy.remaining("error", 4) == 0
    assert RetryPolicy(max_retries=None).remaining("retry", 7) is None


def test_a_lost_worker_is_not_the_tasks_failure() -> None:
    assert RetryPolicy(retry=False, max_retries=2).run_left_after_loss(2)
    assert not RetryPolicy(retry=True, max_retries=2).run_left_after_loss(4)
    assert RetryPolicy(max_retries=None).run_left_after_loss(10**6)
