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

from .base import WINDOW, BeyondLimits, Damage, Source

ID3V2_HEADER = 10
# Tag blocks one after another at either end: a tagger may repeat one or stack a few
# kinds (ID3v1 + APEv2 + Lyrics3); thousands of them are a hostile file, judged
# `unchecked` rather than walked for seconds.
MAX_TAG_BLOCKS = 64
# Frames walked looking for one: a real tag has a few dozen (DJ software adds a few
# dozen more GEOB/PRIV/TXXX frames). A "tag bomb" of hundreds of
# thousands of frames is not damage; the frame wanted is then simply not looked for.
MAX_ID3_FRAMES = 2048
# The most of a text frame read (a length in milliseconds needs a few bytes), and the
# largest tag undone whole when a v2.2/v2.3 writer unsynchronised all of it.
MAX_TEXT_FRAME = 1024
UNSYNCHRONISED_TAG_LIMIT = 1024 * 1024
# Text encodings of ID3v2 text frames (ID3v2.4 "Main Structure" 4): ISO-8859-1, UTF-16
# with BOM, UTF-16BE (2.4), UTF-8 (2.4).
ID3_ENCODINGS = {0: "latin-1", 1: "utf-16", 2: "utf-16-be", 3: "utf-8"}


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


def id3v2_text(src: Source, frame_id: bytes) -> str | None:
    """The text of the first ``frame_id`` frame (a v2.3/v2.4 ID) in the ID3v2 tag at the
    start of the file, or None when there is none or it cannot be read.

    Only frame headers are read and walked (ID3v2.2 section 3.2, v2.3 section 3.3, v2.4
    "Main Structure" 4), at most MAX_ID3_FRAMES of them: bounded time and memory whatever
    the tag holds. A general tag parser (mutagen) builds every frame, and takes minutes and
    hundreds of MB on a tag of hundreds of thousands of frames.
    """
    header = src.read(0, ID3V2_HEADER)
    size = id3v2_size(header)
    if size is None:
        return None
    version, flags = header[3], header[5]
    end = size - (ID3V2_HEADER if flags & 0x10 and version == 4 else 0)  # less the footer
    if flags & 0x80 and version < 4:  # v2.2/v2.3: the whole tag is unsynchronised
        if size > UNSYNCHRONISED_TAG_LIMIT:
            return None
        body = src.read(0, end).replace(b"\xff\x00", b"\xff")

        def read(offset: int, length: int) -> bytes:
            return body[offset:offset + length]
    else:
        read = _WindowedReader(src, end)
    frame = _find_frame(read, version, flags, frame_id)
    return None if frame is None else _text(frame)


class _WindowedReader:
    """Reads of the tag's first ``end`` bytes through a WINDOW-sized buffer: frame headers
    are read in order, and most frames are small."""

    def __init__(self, src: Source, end: int):
        self.src, self.end = src, end
        self.start, self.data = 0, b""

    def __call__(self, offset: int, length: int) -> bytes:
        length = min(length, self.end - offset)
        if offset < self.start or offset + length > self.start + len(self.data):
            self.start, self.data = offset, self.src.read(offset, min(max(length, WINDOW), self.end - offset))
        return self.data[offset - self.start:offset - self.start + length]


def _find_frame(read, version: int, flags: int, frame_id: bytes) -> bytes | None:
    """The content of the first frame called ``frame_id`` (v2.2: its three-letter form);
    ``read(offset, length)`` gives bytes of the tag, header included, up to its end."""
    if version == 2:
        frame_id, id_size, header_size = {b"TLEN": b"TLE"}.get(frame_id, frame_id[:3]), 3, 6
    else:
        id_size, header_size = 4, 10
    pos = ID3V2_HEADER + (_extended_header_size(read(ID3V2_HEADER, 4), version) if flags & 0x40 else 0)
    for _ in range(MAX_ID3_FRAMES):
        header = read(pos, header_size)
        if len(header) < header_size or header[0] == 0:  # the end, or padding
            return None
        size = _frame_size(header[id_size:id_size + (3 if version == 2 else 4)], version)
        if size is None:
            return None
        if header[:id_size] == frame_id:
            frame_flags = 0 if version == 2 else int.from_bytes(header[8:10], "big")
            return _frame_content(read(pos + header_size, min(size, MAX_TEXT_FRAME)), version, frame_flags)
        pos += header_size + size
    return None


def _extended_header_size(body: bytes, version: int) -> int:
    """v2.3: a 4-byte size that excludes itself; v2.4: a synchsafe size that includes itself."""
    if version == 3:
        return 4 + int.from_bytes(body[:4], "big")
    return synchsafe(body[:4]) or 0


