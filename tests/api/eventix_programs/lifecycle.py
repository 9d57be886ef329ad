"""An Eventix application's life cycle against the server: delay tasks, run them
with Eventix's own TaskWorker, read results back, unique keys, lookups."""

import json
import os
import time

import evx_tasks
from common import configure
from eventix.exceptions import NoTaskFoundForUniqueKey
from eventix.functions.eventix_client import EventixClient
from eventix.functions.task_scheduler import TaskScheduler
from eventix.functions.task_worker import TaskWorker

configure()
namespace = os.environ["EVENTIX_NAMESPACE"]
out = {}

added = evx_tasks.add.delay(2, 3)
flaky = evx_tasks.flaky.delay()
first = evx_tasks.keyed.delay("a", 1)
second = evx_tasks.keyed.delay("a", 2)
out["posted"] = {"uid": added.uid, "status": added.status, "namespace": added.namespace}
out["unique"] = {"same_uid": first.uid == second.uid, "args": list(second.args)}

found = EventixClient.get_task_by_unique_key_and_namespace("uk-a", namespace).json()
out["by_unique_key"] = {"uid": found["uid"], "status": found["status"]}
try:
    EventixClient.get_task_by_unique_key_and_namespace("uk-missing", namespace)
    out["missing_key"] = "no error"
except NoTaskFoundForUniqueKey as exc:
    out["missing_key"] = type(exc).__name__

worker = TaskWorker({"register_tasks": ["evx_tasks"], "namespace": namespace})
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    worker.start(endless=False)  # runs every due task, returns when none is left
    if TaskScheduler.task_get(flaky.uid).status == "error":
        break
    time.sleep(0.2)

for name, posted in (("add", added), ("flaky", flaky), ("keyed", second)):
    got = TaskScheduler.task_get(posted.uid)
    out[name] = {
        "status": got.status,
        "result": got.result,
        "max_retries": got.max_retries,
        "worker_id": got.worker_id,
    }
print(json.dumps(out, default=str))
