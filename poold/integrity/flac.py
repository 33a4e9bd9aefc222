"""Placeholder: the flac checker is being written."""
from .base import UNCHECKED, Verdict

FORMAT = "flac"
EXTENSIONS = frozenset({".flac"})


def sniff(head: bytes) -> bool:
    return False


def check(src) -> Verdict:
    return Verdict(UNCHECKED, "check_error", "not written yet", FORMAT)