def _frame_size(raw: bytes, version: int) -> int | None:
    if version == 4:
        return synchsafe(raw)
    return int.from_bytes(raw, "big")


def _frame_content(data: bytes, version: int, flags: int) -> bytes | None:
    """The frame's content with its format flags undone; None if compressed or encrypted."""
    if version == 3:
        if flags & 0x00C0:  # compression, encryption
            return None
        return data[1:] if flags & 0x0020 else data  # group identifier byte
    if version == 4:
        if flags & 0x000C:  # compression, encryption
            return None
        skip = (1 if flags & 0x0040 else 0) + (4 if flags & 0x0001 else 0)  # group id, data length
        data = data[skip:]
        return data.replace(b"\xff\x00", b"\xff") if flags & 0x0002 else data
    return data


def _text(content: bytes) -> str | None:
    """A text frame's first value: an encoding byte, then the text, values separated by NUL."""
    if not content or content[0] not in ID3_ENCODINGS:
        return None
    text = content[1:].decode(ID3_ENCODINGS[content[0]], errors="replace")
    return text.split("\0", 1)[0]


def skip_leading_tags(path) -> dict[str, str]:
    """FFmpeg demuxer options that start reading past the ID3v2 tags at the start of the
    file, for the deep check's decode. FFmpeg reads every ID3v2 frame into its metadata
    dictionary, in time quadratic in their number (20,000 TXXX frames: 4 s; 40,000: 19 s;
    a 775,000-frame tag bomb: hours), and the decode needs none of them. The stream after
    the tags decodes to the same samples."""
    try:
        with Source(path) as src:
            start = leading_tags_end(src)
    except (Damage, BeyondLimits):
        return {}
    return {"skip_initial_bytes": str(start)} if start else {}


# What the deep check hands FFmpeg. FFmpeg reads every Vorbis comment (FLAC, Ogg) and
# every MP4 'udta'/'ilst' item into a dictionary, looking each key up in a list: time
# quadratic in their number (20,000 distinct items: 2-3 s; 50,000: over 10 s; a 775,000
# item bomb: hours), and quadratic in their bytes when one key repeats (its values are
# appended: 10,000 items of 1.6 KB under one key, 2 s). A real file has dozens of items,
# DJ software adds hundreds; past these bounds the deep check leaves FFmpeg out.
MAX_FFMPEG_TAG_ITEMS = 10_000
MAX_FFMPEG_TAG_BYTES = 16 * 1024 * 1024


def vorbis_comment_count(body: bytes, limit: int) -> int:
    """How many comments the Vorbis comment structure ``body`` holds, up to ``limit``.

    Vorbis I specification section 5.2.1 (also FLAC's VORBIS_COMMENT block, RFC 9639
    section 8.6, and OpusTags, RFC 7845 section 5.2): a vendor string, a comment count,
    then each comment, every string preceded by its 32-bit little-endian length. The
    comments counted are those present, as a reader walking the lengths finds them, not
    merely the declared count: a reader stops at either.
    """
    pos = 4 + int.from_bytes(body[:4], "little")
    declared = int.from_bytes(body[pos:pos + 4], "little") if pos + 4 <= len(body) else 0
    pos += 4
    count = 0
    while count < min(declared, limit) and pos + 4 <= len(body):
        pos += 4 + int.from_bytes(body[pos:pos + 4], "little")
        if pos > len(body):
            break
        count += 1
    return count


def leading_tags_end(src: Source) -> int:
    """Offset just past the ID3v2 tag(s) at the start of the file (0 if none).

    Some writers repeat the tag, so consecutive tags are skipped, up to MAX_TAG_BLOCKS.
    A tag that claims to run past the end of the file is damage: the file was cut inside
    its tags.
    """
    offset = 0
    for _ in range(MAX_TAG_BLOCKS):
        size = id3v2_size(src.read(offset, ID3V2_HEADER))
        if size is None:
            return offset
        if offset + size > src.size:
            raise Damage("truncated", f"the ID3v2 tag at byte {offset} claims {size} bytes but the file ends first")
        offset += size
    raise BeyondLimits(f"more than {MAX_TAG_BLOCKS} ID3v2 tags one after another at the start")


def trailing_tags_start(src: Source, stream_start: int = 0) -> int:
    """Offset where the trailing tag blocks begin (the file size if there are none)."""
    end = src.size
    for _ in range(MAX_TAG_BLOCKS):
        if end <= stream_start:
            return end
        block = _trailing_block(src, end, stream_start)
        if block is None:
            return end
        end -= block
    raise BeyondLimits(f"more than {MAX_TAG_BLOCKS} tag blocks one after another at the end")


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
