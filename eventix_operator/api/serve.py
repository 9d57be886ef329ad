"""Start the REST API: ``eventix api --host --port --workers``.

One worker process serves the app object built here; several are uvicorn's
worker processes, each building its own app (and database pool) from the
environment, since a settings object does not cross a process boundary.
``python -m eventix_operator.api.serve`` starts it without the CLI.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from eventix_operator.api.app import create_app
from eventix_operator.api.guard import bearer_token
from eventix_operator.logs import configure_logging, get_logger
from eventix_operator.settings import Settings, get_settings

log = get_logger("eventix.api")

#: Seconds a stopping server waits for requests in flight (below Kubernetes' 30 s grace).
GRACEFUL_SHUTDOWN = 20


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    dashboard_only: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT, then finish requests in flight and stop.

    No access log (a line per request costs more than many requests); errors and
    slow paths are logged by the app itself, and the dashboard logs its actions.
    ``dashboard_only``: the web dashboard without the REST routes (``eventix
    dashboard``).
    """
    configure_logging(settings.log_level, settings.log_format)
    settings.require_database_url()
    bearer_token(settings)  # here too: several workers build their apps in their own processes
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # We read no client address; X-Forwarded-* parsing would cost every request.
        "proxy_headers": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN,
        "backlog": 2048,
    }
    if workers <= 1:
        uvicorn.run(create_app(settings, dashboard_only=dashboard_only), **options)  # type: ignore[arg-type]
    else:
        factory = "dashboard_from_environment" if dashboard_only else "app_from_environment"
        uvicorn.run(
            f"eventix_operator.api.app:{factory}",
            factory=True,
            workers=workers,
            **options,  # type: ignore[arg-type]
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="eventix-api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    settings = get_settings()
    try:  # settings that forbid the start: one line and status 2, as `eventix api` says it
        settings.require_database_url()
        bearer_token(settings)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(settings, args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
