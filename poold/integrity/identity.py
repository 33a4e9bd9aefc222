"""Audio identity: a fingerprint of a file's audio payload alone.

DJ software writes into the files (cue points, beat grids, keys, artwork) and DJs rename
and move them; none of that touches the audio. The identity is taken over the bytes of
the audio payload only, so it stays the same through all of that and differs when the
audio differs. The payload, per format (:func:`payload_ranges`, byte ranges in file order):

- MP3: from the first frame (after any ID3v2 tags and junk before it) to where the
  trailing tags begin (ID3v1, TAG+, APEv2, Lyrics3, an appended ID3v2 with its footer);
  see :mod:`.tags`. The first frame holds the Xing/LAME header and its CRC of the music.
- FLAC: the frames, from the end of the metadata blocks (which a PICTURE block or a
  grown VORBIS_COMMENT or PADDING moves) to the trailing tags.
- MP4/M4A/MOV: the bodies of the 'mdat' boxes. Taggers rewrite 'moov' (and with it the
  chunk offsets in 'stco'/'co64' when 'moov' grows in front of the samples), move it
  behind 'mdat', use or add 'free' boxes, or add boxes at the end; none of them touches
  an 'mdat' body, and its header (which may switch to a 64-bit size) is left out. The
  samples could instead be located through the sample tables ('stsz', 'stsc', 'stco'),
  which would also survive a remux, but a remux is not a retag, and parsing 'moov' again
  would double the quick check's cost on MP4; the top-level box walk is a few reads.
- Ogg (Vorbis, Opus, FLAC): the bodies of the pages after the header packets, i.e. the
  audio packets' bytes back to back. Page headers are left out: their sequence numbers
  and CRCs change when a grown comment adds header pages and the audio pages are
  renumbered (mutagen, TagLib), and a tool that repaginates the audio (vcedit) changes
  the segment tables and granule positions too, while the packet bytes stay.
- WAV (RIFF, RF64, BW64): the body of the 'data' chunk. AIFF/AIFF-C: the sample frames
  of 'SSND' (after its offset and blockSize fields, and the offset).

Two identities, each with a version prefix so that no future scheme is confused with
these:

- ``a1:<length>:<hex>`` (:func:`sampled_identity`), cheap enough for the quick check:
  the payload's length and a hash over :data:`SLICE` bytes at its start, middle and end
  (over all of it when it is shorter than three slices), plus, for FLAC, the MD5 of the
  decoded audio that STREAMINFO carries. The start comes from the head window the check
  read, the end from one small read at the end of the file that also serves the
  trailing-tag probes; the middle costs one read. It cannot see a change in a region it
  does not sample (the full identity can): the length sees any truncation or extension,
  and the start holds the encoder's headers (for LAME MP3s, a CRC over all the frames).
  For Ogg the length is that of the region the audio pages fill, and the slices are
  windows of that region with the page headers cut out (:func:`_ogg_bodies_within`):
  the same after the pages are renumbered and moved, found without walking every page.
- ``f1:<length>:<hex>`` (:func:`full_identity`): the payload's length and a hash over
  all of it, read in bounded chunks, for where the whole file is read anyway
  (``--verify``, ``--deep``). :func:`hash_file` gives it in the same pass as whole-file
  digests.

The hash is SHA-256 cut to 128 bits (a chance collision needs about 2^64 payloads of one
length): OpenSSL runs it on the CPU's SHA instructions, where BLAKE2b, which Python
carries in plain C, took 1.5-2x as long on the slices.

A payload that cannot be located (a damaged or unknown structure) has no identity:
:func:`payload_ranges`, :func:`sampled_identity` and :func:`full_identity` return None
and never raise.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import struct
from typing import NamedTuple

from . import aiff, flac, mp3, mp4, ogg, riff, sniff, tags
from .base import MAX_READ, Source

log = logging.getLogger(__name__)

SAMPLED_SCHEME = "a1"
FULL_SCHEME = "f1"
SLICE = 1024
DIGEST_CHARS = 32  # hex digits: SHA-256 cut to 128 bits
READ_CHUNK = 1 << 20
# Reads near the end of the file (trailing tags, the last slice) come from one window of
# this size, unless the check loaded the Source's larger tail window.
END_WINDOW = 4096
LONGEST_PAGE_HEADER = ogg.PAGE_HEADER + ogg.MAX_LACING
MAX_OGG_PAGES = 1 << 20  # a 2-hour Vorbis file of 4 KiB pages has about 125,000


class Payload(NamedTuple):
    ranges: list[tuple[int, int]]
    signature: bytes = b""  # a digest of the audio the format stores outside the payload


# --- locating the payload ------------------------------------------------------------

def payload_ranges(src: Source, fmt: str) -> list[tuple[int, int]] | None:
    """(offset, length) of the audio payload's byte ranges in file order, or None."""
    try:
        windows = _Windows(src)
    except OSError:
        return None
    payload = _locate(windows, fmt)
    return payload.ranges if payload else None


