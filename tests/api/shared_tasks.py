"""The native side of the shared-queue test: the same task name Eventix's workers run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from eventix_operator import task


@task(name="shared_record")
def shared_record(n: int, seconds: float) -> int:
    time.sleep(seconds)
    record = Path(os.environ["EVENTIX_TEST_RECORD_DIR"]) / f"native-{os.getpid()}.log"
    with record.open("a") as f:
        f.write(f"{n}\n")
    return n
