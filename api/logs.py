"""Logging: one line per request, plain for a terminal or JSON (``DAIFUKU_LOG_FORMAT=json``).

Every process logs to standard error through one handler on the root logger, gunicorn's own
messages included (``log_config`` is also gunicorn's ``logconfig_dict``); gunicorn's access log
stays off, so a request gives exactly the one line ``install`` writes. A request line names the
request id, method, path (without its query string, which may hold an email), status, latency
and the caller's role: never a key, a token or a body.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, g, request

REQUEST_LOGGER = "daifuku.requests"
FORMATS = ("plain", "json")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# What a path keeps unescaped in a log line: anything else (a newline, a space) is %-encoded.
PATH_SAFE = "/:@!$&'()*+,;=-._~"
MAX_PATH_CHARS = 1024

log = logging.getLogger(REQUEST_LOGGER)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_config(log_format: str = "plain", gunicorn: bool = True) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: INFO and above to standard error, gunicorn's
    messages included unless ``gunicorn`` is False (its own options then say where they go)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": PLAIN_FORMAT}
    )
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"daifuku": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "daifuku",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
    }
    if gunicorn:
        config["loggers"] = {
            # gunicorn's messages go through the root's handler, in the same format.
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            # Off: the request line below is the one line per request.
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        }
    return config


def configure(log_format: str = "plain", gunicorn: bool = True) -> None:
    logging.config.dictConfig(log_config(log_format, gunicorn))


def install(app: Flask) -> None:
    """Log each request once it is answered (after ``g.started`` and ``g.request_id`` are set
    by the app's first ``before_request``; call this after the app's own ``after_request``
    so that this one runs before it pops ``g.started``)."""

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("started")
        elapsed_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        caller = g.get("caller")
        fields = {
            "request_id": g.get("request_id", ""),
            "method": request.method,
            "path": quote(request.path[:MAX_PATH_CHARS], safe=PATH_SAFE),
            "status": response.status_code,
            "duration_ms": round(elapsed_ms, 1),
            "role": caller.role if caller is not None else "-",
        }
        log.info(
            "%(request_id)s %(method)s %(path)s %(status)s %(duration_ms).1fms role=%(role)s",
            fields,
            extra={"fields": fields},
        )
        return response
