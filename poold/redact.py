"""Keeps secrets out of log output, whatever code logs them.

Every secret poold learns (API key, secret, tokens, the base64 credentials built from
them) is registered here; :class:`RedactingFilter`, installed on poold's log handler,
replaces each of them in every record before it is written. This is the second line of
defence: code never formats secrets into messages in the first place.
"""

from __future__ import annotations

import logging
import threading

_secrets: set[str] = set()
_lock = threading.Lock()
MIN_LENGTH = 6  # shorter strings would redact ordinary words


def register_secret(value: str | None) -> None:
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