def _locate(src: Source, fmt: str) -> Payload | None:
    finder = _FINDERS.get(fmt)
    if finder is None:
        return None
    try:
        payload = finder(src)
    except Exception as exc:  # damage, limits, a read error: no identity, never an error
        log.debug("no audio payload located in %s: %s: %s", src.path, type(exc).__name__, exc)
        return None
    if payload is None:
        return None
    if len(payload.ranges) == 1:  # the usual case
        offset, length = payload.ranges[0]
        return payload if length > 0 and 0 <= offset and offset + length <= src.size else None
    ranges = _clean(payload.ranges, src.size)
    return Payload(ranges, payload.signature) if ranges else None


def _clean(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]] | None:
    """The non-empty ranges, which must lie in the file, in order, without overlap."""
    kept, previous_end = [], 0
    for offset, length in ranges:
        if length <= 0:
            continue
        if offset < previous_end or offset + length > size:
            return None
        kept.append((offset, length))
        previous_end = offset + length
    return kept or None


def _mp3(src: Source) -> Payload | None:
    tags_end = tags.leading_tags_end(src)
    audio_end = tags.trailing_tags_start(src, tags_end)
    first = tags_end
    if mp3.header_at(src.read(tags_end, mp3.HEADER), 0) is None:  # junk before the first frame
        found = mp3._first_frame(src, tags_end, audio_end)
        if found is None:
            return None
        first = found[0]
    return Payload([(first, audio_end - first)])


def _flac(src: Source) -> Payload | None:
    """After the metadata blocks (RFC 9639 8.1: a 4-byte header each, with the last-block
    flag and a 24-bit length), to the trailing tags; with STREAMINFO's MD5 (8.2)."""
    start = tags.leading_tags_end(src)
    if src.read(start, len(flac.MARKER)) != flac.MARKER:
        return None
    offset = start + len(flac.MARKER)
    streaminfo = src.read(offset + flac.BLOCK_HEADER, flac.STREAMINFO_SIZE)
    while True:
        header = src.read(offset, flac.BLOCK_HEADER)
        if len(header) < flac.BLOCK_HEADER:
            return None
        offset += flac.BLOCK_HEADER + int.from_bytes(header[1:], "big")
        if header[0] & 0x80:
            break
    end = tags.trailing_tags_start(src, offset)
    return Payload([(offset, end - offset)], signature=streaminfo[18:34])


def _wav(src: Source) -> Payload | None:
    """The body of the first 'data' chunk. Plain RIFF is walked here, chunk header by
    chunk header; RF64/BW64 (sizes in 'ds64') and sizes a streaming writer left unfilled
    are resolved by the checker's own walk (:mod:`.riff`)."""
    if src.read(0, 4) != b"RIFF":
        return _wav_walked(src)
    offset = riff.FORM_HEADER
    for _ in range(riff.MAX_CHUNKS):
        raw = src.read(offset, riff.CHUNK_HEADER)
        if len(raw) < riff.CHUNK_HEADER:
            return None
        size = int.from_bytes(raw[4:], "little")
        if raw[:4] == b"data":
            return _wav_walked(src) if size in riff.STREAMED_SIZES else Payload([(offset + riff.CHUNK_HEADER, size)])
        offset += riff.CHUNK_HEADER + size + (size & 1)
    return None


def _wav_walked(src: Source) -> Payload | None:
    wave, first_chunk = riff._form(src, src.read(0, riff.FORM_HEADER))
    riff._walk(src, wave, first_chunk)
    if wave.data is None:
        return None
    return Payload([(wave.data.body, wave.data.size)])


def _aiff(src: Source) -> Payload | None:
    """The sample frames of the first 'SSND' chunk: after its offset and blockSize fields,
    and the offset (AIFF 1.3 "Sound Data Chunk"). An SSND size of 0 (left by a streaming
    writer) is resolved by the checker's own walk (:mod:`.aiff`)."""
    offset = riff.FORM_HEADER
    for _ in range(riff.MAX_CHUNKS):
        raw = src.read(offset, riff.CHUNK_HEADER + 4)
        if len(raw) < riff.CHUNK_HEADER:
            return None
        size = int.from_bytes(raw[4:8], "big")
        if raw[:4] == b"SSND":
            if size == 0 or len(raw) < riff.CHUNK_HEADER + 4:
                return _aiff_walked(src)
            start = offset + riff.CHUNK_HEADER + 8 + int.from_bytes(raw[8:12], "big")
            return Payload([(start, offset + riff.CHUNK_HEADER + size - start)])
        offset += riff.CHUNK_HEADER + size + (size & 1)
    return None


