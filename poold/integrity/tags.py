"""Tag blocks that surround an audio stream without being part of it.

ID3v2 (id3.org, "ID3 tag version 2.4.0 - Main Structure" section 3) sits at the start,
optionally with a 10-byte footer that also allows it at the end. Behind the stream may
follow, in this order from the end of the file backwards: ID3v1 (128 bytes, "TAG"),
optionally preceded by the extended "TAG+" block (227 bytes); Lyrics3 v1/v2 and an
APEv2 tag (32-byte footer "APETAGEX", wiki.hydrogenaud.io/index.php?title=APEv2_specification).
MP3 players skip all of these, and taggers add them to FLAC files too, so the checkers
strip them before judging where the stream ends.
"""

from __future__ import annotations

import struct

from .base import Damage, Source

ID3V2_HEADER = 10


def synchsafe(data: bytes) -> int | None:
    """A 28-bit synchsafe integer (4 bytes, top bit of each clear), or None if invalid."""
    if len(data) != 4 or any(b & 0x80 for b in data):
        return None
    return (data[0] << 21) | (data[1] << 14) | (data[2] << 7) | data[3]


def id3v2_size(header: bytes) -> int | None:
    """Total size in bytes of the ID3v2 tag starting ``header``, or None if there is none."""
    if len(header) < ID3V2_HEADER or header[:3] != b"ID3" or header[3] in (0xFF,) or header[4] == 0xFF:
        return None
    body = synchsafe(header[6:10])
    if body is None:
        return None
    has_footer = header[3] == 4 and header[5] & 0x10
    return ID3V2_HEADER + body + (ID3V2_HEADER if has_footer else 0)


def leading_tags_end(src: Source) -> int:
    """Offset just past the ID3v2 tag(s) at the start of the file (0 if none).

    Some writers repeat the tag, so consecutive tags are skipped. A tag that claims to
    run past the end of the file is damage: the file was cut inside its tags.
    """
    offset = 0
    while True:
        size = id3v2_size(src.read(offset, ID3V2_HEADER))
        if size is None:
            return offset
        if offset + size > src.size:
            raise Damage("truncated", f"the ID3v2 tag at byte {offset} claims {size} bytes but the file ends first")
        offset += size


def trailing_tags_start(src: Source, stream_start: int = 0) -> int:
    """Offset where the trailing tag blocks begin (the file size if there are none)."""
    end = src.size
    while end > stream_start:
        block = _trailing_block(src, end, stream_start)
        if block is None:
            return end
        end -= block
    return end


def _trailing_block(src: Source, end: int, stream_start: int) -> int | None:
    """Size of the tag block that ends at ``end``, or None."""
    tail = src.read(max(stream_start, end - 32), min(32, end - stream_start))
    if end - 128 >= stream_start and src.read(end - 128, 3) == b"TAG":
        extended = end - 128 - 227
        if extended >= stream_start and src.read(extended, 4) == b"TAG+":
            return 128 + 227
        return 128
    if len(tail) == 32 and tail[:8] == b"APETAGEX":
        version, size, _count, flags = struct.unpack("<IIII", tail[8:24])
        total = size + (32 if flags & 0x80000000 else 0)
        if version in (1000, 2000) and 32 <= total <= end - stream_start:
            return total
    if tail[-9:] == b"LYRICS200":
        digits = src.read(end - 15, 6)
        if digits.isdigit() and int(digits) + 15 <= end - stream_start:
            return int(digits) + 15
    if tail[-9:] == b"LYRICSEND":
        window = src.read(max(stream_start, end - 5100 - 9), 5100 + 9)
        begin = window.rfind(b"LYRICSBEGIN")
        if begin >= 0:
            return len(window) - begin
    if tail[-10:-7] == b"3DI":
        body = synchsafe(tail[-4:])
        if body is not None and body + 2 * ID3V2_HEADER <= end - stream_start:
            return body + 2 * ID3V2_HEADER
    return None
