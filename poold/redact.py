"""Keeps secrets out of log output, whatever code logs them.

Every secret poold learns (API key, secret, tokens, the base64 credentials built from
them) is registered here; :class:`RedactingFilter`, installed on poold's log handler,
replaces each of them in every record before it is written. This is the second line of
defence: code never formats secrets into messages in the first place.
"""

from __future__ import annotations

import logging
import threading

_secrets: dict[str, None] = {}  # insertion-ordered: the oldest first
_lock = threading.Lock()
MIN_LENGTH = 6  # shorter strings would redact ordinary words
MAX_SECRETS = 512


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` hides it from now on.

    A daemon mints a token every few minutes, so only the :data:`MAX_SECRETS` most
    recently registered are kept; long-lived secrets are registered again at every
    use, which keeps them among the newest.
    """
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            _secrets.pop(value, None)
            _secrets[value] = None
            while len(_secrets) > MAX_SECRETS:
                del _secrets[next(iter(_secrets))]


def redact(text: str) -> str:
    """The text with every registered secret replaced by ``***`` (longest first)."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Redacts a record's message, formatted exception and stack in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
