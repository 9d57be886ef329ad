"""When a failed task runs again: Eventix's exponential backoff, capped."""

from __future__ import annotations


def retry_delay(
    *,
    attempts: int,
    max_retries: int | None,
    retry: bool,
    backoff_seconds: int,
    max_backoff_seconds: int,
) -> float | None:
    """Seconds until the next attempt after attempt number ``attempts`` failed,
    or None when the task has no attempt left.

    ``max_retries`` counts retries after the first run (None: retry forever, as
    Eventix does). The n-th retry waits ``min(backoff * 2**(n-1), max_backoff)``.
    """
    if not retry or (max_retries is not None and attempts > max_retries):
        return None
    exponent = max(attempts - 1, 0)
    # 2**exponent grows without bound for retry-forever tasks; the cap makes
    # anything past 2**64 irrelevant, and keeps the float finite.
    if exponent >= 64:
        return float(max_backoff_seconds)
    return float(min(backoff_seconds * 2**exponent, max_backoff_seconds))
