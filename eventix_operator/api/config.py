"""Settings only the REST API reads, from the environment with the ``EVENTIX_`` prefix.

They sit beside the shared :class:`~eventix_operator.settings.Settings` (database,
pool, payload limit) rather than in it, so that the API's knobs stay with the API;
the names are what Eventix's server used where it had one
(``EVENTIX_TRIGGER_CONFIG_DIRECTORY``).
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Configuration of ``eventix api``."""

    model_config = SettingsConfigDict(env_prefix="EVENTIX_", extra="ignore")

    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every route but /healthz requires. Unset: no "
        "authentication (keep the Service private then).",
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
