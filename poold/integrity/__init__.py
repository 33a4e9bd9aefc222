"""Format-aware integrity checks: one module per container format, one entry point.

:func:`check_file` sniffs what a file really is from its first bytes, runs that
format's structural check and returns a :class:`Verdict`. A file type poold has no
checker for is ``unchecked``, never ``corrupt``; so is a file whose checker failed
for a reason of its own (a bug is not evidence of damage).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
from pathlib import Path

from .base import CORRUPT, OK, UNCHECKED, BeyondLimits, Damage, Source, Verdict, is_zero, unreadable

log = logging.getLogger(__name__)

# The format modules, in sniffing order: an ID3v2 tag may sit in front of FLAC as well
# as MP3, and MP3's frame-sync search is the weakest signature, so it comes last.
# They are imported on first use: a warm audit, which opens no file, never needs them.
FORMAT_MODULES = ("flac", "ogg", "riff", "aiff", "mp4", "mp3")
# Each module's EXTENSIONS, here too so that no module is imported to map a name
# (tests/test_integrity_dispatch.py checks that the two agree).
MODULE_BY_EXTENSION = {
    ".flac": "flac", ".ogg": "ogg", ".oga": "ogg", ".opus": "ogg", ".wav": "riff",
    ".aif": "aiff", ".aiff": "aiff", ".aifc": "aiff",
    ".mp4": "mp4", ".m4a": "mp4", ".m4v": "mp4", ".mov": "mp4", ".m4b": "mp4",
    ".mp3": "mp3", ".mp2": "mp3", ".mpa": "mp3",
}
CHECKABLE_EXTENSIONS = frozenset(MODULE_BY_EXTENSION)


@functools.cache
def format_module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def formats() -> tuple:
    return tuple(format_module(name) for name in FORMAT_MODULES)


def _logic_version() -> str:
    """A fingerprint of the checkers' source: cached verdicts of other versions are void."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


LOGIC_VERSION = _logic_version()

# Reason codes whose remedy is not a redownload: reported, never requested.
NOT_REQUESTABLE = frozenset({"wrong_format"})


def check_file(path: str | os.PathLike) -> Verdict:
    """Judge one file by its structure (the quick check)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    expected = format_module(MODULE_BY_EXTENSION[ext]) if ext in MODULE_BY_EXTENSION else None
    if expected is None:
        return Verdict(UNCHECKED, "unsupported_type", f"poold has no check for {ext or 'files without an extension'}")
    try:
        with Source(path) as src:
            return _with_identity(_check_source(src, expected, ext), src)
    except OSError as exc:  # a named pipe, a device, no permission, a failing disk
        return unreadable(exc)


def _with_identity(verdict: Verdict, src: Source) -> Verdict:
    """The verdict with the audio payload's sampled identity, for a file that is ok.
    Taking it never fails: a payload it cannot locate leaves the identity None."""
    if verdict.status != OK:
        return verdict
    identity = format_module("identity").sampled_identity(src, verdict.format)
    if identity is None:
        return verdict
    return Verdict(verdict.status, verdict.reason, verdict.detail, verdict.format, verdict.duration, identity)


def _check_source(src: Source, expected, ext: str) -> Verdict:
    if src.size == 0:
        return Verdict(CORRUPT, "empty", "the file is 0 bytes long", expected.FORMAT)
    actual = sniff(src.head)
    if actual is None and is_adts(src.head):
        # Raw AAC plays in most players, but poold has no ADTS checker: say what it is, judge nothing.
        return Verdict(UNCHECKED, "wrong_format", f"a raw AAC (ADTS) stream behind a {ext} name; poold cannot check ADTS")
    if actual is None:
        return Verdict(CORRUPT, *_describe_unknown(src.head), expected.FORMAT)
    verdict = run_checker(actual, src)
    if actual is not expected and verdict.status == OK:
        return Verdict(
            CORRUPT, "wrong_format",
            f"a complete {actual.FORMAT} file behind a {ext} name", actual.FORMAT, verdict.duration,
        )
    return verdict


def sniff(head: bytes):
    """The format module whose signature ``head`` carries, or None."""
    for module in formats():
        if module.sniff(head):
            return module
    return None


def run_checker(module, src: Source) -> Verdict:
    """Run one format's check, turning Damage into a verdict and containing everything else."""
    try:
        return module.check(src)
    except Damage as damage:
        return Verdict(CORRUPT, damage.reason, damage.detail, module.FORMAT)
    except BeyondLimits as limit:
        return Verdict(UNCHECKED, "check_limit", str(limit), module.FORMAT)
    except OSError:
        raise
    except Exception as exc:  # a checker bug must not become a false "corrupt"
        log.warning("%s checker failed on %s: %s: %s", module.FORMAT, src.path, type(exc).__name__, exc)
        return Verdict(UNCHECKED, "check_error", f"poold's {module.FORMAT} check failed: {type(exc).__name__}", module.FORMAT)


def is_adts(head: bytes) -> bool:
    """Two consecutive ADTS frame headers at the start (ISO/IEC 14496-3 1.A.2.2: syncword 0xFFF, layer 00)."""
    offset = 0
    for _ in range(2):
        header = head[offset:offset + 7]
        if len(header) < 7 or header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
            return False
        length = ((header[3] & 0x03) << 11) | (header[4] << 3) | (header[5] >> 5)
        if length < 7:
            return False
        offset += length
    return True


def _describe_unknown(head: bytes) -> tuple[str, str]:
    """Reason and detail for content that no checker recognises."""
    if is_zero(head):
        return "zero_filled", "the file starts with nothing but zero bytes"
    text = head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "not_audio", "an HTML page, not media (a failed download saved as the file?)"
    if text.startswith((b"<?xml", b"{", b"[")):
        return "not_audio", "an XML or JSON document, not media"
    if _looks_like_text(head[:4096]):
        return "not_audio", "plain text, not media"
    return "not_audio", "unrecognised data: no media signature at the start of the file"


def _looks_like_text(data: bytes) -> bool:
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:  # not just a character cut at the window's end
            return False
        decoded = data[:exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in decoded)
    return printable >= 0.95 * len(decoded)