def _aiff_walked(src: Source) -> Payload | None:
    header = src.read(0, riff.FORM_HEADER)
    form_size = struct.unpack_from(">I", header, 4)[0]
    form = aiff.Aiff(header[8:12], None if form_size == 0 else 8 + form_size)
    aiff._walk(src, form)
    if form.sound is None:
        return None
    return Payload([(form.sound.start, form.sound.length)])


def _mp4(src: Source) -> Payload | None:
    """The 'mdat' bodies among the top-level boxes (ISOBMFF 4.2: 32-bit size and type,
    a 64-bit size when the size is 1, to the end of the file when it is 0). The walk
    stops where :func:`.mp4._walk_top_level` does: at something that is not a box
    header, such as tags appended by a tagger that does not know MP4."""
    ranges, offset = [], 0
    for _ in range(mp4.MAX_TOP_BOXES):
        raw = src.read(offset, 16)
        if len(raw) < 8 or not _printable(raw[4:8]):
            break
        size, header = int.from_bytes(raw[:4], "big"), 8
        if size == 1 and len(raw) == 16:
            size, header = int.from_bytes(raw[8:16], "big"), 16
        elif size == 0:
            size = src.size - offset
        if size < header or offset + size > src.size:
            break
        if raw[4:8] == b"mdat":
            ranges.append((offset + header, size - header))
        offset += size
    return Payload(ranges)


def _printable(fourcc: bytes) -> bool:
    return min(fourcc) >= 0x20 and max(fourcc) <= 0x7E


def _ogg(src: Source) -> Payload | None:
    """The body of every page in the audio region: one page header read a page. A list
    of more than MAX_OGG_PAGES ranges is not made (the full identity walks the pages
    without one)."""
    region = _ogg_region(src)
    if region is None:
        return None
    ranges = []
    for page in _ogg_pages(src, region[0], region[1]):
        if len(ranges) == MAX_OGG_PAGES:
            return None
        ranges.append(_body(page))
    return Payload(ranges)


_FINDERS = {"mp3": _mp3, "flac": _flac, "wav": _wav, "aiff": _aiff, "mp4": _mp4, "ogg": _ogg}


# --- Ogg pages -----------------------------------------------------------------------

def _ogg_region(src: Source) -> tuple[int, int] | None:
    """Where the audio pages are: after the page on which the first logical stream's
    header packets end (as :func:`.ogg.read_headers` counts them, without the CRCs the
    check has verified), to the trailing tags."""
    page = _ogg_page_header(src, 0)
    if page is None or not page.flags & ogg.BOS:
        return None
    reader, serial = ogg._PacketReader(), page.serial
    reader.feed(page, src.read(0, page.end))
    if not reader.done:
        return None
    codec = ogg.identify(reader.done[0])
    offset = page.end
    while not ogg._headers_complete(codec, reader.done):
        page = _ogg_page_header(src, offset)
        if page is None or offset > ogg.HEADER_BUDGET:
            return None
        if page.serial == serial:
            reader.feed(page, src.read(offset, page.end - offset))
        offset = page.end
    end = tags.trailing_tags_start(src, offset)
    return (offset, end) if end > offset else None


def _ogg_page_header(src: Source, offset: int) -> ogg.Page | None:
    return ogg.parse_page_header(src.read(offset, ogg.PAGE_HEADER + ogg.MAX_LACING), 0, offset)


def _ogg_pages(src: Source, offset: int, end: int):
    """The pages from ``offset`` (where one must start) to ``end``."""
    while offset < end:
        page = _ogg_page_header(src, offset)
        if page is None or page.end > end:
            raise ValueError(f"no whole Ogg page at byte {offset:,}")
        yield page
        offset = page.end


def _body(page: ogg.Page) -> tuple[int, int]:
    start = page.offset + ogg.PAGE_HEADER + len(page.lacing)
    return start, page.end - start


