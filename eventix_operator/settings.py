"""The one settings object of eventix-operator.

Every process (operator, worker, API, CLI) reads its configuration from the
environment once, through :func:`get_settings`. Variables carry the
``EVENTIX_`` prefix; ``DATABASE_URL`` is also accepted without it because that
is the name every PostgreSQL tool and Helm chart already uses.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventix_operator.masking import mask_url

__all__ = ["Settings", "get_settings", "libpq_url", "mask_url", "normalise_database_url"]

#: A Kubernetes namespace name (a DNS label), or ``*`` for every namespace.
_NAMESPACE_KEY = re.compile(r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$")
#: A queue name as the CRDs take it, a prefix of one followed by ``*``, or ``*`` alone.
_QUEUE_ENTRY = re.compile(
    r"^(\*|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?|[A-Za-z0-9][A-Za-z0-9._-]*\*)$"
)


def normalise_database_url(url: str) -> str:
    """A database URL as SQLAlchemy takes it: the psycopg 3 driver, and libpq's
    multi-host form turned into SQLAlchemy's.

    Users copy URLs from ``psql``, Helm secrets or cloud consoles; those never
    name a SQLAlchemy driver, and SQLAlchemy would otherwise pick psycopg2. A
    libpq multi-host URL (``postgresql://u@h1:5432,h2:5432/db?target_session_attrs=
    read-write``, what a primary and its standbys without a proxy in front look
    like) does not parse as SQLAlchemy's URL; its own form of the same is libpq's
    host and port lists as query parameters (``postgresql+psycopg://u@/db?host=h1,h2&
    port=5432,5432&…``), which its psycopg dialect hands to libpq as the same list.
    Plain string work: ``eventix config`` loads nothing heavy.
    """
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
            break
    return _multi_host_to_query(url)


def libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver suffix, as libpq and PostgreSQL tools read
    it (a multi-host list in the query, as :func:`normalise_database_url` writes it,
    is libpq's own ``host=h1,h2&port=…``)."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg_async://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _multi_host_to_query(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return url
    names, ports = [], []
    for token in hosts.split(","):
        if token.startswith("["):  # an IPv6 address: [::1]:5432
            name, _, port = token[1:].partition("]")
            port = port.removeprefix(":")
        else:
            name, _, port = token.partition(":")
        names.append(name)
        ports.append(port)
    path, _, query = tail.partition("?")
    params = f"host={','.join(names)}" + (f"&port={','.join(ports)}" if any(ports) else "")
    query = f"{params}&{query}" if query else params
    return f"{scheme}://{userinfo}{at}{path or '/'}?{query}"


class Settings(BaseSettings):
    """Effective configuration; see ``eventix config``."""

    model_config = SettingsConfigDict(env_prefix="EVENTIX_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("EVENTIX_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL. Unset: `eventix local` starts an embedded server.",
    )
    listen_database_url: SecretStr | None = Field(
        default=None,
        description="A direct URL (bypassing any connection pooler, e.g. CloudNativePG's "
        "`-rw` Service) used only for LISTEN: one connection per process, which wakes "
        "workers and pool scalers the moment tasks are enqueued. Unset: DATABASE_URL, "
        "unless that goes through a pooler, where LISTEN hears nothing; then processes "
        "poll every EVENTIX_POLL_ONLY_INTERVAL.",
    )
    read_database_url: SecretStr | None = Field(
        default=None,
        description="A URL of a hot standby for reads that tolerate replication lag "
        "(task listings of the CLI and the REST API, the operator's queue figures for "
        "/metrics). Unset: DATABASE_URL. Claims, write-backs, status sync and everything "
        "a user acts on always use DATABASE_URL.",
    )
    db_pool_size: int = Field(10, ge=1, description="Connections kept open per process.")
    db_max_overflow: int = Field(20, ge=0, description="Extra connections under load.")
    db_max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Most connections one process opens to DATABASE_URL (its pool, "
        "overflow included); unset: EVENTIX_DB_POOL_SIZE + EVENTIX_DB_MAX_OVERFLOW. The "
        "read URL's pool has the same cap; the LISTEN connection is one more.",
    )
    db_pool_pre_ping: bool = Field(
        True,
        description="Test a pooled connection before use when it sat idle in the pool "
        "more than 0.5 s (what breaks connections, a failover or an idle timeout, comes "
        "while they wait); a dead one is dropped with every other the pool held.",
    )
    db_connect_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds to wait for a new connection, or for one of a full pool.",
    )
    db_prepared_statements: Literal["auto"] | bool = Field(
        default="auto",
        description="Server-side prepared statements (psycopg prepares a statement on its "
        "sixth run). `auto`: on, except on connections that go through a connection "
        "pooler (detected per connection: the backend pid the server reports differs "
        "from the one the connection was given), where a transaction pooler would run "
        "them on another server connection. `false`: never (any pooler); `true`: always "
        "(direct connections, or PgBouncer 1.21+ with max_prepared_statements set).",
    )
    poll_only_interval: float = Field(
        default=0.2,
        gt=0,
        description="Seconds between the cheap looks for due tasks of workers and the pool "
        "scaler when they cannot LISTEN (jittered by ±50 %); with LISTEN they claim every "
        "EVENTIX_WORKER_POLL_INTERVAL as a safety net.",
    )

    worker_concurrency: int = Field(
        10, ge=1, description="Tasks one worker process runs at the same time."
    )
    worker_batch_size: int = Field(
        200, ge=1, le=10_000, description="Most tasks claimed by one claim statement."
    )
    worker_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a claim holds without a heartbeat. Heartbeats renew it "
        "every third of this, so a dead worker's tasks come back within one lease.",
    )
    worker_poll_interval: float = Field(
        2.0, gt=0, description="Seconds between claims when no notification arrives."
    )
    worker_shutdown_grace: float = Field(
        25.0,
        ge=0,
        description="Seconds SIGTERM waits for running tasks before releasing them. "
        "Keep it below the pod's terminationGracePeriodSeconds.",
    )
    worker_cancel_grace: float = Field(
        5.0,
        ge=0,
        description="Seconds a cancelled running task has to stop (an async task is "
        "cancelled, a sync one sees current_task().cancelled) before it is recorded "
        "cancelled anyway and whatever it returns later is dropped.",
    )
    worker_cancel_poll_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between a worker's looks for cancels of the tasks it runs "
        "while it cannot LISTEN (through a transaction pooler); with LISTEN a cancel "
        "arrives by notification at once.",
    )
    worker_purge_interval: float = Field(
        60.0, gt=0, description="Seconds between removals of expired results."
    )
    worker_progress_interval: float = Field(
        10.0,
        gt=0,
        description="Seconds between a worker's INFO lines summing up the tasks it ran "
        "(each success is a DEBUG line; each failure a WARNING line).",
    )
    max_payload_bytes: int = Field(
        1_000_000, ge=1, description="Largest JSON args+kwargs or result accepted for one task."
    )
    operator_lease_seconds: float = Field(
        6.0,
        ge=1.0,
        description="Leadership lease of an operator replica (status sync, queue metrics, "
        "each pool's scaler), a row in eventix_lease renewed every quarter of it: a "
        "replica that cannot renew stops acting a quarter before it expires, and another "
        "takes over once it has.",
    )
    operator_delete_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a deleted resource waits for an unreachable database before "
        "the operator releases it anyway (with a Warning event).",
    )
    operator_max_replicas: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Most replicas any EventixWorkerPool may set, cluster-wide: a pool's "
        "maxReplicas (and minReplicas) above it are lowered to it, with a Warning event "
        "and a note in the pool's Ready condition.",
    )
    tenancy: Literal["namespaced", "shared"] = Field(
        "namespaced",
        description="Which queues the resources of a Kubernetes namespace may use "
        "(docs/tenancy.md). `namespaced`: the queue named like the namespace, queues "
        "starting with `<namespace>.`, and what EVENTIX_TENANCY_ALLOW grants; a resource "
        "without a queue gets the namespace's. `shared`: every queue (one team per "
        "cluster); a resource without a queue gets `default`.",
    )
    tenancy_allow: dict[str, list[str]] = Field(
        default_factory=dict,
        description="More queues per namespace in `namespaced` mode, as JSON: "
        '`{"team-a": ["mail", "reports-*"], "*": ["shared"]}`. A queue ending in `*` is a '
        "prefix, `*` alone every queue; the namespace `*` means every namespace.",
    )
    metrics_port: int = Field(
        9090,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint of the operator and of each "
        "worker process; 0 disables it.",
    )
    # -- `eventix api`, the Eventix-compatible REST API --
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every route but /healthz requires: at least 16 "
        "characters (surrounding whitespace, such as a Secret file's newline, is not "
        "part of it). Unset: `eventix api` refuses to start unless "
        "EVENTIX_API_ALLOW_ANONYMOUS is true.",
    )
    api_allow_anonymous: bool = Field(
        default=False,
        description="Serve the REST API without a token when EVENTIX_API_TOKEN is unset: "
        "anyone who reaches it may read, rewrite or delete every task. For a machine of "
        "your own or a Service no one else can reach.",
    )
    api_max_body_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Largest request body accepted (413 beyond). Unset: twice "
        "EVENTIX_MAX_PAYLOAD_BYTES plus 64 KiB, room for args, kwargs and a result.",
    )
    api_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Lease of a task claimed through GET /tasks/next_scheduled. Eventix "
        "workers do not heartbeat, so this is Eventix's 300 s, not the native "
        "worker's lease: a task outliving it is handed to another worker.",
    )
    api_max_page_size: int = Field(
        default=1000,
        ge=1,
        description="Most tasks one listing page returns (a larger or absent limit "
        "is cut to this).",
    )
    api_maintenance_interval: float = Field(
        default=30.0,
        ge=0,
        description="Seconds between recoveries of expired leases and removals of "
        "expired results, for deployments with only HTTP workers. 0: off.",
    )
    api_gc_tuning: bool = Field(
        default=True,
        description="Freeze the objects loaded at start and run the cyclic garbage "
        "collector less often: about a tenth less CPU per request, and a lower p99.",
    )
    trigger_config_directory: str = Field(
        default="",
        description="Directory of Eventix trigger YAML files (`triggers:` with Python "
        "`code`), loaded at start. The code runs in the API process: only trusted "
        "configuration belongs there.",
    )
    # -- the web dashboard under /ui (`eventix api`, `eventix dashboard`) --
    ui_read_only: bool = Field(
        default=False,
        description="Dashboard without actions: no retry, cancel, delete or run-now "
        "buttons, and the server refuses those requests (403).",
    )
    ui_session_hours: float = Field(
        default=12.0,
        gt=0,
        description="Hours a dashboard sign-in lasts (the cookie's lifetime); changing "
        "EVENTIX_API_TOKEN ends every session at once.",
    )
    ui_page_size: int = Field(
        default=50, ge=10, le=500, description="Tasks per page of the dashboard's task list."
    )
    ui_refresh_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Seconds between live updates of an open dashboard page (polling); 0: off.",
    )
    ui_count_cap: int = Field(
        default=2_000,
        ge=100,
        description="Tasks counted per queue and state on the overview; beyond it the "
        "page shows the planner's estimate and says so (counting every row of a large "
        "table on each page view would cost a scan of it). The overview refreshes every "
        "few seconds in each open tab, and its cost grows with queues times this cap.",
    )
    log_format: str = Field("console", description="`console` or `json`.")
    log_level: str = Field("INFO", description="Python logging level name.")

    @field_validator("database_url", "listen_database_url", "read_database_url", mode="before")
    @classmethod
    def _driver(cls, value: Any) -> Any:
        if isinstance(value, str):
            return normalise_database_url(value)
        return value

    @field_validator("tenancy_allow")
    @classmethod
    def _tenancy_allow(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for namespace, queues in value.items():
            if not _NAMESPACE_KEY.match(namespace):
                raise ValueError(
                    f"tenancy_allow: {namespace!r} is neither a namespace name nor '*'"
                )
            for queue in queues:
                if len(queue) > 63 or not _QUEUE_ENTRY.match(queue):
                    raise ValueError(
                        f"tenancy_allow[{namespace!r}]: {queue!r} is neither a queue name, "
                        "a prefix ending in '*', nor '*'"
                    )
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in ("console", "json"):
            raise ValueError("log_format must be 'console' or 'json'")
        return value

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError(
                "DATABASE_URL is not set (use EVENTIX_DATABASE_URL or DATABASE_URL, "
                "or `eventix local` for an embedded database)"
            )
        return self.database_url.get_secret_value()

    def masked(self) -> dict[str, Any]:
        """Settings as a dict with the database password replaced by ``***``."""
        data = self.model_dump()
        for name in ("database_url", "listen_database_url", "read_database_url"):
            url: SecretStr | None = getattr(self, name)
            if url is not None:
                data[name] = mask_url(url.get_secret_value())
        return data

    def listen_url(self) -> str:
        """The URL of the LISTEN connection: the listen URL, else DATABASE_URL."""
        if self.listen_database_url is not None:
            return self.listen_database_url.get_secret_value()
        return self.require_database_url()

    def read_url(self) -> str | None:
        """The URL for lag-tolerant reads, when one is set apart from DATABASE_URL."""
        return None if self.read_database_url is None else self.read_database_url.get_secret_value()


@functools.cache
def get_settings() -> Settings:
    return Settings()
