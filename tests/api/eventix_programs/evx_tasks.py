"""Tasks as an Eventix application writes them (run by Eventix's TaskWorker).

This directory runs under the unmodified ``eventix`` client in its own venv;
nothing here imports eventix_operator.
"""

import os
import time
from pathlib import Path

from eventix.functions.core import task


@task()
def add(a, b):
    return a + b


@task(max_retries=1, error_eta_inc=1)
def flaky():
    raise ValueError("boom")


@task(unique_key_generator=lambda key, value: f"uk-{key}")
def keyed(key, value):
    return value


@task()
def shared_record(n, seconds):
    """The task HTTP and native workers share: notes who ran it."""
    time.sleep(seconds)
    record = Path(os.environ["EVENTIX_TEST_RECORD_DIR"]) / f"http-{os.getpid()}.log"
    with record.open("a") as f:
        f.write(f"{n}\n")
    return n
