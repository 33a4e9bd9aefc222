"""Placeholder: the mp4 checker is being written."""
from .base import UNCHECKED, Verdict

FORMAT = "mp4"
EXTENSIONS = frozenset({".mp4",".m4a",".m4v",".mov"})


def sniff(head: bytes) -> bool:
    return False


def check(src) -> Verdict:
    return Verdict(UNCHECKED, "check_error", "not written yet", FORMAT)
