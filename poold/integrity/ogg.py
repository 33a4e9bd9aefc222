"""Placeholder: the ogg checker is being written."""
from .base import UNCHECKED, Verdict

FORMAT = "ogg"
EXTENSIONS = frozenset({".ogg",".oga",".opus"})


def sniff(head: bytes) -> bool:
    return False


def check(src) -> Verdict:
    return Verdict(UNCHECKED, "check_error", "not written yet", FORMAT)