def _ogg_bodies_within(src: Source, region: tuple[int, int], low: int, high: int) -> bytes:
    """The bytes in [low, high) of the audio region that lie in page bodies.

    Page headers are found by their capture pattern and cut out with their segment
    tables. The read starts two longest headers before ``low``: a header reaching into
    the range starts within one, and a capture pattern that turns up inside a header (in
    its CRC, say) is passed over because the header holding it was found first. A capture
    pattern that is chance data in a body cuts out some audio bytes instead, the same
    ones every time: what is hashed depends only on the bodies and the lengths of the
    headers, not on the sequence numbers and CRCs that renumbering changes.
    """
    start, end = region
    read_from = max(start, low - 2 * LONGEST_PAGE_HEADER)
    data = src.read(read_from, min(end, high + ogg.PAGE_HEADER) - read_from)
    parts, keep_from, headers_end, stop = [], low - read_from, 0, high - read_from
    at = data.find(ogg.CAPTURE)
    while 0 <= at < stop:
        if at >= headers_end:
            headers_end = at + ogg.PAGE_HEADER + (data[at + 26] if at + 26 < len(data) else ogg.MAX_LACING)
            if at > keep_from:
                parts.append(data[keep_from:at])
            keep_from = max(keep_from, headers_end)
        at = data.find(ogg.CAPTURE, at + 1)
    if keep_from < stop:
        parts.append(data[keep_from:stop])
    return b"".join(parts)


# --- the sampled identity ------------------------------------------------------------

def sampled_identity(src: Source, fmt: str) -> str | None:
    """``a1:<payload length>:<hex>``, or None when the payload cannot be located."""
    try:
        src = _Windows(src)
        if fmt == "ogg":
            return _ogg_sampled(src)
        payload = _locate(src, fmt)
        if payload is None:
            return None
        return _sampled(src, payload)
    except Exception as exc:
        log.debug("no sampled identity for %s: %s: %s", src.path, type(exc).__name__, exc)
        return None


