"""Post an event with Eventix's client; print the tasks the triggers made."""

import json
import sys

from common import configure
from eventix.functions.eventix_client import EventixClient
from eventix.pydantic.event import TEventixEvent

configure()
payload = json.loads(sys.argv[1])
tasks = EventixClient.post_event(
    TEventixEvent(name="order.created", payload=payload, priority=-3, operator="alice")
)
print(
    json.dumps(
        [
            {
                "uid": t.uid,
                "task": t.task,
                "args": list(t.args),
                "kwargs": t.kwargs,
                "namespace": t.namespace,
                "priority": t.priority,
                "operator": t.operator,
                "status": t.status,
            }
            for t in tasks
        ]
    )
)
