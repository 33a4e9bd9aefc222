"""Placeholder: the riff checker is being written."""
from .base import UNCHECKED, Verdict

FORMAT = "riff"
EXTENSIONS = frozenset({".wav"})


def sniff(head: bytes) -> bool:
    return False


def check(src) -> Verdict:
    return Verdict(UNCHECKED, "check_error", "not written yet", FORMAT)
