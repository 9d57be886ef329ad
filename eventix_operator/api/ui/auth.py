"""Who may see the dashboard and act in it: sessions, CSRF tokens, headers.

**Sign-in.** The dashboard takes the REST API's bearer token once, on its login
page, and answers with a session cookie: ``v1.<issued>.<session id>.<MAC>``,
HMAC-SHA256 under a key derived from the token. The token itself never reaches
the browser's script nor any cookie; the cookie is ``HttpOnly``,
``SameSite=Strict``, limited to ``/ui`` and ``Secure`` over HTTPS. Sessions are
stateless (several processes and replicas accept each other's), last
``EVENTIX_UI_SESSION_HOURS``, and all end when the token changes. Without a token
(``EVENTIX_API_ALLOW_ANONYMOUS``) every visitor gets a session without signing
in, keyed on the database URL, so that forms still carry a CSRF token.

**CSRF.** Every form that changes something carries a token derived from the
session (HMAC of its id, a synchronizer token that needs no server state); a
POST without it, with another session's, or from another origin (``Origin`` or
``Sec-Fetch-Site`` say so) is refused with 403. ``SameSite=Strict`` already
keeps the cookie off cross-site requests; the token holds where that is not
enough (an old browser, a sibling site on the same registrable domain).

**Who.** Each action is logged with the session's short id, a fingerprint of the
token it was made with and the client's address, so a log line says who did what.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "eventix_session"
COOKIE_PATH = "/ui"
PREFIX = "/ui"

#: Headers of every dashboard response. No inline script or style is used, so the
#: policy allows none: an injected script tag would not run.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: its id (random, from sign-in) and when it began."""

    sid: str
    issued: int
    anonymous: bool

    @property
    def who(self) -> str:
        return "anonymous" if self.anonymous else f"session {self.sid[:8]}"


class Sessions:
    """Issues and checks session cookies and CSRF tokens for one token (or none)."""

    def __init__(
        self, *, token: str | None, anonymous_secret: str, lifetime_seconds: float
    ) -> None:
        self.token = token
        secret = token if token is not None else f"anonymous:{anonymous_secret}"
        self.key = hmac.new(secret.encode(), b"eventix-ui-session-v1", hashlib.sha256).digest()
        self.lifetime = lifetime_seconds
        #: What the logs call the token an action was made with (never the token).
        self.fingerprint = (
            "none" if token is None else hashlib.sha256(token.encode()).hexdigest()[:8]
        )

    @property
    def anonymous(self) -> bool:
        return self.token is None

    def check_token(self, given: str) -> bool:
        """Whether ``given`` (typed on the login page) is the API's token."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def issue(self, now: float | None = None) -> tuple[Session, str]:
        """A new session and its cookie value."""
        issued = int(time.time() if now is None else now)
        sid = secrets.token_urlsafe(18)
        payload = f"v1.{issued}.{sid}"
        return Session(sid, issued, self.anonymous), f"{payload}.{self._mac(payload)}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None: absent, forged, from another token,
        or expired."""
        if not cookie:
            return None
        version, _, rest = cookie.partition(".")
        issued_text, _, rest = rest.partition(".")
        sid, _, mac = rest.rpartition(".")
        if version != "v1" or not issued_text.isdigit() or not sid or not mac:
            return None
        expected = self._mac(f"v1.{issued_text}.{sid}")
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        issued = int(issued_text)
        age = (time.time() if now is None else now) - issued
        if age < -60 or age > self.lifetime:
            return None
        return Session(sid, issued, self.anonymous)

    def csrf_token(self, session: Session) -> str:
        return self._mac(f"csrf.{session.sid}")

    def check_csrf(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(
            given.encode(), self.csrf_token(session).encode()
        )


def same_origin(headers: dict[str, str]) -> bool:
    """False when the browser says the request came from another site: its
    ``Sec-Fetch-Site``, or an ``Origin`` whose host is not the one addressed.
    Requests without either (curl, old browsers) rely on the CSRF token alone."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = headers.get("x-forwarded-host") or headers.get("host") or ""
    return origin.partition("://")[2].rstrip("/") == host


class PageHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response under ``/ui``, with
    ``Cache-Control: no-store`` and a ``Server-Timing`` of the time the page took
    (browsers' developer tools show it; ``bench/dashboard.py`` reads it) to pages;
    other paths pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")
        started = time.perf_counter()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not static:
                    took = (time.perf_counter() - started) * 1000
                    headers.append((b"cache-control", b"no-store"))
                    headers.append((b"server-timing", f"app;dur={took:.1f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
