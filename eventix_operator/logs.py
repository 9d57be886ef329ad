"""Structured logging for every eventix process: key=value on a terminal, JSON in a pod.

Every line, ours and the libraries' (kopf, uvicorn, SQLAlchemy), passes
:func:`~eventix_operator.masking.mask_secrets` last: an error message or a traceback
that quotes a connection string shows it without its password.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import TextIO

import structlog

from eventix_operator.masking import mask_secrets


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=_masked_traceback
        )
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if fmt == "json" else _identity,
                _mask,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("sqlalchemy", "alembic", "kubernetes", "urllib3", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # kopf also posts what it logs about a resource as an Event on it, formatted by a
    # handler of its own: mask those records before any handler sees them.
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, MaskRecords) for f in objects.filters):
        objects.addFilter(MaskRecords())


class MaskRecords(logging.Filter):
    """Masks passwords in a record's message and traceback, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return True


def _identity(
    logger: structlog.typing.WrappedLogger, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return event


def _mask(
    logger: structlog.typing.WrappedLogger, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask_secrets(value)
    return event


def _masked_traceback(sio: TextIO, exc_info: structlog.typing.ExcInfo) -> None:
    """The console's traceback, plain (a pretty one may break a URL across lines or
    colour codes, and show local variables), with passwords masked."""
    text = io.StringIO()
    structlog.dev.plain_traceback(text, exc_info)
    sio.write(mask_secrets(text.getvalue()))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
