"""Authentication and request size, checked before a route reads anything.

A plain ASGI middleware rather than FastAPI dependencies: dependencies run after
the body has been read and parsed, so a stranger could make the server read and
parse large bodies, and would get a 422 instead of a 401.
"""

from __future__ import annotations

import hmac
import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventix_operator.settings import Settings

#: Routes that answer without a token: liveness probes carry none, and ``/``
#: only redirects to the dashboard.
OPEN_PATHS = frozenset({"/healthz", "/"})
#: The dashboard's own prefix: browsers carry no bearer header; its pages and
#: actions check their session cookie themselves (:mod:`eventix_operator.api.ui.auth`),
#: signed in with this same token.
UI_PREFIX = "/ui"
#: Fewest characters of a bearer token (`openssl rand -hex 32` gives 64).
MIN_TOKEN_LENGTH = 16


def bearer_token(settings: Settings) -> str | None:
    """The token requests must carry, or None for an API that explicitly allows
    anonymous access; ``ValueError`` (one line) for a start that must not happen.

    Never open by accident: an unset token needs ``EVENTIX_API_ALLOW_ANONYMOUS``,
    and an empty or short one is refused whatever that says (an empty token is a
    Secret key left blank, not a wish for no authentication). Surrounding whitespace
    is dropped: no client can send it in a header, and a Secret made from a file
    often ends with a newline.
    """
    if settings.api_token is None:
        if settings.api_allow_anonymous:
            return None
        raise ValueError(
            "EVENTIX_API_TOKEN is not set: set a bearer token of at least "
            f"{MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`), or "
            "EVENTIX_API_ALLOW_ANONYMOUS=true to serve the API without authentication"
        )
    token = settings.api_token.get_secret_value().strip()
    if not token:
        raise ValueError(
            "EVENTIX_API_TOKEN is empty: it would let every request in; set a bearer token "
            f"of at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"EVENTIX_API_TOKEN has {len(token)} characters, fewer than {MIN_TOKEN_LENGTH}: "
            "use a longer one (e.g. `openssl rand -hex 32`)"
        )
    return token


def open_path(path: str) -> bool:
    return path in OPEN_PATHS or path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body without (or with a false) Content-Length
    grows past the limit; FastAPI lets HTTP exceptions from the body read through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


async def _send_json(
    send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]]
) -> None:
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


class Guard:
    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.expected = None if token is None else f"bearer {token}".encode()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
        if self.expected is not None and not open_path(scope["path"]):
            if authorization is None:
                await _send_json(
                    send, 401, {"detail": "Not authenticated"}, [(b"www-authenticate", b"Bearer")]
                )
                return
            scheme, _, _ = authorization.partition(b" ")
            given = b"bearer " + authorization[len(scheme) + 1 :]
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given, self.expected):
                await _send_json(
                    send,
                    401,
                    {"detail": "Invalid bearer token"},
                    [(b"www-authenticate", b'Bearer error="invalid_token"')],
                )
                return
        limit = self.max_body_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, {"detail": "invalid Content-Length"}, [])
                return
            if declared > limit:
                await _send_json(
                    send,
                    413,
                    {"detail": f"request body is {declared} bytes, over the limit of {limit}"},
                    [(b"connection", b"close")],
                )
                return
        if length is not None:
            # The HTTP parser reads exactly Content-Length bytes: nothing more to count.
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
