"""eventix-operator: Eventix tasks and schedules on PostgreSQL, the Kubernetes way."""

from eventix_operator.client import enqueue, enqueue_many
from eventix_operator.registry import task

__all__ = ["enqueue", "enqueue_many", "task"]
__version__ = "0.1.0"