def _sampled(src: Source, payload: Payload) -> str:
    ranges = payload.ranges
    total = ranges[0][1] if len(ranges) == 1 else sum(length for _offset, length in ranges)
    digest = hashlib.sha256(payload.signature)
    if total <= 3 * SLICE:
        spans = [(0, total)]
    else:
        spans = [(0, SLICE), ((total - SLICE) // 2, SLICE), (total - SLICE, SLICE)]
    if len(ranges) == 1:  # the usual case, without the mapping through the ranges
        for position, length in spans:
            digest.update(src.read(ranges[0][0] + position, length))
    else:
        starts = _starts(ranges)
        for position, length in spans:
            digest.update(_payload_bytes(src, ranges, starts, position, length))
    return f"{SAMPLED_SCHEME}:{total}:{_hex(digest)}"


def _starts(ranges: list[tuple[int, int]]) -> list[int]:
    """Each range's offset within the payload."""
    starts, position = [], 0
    for _offset, length in ranges:
        starts.append(position)
        position += length
    return starts


def _payload_bytes(src: Source, ranges, starts: list[int], position: int, length: int) -> bytes:
    """``length`` bytes of the payload from payload offset ``position``."""
    index = bisect.bisect_right(starts, position) - 1
    parts = []
    while length > 0 and index < len(ranges):
        offset, size = ranges[index]
        skip = position - starts[index]
        take = min(size - skip, length)
        parts.append(src.read(offset + skip, take))
        position, length, index = position + take, length - take, index + 1
    return b"".join(parts)


class _Windows:
    """A Source whose reads come from its head window and from one window at the end
    where they fall inside them: the check has read the head, and the format finders
    (trailing tags) and the end slice read around the end, so that is read once for all.
    """

    def __init__(self, src: Source):
        self.src, self.path, self.size = src, src.path, src.size
        self.head, self.tail_offset = src.head, src.tail_offset
        self._head_length = len(self.head)
        self._end_offset = max(0, self.size - END_WINDOW)
        self._end: bytes | None = None
        self._fd = src._file.fileno()  # os.pread: one system call, no seek, no buffer refill

    @property
    def tail(self) -> bytes:
        return self.src.tail

    def fileobj(self):
        return self.src.fileobj()

    def read(self, offset: int, length: int) -> bytes:
        """As Source.read: up to ``length`` bytes at ``offset``, clamped to the file and MAX_READ."""
        if offset < 0 or offset >= self.size or length <= 0:
            return b""
        end = min(offset + length, self.size, offset + MAX_READ)
        if end <= self._head_length:
            return self.head[offset:end]
        if offset >= self.tail_offset and self.src._tail is not None:  # the check loaded the tail
            return self.src._tail[offset - self.tail_offset:end - self.tail_offset]
        if offset >= self._end_offset:
            if self._end is None:
                self._end = os.pread(self._fd, self.size - self._end_offset, self._end_offset)
            return self._end[offset - self._end_offset:end - self._end_offset]
        return os.pread(self._fd, end - offset, offset)


def _ogg_sampled(src: Source) -> str | None:
    """The body bytes in three windows of the audio region (start, middle, end, in offsets
    of the region, which renumbering and growing header pages leave alone), and the
    region's length."""
    region = _ogg_region(src)
    if region is None:
        return None
    start, end = region
    length = end - start
    windows = [(0, length)] if length <= 3 * SLICE else [(0, SLICE), ((length - SLICE) // 2, SLICE), (length - SLICE, SLICE)]
    digest = hashlib.sha256()
    for position, size in windows:
        digest.update(_ogg_bodies_within(src, region, start + position, start + position + size))
    return f"{SAMPLED_SCHEME}:{length}:{_hex(digest)}"


# --- the full identity ---------------------------------------------------------------

def full_identity(path: str | os.PathLike) -> str | None:
    """``f1:<payload length>:<hex>`` over the whole payload, read in bounded chunks; None
    when the file cannot be read or its payload cannot be located."""
    try:
        return hash_file(path, {})
    except OSError as exc:
        log.debug("no full identity for %s: %s", path, exc)
        return None


def hash_file(path: str | os.PathLike, digests: dict) -> str | None:
    """The full identity, reading the file once; every byte of the file also goes to each
    of ``digests`` (hashlib objects), so a caller that hashes the whole file anyway
    (``--verify``) gets the identity from the same pass. With no ``digests`` only the
    payload's extent is read. Raises OSError when the file cannot be read (``digests``
    are then incomplete)."""
    with Source(path) as src:
        module = sniff(src.head)
        extent, ranges = _payload_stream(_Windows(src), module.FORMAT) if module else (None, iter(()))
        if digests:
            sweep = (0, src.size)
        elif extent:
            sweep = extent
        else:
            return None
        hasher = _PayloadHasher(ranges)
        for offset, chunk in _chunks(src, *sweep):
            for digest in digests.values():
                digest.update(chunk)
            hasher.update(offset, chunk)
    return hasher.identity() if extent else None


def _payload_stream(src: "_Windows", fmt: str):
    """(first offset, end) of the payload and an iterator over its ranges; (None, empty)
    when it cannot be located. Ogg's ranges, one a page, are produced as the pages are
    walked, so that memory stays bounded however many pages a file has."""
    if fmt != "ogg":
        payload = _locate(src, fmt)
        if payload is None:
            return None, iter(())
        return (payload.ranges[0][0], sum(payload.ranges[-1])), iter(payload.ranges)
    try:
        region = _ogg_region(src)
    except Exception as exc:
        log.debug("no Ogg audio region in %s: %s: %s", src.path, type(exc).__name__, exc)
        return None, iter(())
    if region is None:
        return None, iter(())
    return region, (_body(page) for page in _ogg_pages(src, *region))


def _chunks(src: Source, start: int, end: int):
    """(offset, bytes) of ``src`` from ``start`` to ``end`` in chunks of READ_CHUNK."""
    offset = start
    while offset < end:
        chunk = src.read(offset, min(READ_CHUNK, end - offset))
        if not chunk:
            raise OSError(f"the file ended at byte {offset:,} while it was read (it shrank?)")
        yield offset, chunk
        offset += len(chunk)


def _hex(digest) -> str:
    return digest.hexdigest()[:DIGEST_CHARS]


class _PayloadHasher:
    """Hashes the parts of consecutive file chunks that fall inside the payload ranges,
    taken one at a time from an iterator (ascending, not overlapping). A range the
    iterator fails to give (an Ogg page that is not whole) leaves no identity."""

    def __init__(self, ranges):
        self.ranges = ranges
        self.total = 0
        self.failed = False
        self.digest = hashlib.sha256()
        self.current = self._next()

    def _next(self) -> tuple[int, int] | None:
        try:
            current = next(self.ranges, None)
        except Exception as exc:
            log.debug("the payload's ranges ended early: %s: %s", type(exc).__name__, exc)
            self.failed = True
            return None
        if current is not None:
            self.total += current[1]
        return current

    def update(self, offset: int, chunk: bytes) -> None:
        view, chunk_end = memoryview(chunk), offset + len(chunk)
        while self.current is not None:
            start, length = self.current
            end = start + length
            if start >= chunk_end:
                return
            low, high = max(start, offset), min(end, chunk_end)
            if low < high:
                self.digest.update(view[low - offset:high - offset])
            if end > chunk_end:
                return
            self.current = self._next()

    def identity(self) -> str | None:
        """The identity once every range was hashed; None if some were not."""
        if self.failed or self.current is not None:
            return None
        return f"{FULL_SCHEME}:{self.total}:{_hex(self.digest)}"
