"""The Eventix-compatible REST API (``eventix api``): Eventix 3.5's routes on the
PostgreSQL queue, so existing Eventix clients and HTTP workers keep working.

A process layer, like the worker: it may use the client, registry, data layer,
settings and logs; nothing imports it but the CLI.
"""

from __future__ import annotations

from eventix_operator.api.app import create_app

__all__ = ["create_app"]
