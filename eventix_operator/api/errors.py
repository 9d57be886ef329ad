"""Eventix's errors, with its class names, messages, status codes and body.

Eventix clients recognise an error by ``error_class`` at the top of the body
(``get_task_by_unique_key_and_namespace`` checks for
``NoTaskFoundForUniqueKey``) and rebuild it from ``error_payload``; so the
names and payload keys here are exactly Eventix's (``NotFound`` and
``RevisionConflict`` come from its backend library). Tracebacks stay in our logs:
``error_traceback`` is always empty.
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc

from eventix_operator.db import payload
from eventix_operator.db.errors import database_unavailable, first_line
from eventix_operator.logs import get_logger

log = get_logger("eventix.api")


class ApiError(Exception):
    """An Eventix ``WebException``: its class name is the ``error_class``."""

    status_code = 500

    def __init__(self, message: str, **payload: Any) -> None:
        super().__init__(message)
        self.payload = payload

    def body(self) -> dict[str, Any]:
        return {
            "error_class": type(self).__name__,
            "error_message": str(self),
            "error_status_code": self.status_code,
            "error_traceback": "",
            "error_payload": self.payload,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code)


class NotFound(ApiError):
    status_code = 404

    def __init__(self, uid: str) -> None:
        super().__init__(f"Entry with uid '{uid}' not found.", uid=uid)


class AlreadyExists(ApiError):
    status_code = 409

    def __init__(self, uid: str) -> None:
        super().__init__(f"Entry with uid '{uid}' already exists.", uid=uid)


class RevisionConflict(ApiError):
    status_code = 409

    def __init__(self, revision: str) -> None:
        super().__init__(f"revision changed to {revision}", revision=revision)


class NoTaskFoundForUniqueKey(ApiError):
    status_code = 404

    def __init__(self, unique_key: str, stati: list[str] | None = None) -> None:
        # Eventix's payload is empty: its constructor's keywords are not stored.
        super().__init__(f"No task for unique_key {unique_key} and stati {stati} found")


class TaskUniqueKeyNotUnique(ApiError):
    status_code = 409

    def __init__(self, unique_key: str) -> None:
        super().__init__(f"Task with unique_key {unique_key} not unique")


class WrongTaskStatus(ApiError):
    status_code = 422

    def __init__(self, uid: str, status: str) -> None:
        super().__init__(f"Task {uid} has wrong status: '{status}'", uid=uid, status=status)


class InvalidRequest(ApiError):
    """Input that passed the schema but not its meaning (an unknown sort field)."""

    status_code = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)


class PayloadTooLarge(ApiError):
    status_code = 413

    def __init__(self, message: str) -> None:
        super().__init__(message)


def http_error(
    status_code: int, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    """FastAPI's ``{"detail": ...}`` body, as Eventix answers an ``HTTPException``."""
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Eventix's error documents for what the routes raise; a database outage is
    a 503 that clients retry, a value the database refuses a 422, anything else
    a 500 whose traceback stays in our log."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(payload.PayloadTooLarge)
    async def too_large(request: Request, exc: payload.PayloadTooLarge) -> Response:
        return PayloadTooLarge(str(exc)).response()

    @app.exception_handler(payload.NotStorable)
    async def not_storable(request: Request, exc: payload.NotStorable) -> Response:
        return InvalidRequest(str(exc)).response()

    @app.exception_handler(sa_exc.SQLAlchemyError)
    @app.exception_handler(psycopg.Error)
    @app.exception_handler(OSError)
    async def database_error(request: Request, exc: Exception) -> Response:
        if database_unavailable(exc):
            log.warning("database unavailable", path=request.url.path, error=first_line(exc))
            return http_error(
                503,
                {"error_class": "DatabaseUnavailable", "error_message": "database unavailable"},
                {"retry-after": "1"},
            )
        if isinstance(getattr(exc, "orig", exc), psycopg.DataError):
            message = f"the database cannot store this value: {first_line(exc)}"
            return InvalidRequest(message).response()
        return await internal_error(request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("request failed", path=request.url.path, method=request.method)
        detail = {
            "error_class": type(exc).__name__,
            "error_message": "internal server error (see the server log)",
            "error_traceback": "",
        }
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=500)
