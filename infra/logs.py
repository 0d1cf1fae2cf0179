"""Process logging: text for people, JSON lines for machines (LOG_FORMAT=json).

``log_context(task_id=...)`` attaches fields to every line logged inside it —
including by libraries, and by tasks started inside it (asyncio copies the
context) — so all the lines of one task or one RPC call can be found by id.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

_fields: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "taskgate_log_fields", default=MappingProxyType({})
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Add ``fields`` to every log line emitted inside the block."""
    token = _fields.set(MappingProxyType({**_fields.get(), **fields}))
    try:
        yield
    finally:
        _fields.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        record.fields = fields
        record.context = "".join(f" {key}={value}" for key, value in fields.items())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", MappingProxyType({})),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> bool:
    """Log to stderr as ``text`` or ``json`` (the process's LOG_FORMAT); True if JSON."""
    as_json = log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return as_json
