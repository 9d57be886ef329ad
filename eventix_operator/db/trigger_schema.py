"""The trigger table: declarative triggers that turn posted events into tasks.

The operator fills it from ``EventixTrigger`` resources (one row per resource,
keyed on its ``metadata.uid`` so replayed events change nothing); the REST API
reads it on every ``POST /event``, so a new or changed trigger applies to the
next event without a restart. Eventix's own code triggers (YAML files with
Python code) live in the API process, not here: code does not belong in a table
that a Kubernetes resource can write.

The tables join the shared :data:`eventix_operator.db.schema.metadata`, so the
migration test compares them with what the migrations build.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from eventix_operator.db.schema import metadata

trigger_table = Table(
    "eventix_trigger",
    metadata,
    Column("uid", Text, primary_key=True),  # the resource's metadata.uid
    Column("name", Text, nullable=False),  # shown in logs and in the API's answers
    Column("k8s_namespace", Text),
    Column("k8s_name", Text),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("event_name", Text, nullable=False),
    # A JSON object the event's payload must contain (``payload @> filter``); NULL: every event.
    Column("filter", JSONB),
    # The task to create: {"task", "args", "kwargs", "namespace", "unique_key", ...}, where a
    # string of the exact form "{{ payload.a.b }}" takes that value from the event.
    Column("template", JSONB, nullable=False),
    Column("fired_count", BigInteger, nullable=False, server_default="0"),
    Column("ignored_count", BigInteger, nullable=False, server_default="0"),
    Column("failed_count", BigInteger, nullable=False, server_default="0"),
    Column("last_fired_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("last_error_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The queues (Eventix namespaces) whose events the trigger sees, as SQL LIKE patterns:
    # those its resource's Kubernetes namespace may use (eventix_operator.tenancy). NULL:
    # every queue (tenancy `shared`, or a trigger of no namespace).
    Column("queue_scope", ARRAY(Text)),
    CheckConstraint("filter IS NULL OR jsonb_typeof(filter) = 'object'", name="filter_is_object"),
    CheckConstraint("jsonb_typeof(template) = 'object'", name="template_is_object"),
    Index("ix_eventix_trigger_event_name", "event_name"),
    # The operator finds a resource's row by name when it has no uid at hand (status sync).
    Index(
        "ix_eventix_trigger_k8s_name",
        "k8s_namespace",
        "k8s_name",
        postgresql_where=text("k8s_name IS NOT NULL"),
    ),
)
