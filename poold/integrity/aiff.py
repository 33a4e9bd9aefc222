"""Placeholder: the aiff checker is being written."""
from .base import UNCHECKED, Verdict

FORMAT = "aiff"
EXTENSIONS = frozenset({".aif",".aiff",".aifc"})


def sniff(head: bytes) -> bool:
    return False


def check(src) -> Verdict:
    return Verdict(UNCHECKED, "check_error", "not written yet", FORMAT)
