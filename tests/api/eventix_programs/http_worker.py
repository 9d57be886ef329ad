"""Eventix's TaskWorker draining a namespace until a stop file appears."""

import os
import sys
import time
from pathlib import Path

from common import configure
from eventix.functions.task_worker import TaskWorker

configure()
stop = Path(sys.argv[1])
worker = TaskWorker({"register_tasks": ["evx_tasks"], "namespace": os.environ["EVENTIX_NAMESPACE"]})
print("ready", flush=True)
while not stop.exists():
    worker.start(endless=False)
    time.sleep(0.05)
print("{}")
