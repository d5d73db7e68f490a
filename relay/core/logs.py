"""Log set-up and structured log lines.

The relay writes one line per SMTP transaction and one per delivery attempt
(``event``), each with the message's trace id: the id the SMTP transaction got
at MAIL FROM, stored on the message's rows, so that the accept line, the rule
hits, the delivery attempts and the notices of one message can be found with
one grep.  Their fields are passed as ``extra={"fields": {...}}`` and come out
as ``key=value`` after the text, or as keys of a JSON object with
``logging.format: json``.

At INFO and above a log line names the parties by their tokens, never by their
real addresses: an operator reading logs, or a log shipper, must not learn what
the relay exists to hide.  Free text from outside (a smarthost's reply, an
authentication result) goes through ``redact`` first.  Real addresses appear
only at DEBUG (``relay serve -v``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from relay.core.addresses import mask_addresses
from relay.core.config import LoggingConfig


def redact(text: str, known: Mapping[str, str] | None = None) -> str:
    """``text`` with every email address replaced: by its token when ``known``
    maps it (lower-case real address → token address), else by ``<address>``."""
    return mask_addresses(text, known=known, mask="<address>")


def event(
    logger: logging.Logger, message: str, /, level: int = logging.INFO, **fields: Any
) -> None:
    """Log ``message`` with structured ``fields`` (see the module docstring)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})


class TextFormatter(logging.Formatter):
    """The classic line, with the structured fields appended as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if not fields:
            return line
        head, sep, rest = line.partition("\n")  # a traceback stays after the fields
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return f"{head} {pairs}{sep}{rest}"


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value) or "-"
    text = str(value)
    if not text:
        return "-"
    return json.dumps(text, ensure_ascii=False) if any(c.isspace() for c in text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            data.update({k: v for k, v in fields.items() if k not in data})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup(config: LoggingConfig, *, verbose: bool = False, show_pid: bool = False) -> None:
    """Configure the root logger for ``relay serve``.

    aiosmtpd's own logger (``mail.log``) names the real envelope addresses at INFO,
    so it is kept at WARNING unless ``verbose`` asks for everything.
    """
    level = logging.DEBUG if verbose else getattr(logging, config.level.upper())
    handler = logging.StreamHandler()
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter(
                "%(asctime)s %(levelname)s "
                + ("[%(process)d] " if show_pid else "")
                + "%(name)s: %(message)s"
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("mail.log").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # httpx logs every request at INFO: one line per webhook event, with its
    # URL; the relay's own lines say what matters (failures, give-ups).
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)
