"""Passwords out of what a process prints or logs: URLs, connection strings and the
error messages that quote them.

Plain string work, loaded by everything (settings, logging, the command line), so it
imports nothing of ours and nothing heavy.
"""

from __future__ import annotations

import re

#: Query parameters of a libpq URL that carry a secret.
_SECRET_PARAMETERS = re.compile(r"(?i)([?&](?:password|sslpassword)=)[^&#]*")


def mask_url(url: str) -> str:
    """``url`` with its password, in the user part or in ``password=`` and
    ``sslpassword=`` query parameters, replaced by ``***``.

    Plain string work, not a URL parser: it must keep libpq's multi-host URLs
    (``h1:5432,h2:5432``) as they are, and load nothing heavy for `eventix config`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _SECRET_PARAMETERS.sub(r"\1***", url)
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    return f"{scheme}://{authority}" + _SECRET_PARAMETERS.sub(r"\1***", tail)


#: A URL inside a longer text (a log line, an exception's message).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")
#: ``password=…`` of a libpq key/value connection string, quoted or not.
_SECRET_KEYWORDS = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&#]*)")
#: libpq's complaint about a password it cannot decode quotes the password itself.
_BAD_TOKEN = re.compile(r'(invalid percent-encoded token: )"[^"]*"')
_HINT = re.compile(r"(?i)://|password|percent-encoded")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it (:func:`mask_url`), every
    ``password=`` / ``sslpassword=`` of a key/value connection string and the token
    libpq quotes when it cannot decode one replaced by ``***``.

    For what leaves a process and may carry a connection string: log lines and
    exception messages (libpq quotes a URL it cannot parse whole, password included).
    """
    if not _HINT.search(text):  # the common case: a log line without any of them
        return text
    text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    text = _SECRET_KEYWORDS.sub(r"\1***", text)
    return _BAD_TOKEN.sub(r'\1"***"', text)
