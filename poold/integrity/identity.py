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
  the payload's length and a BLAKE2b-128 over :data:`SLICE` bytes at the start, the
  middle and the end of the payload (over all of it when it is shorter than three
  slices), plus, for FLAC, the MD5 of the decoded audio that STREAMINFO carries.
  Three places cost one read beyond the head and tail windows the check already holds.
  It cannot see a change in a region it does not sample (the full identity can); the
  length sees any truncation or extension, and the start slice holds the encoder's
  headers (for LAME MP3s, a CRC over all the frames).
  For Ogg the length is the length of the region the audio pages fill, and the slices
  are the page-body bytes from the region's start, middle and last SLICE bytes on (page
  headers skipped): the same after the pages are renumbered and moved, found without
  walking every page.
- ``f1:<length>:<hex>`` (:func:`full_identity`): the payload's length and a BLAKE2b-128
  over all of it, read in bounded chunks, for where the whole file is read anyway
  (``--verify``, ``--deep``). :func:`hash_file` gives it in the same pass as whole-file
  digests.

A payload that cannot be located (a damaged or unknown structure) has no identity: the
functions return None and never raise.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import struct
from dataclasses import dataclass

from . import aiff, flac, mp3, mp4, ogg, riff, sniff, tags
from .base import Source

log = logging.getLogger(__name__)

SAMPLED_SCHEME = "a1"
FULL_SCHEME = "f1"
SLICE = 4096
DIGEST_SIZE = 16
READ_CHUNK = 1 << 20
# The Ogg page search reads backwards in windows of this size, up to a page's greatest
# length (RFC 3533 section 6).
OGG_SEARCH_WINDOW = 2 * SLICE


@dataclass(frozen=True)
class Payload:
    ranges: list[tuple[int, int]]
    signature: bytes = b""  # a digest of the audio the format stores outside the payload


# --- locating the payload ------------------------------------------------------------

def payload_ranges(src: Source, fmt: str) -> list[tuple[int, int]] | None:
    """(offset, length) of the audio payload's byte ranges in file order, or None."""
    payload = _locate(src, fmt)
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
    start = tags.leading_tags_end(src)
    if src.read(start, len(flac.MARKER)) != flac.MARKER:
        return None
    streaminfo = src.read(start + len(flac.MARKER) + flac.BLOCK_HEADER, flac.STREAMINFO_SIZE)
    _info, audio_start = flac.read_metadata(src, start + len(flac.MARKER))
    end = tags.trailing_tags_start(src, audio_start)
    return Payload([(audio_start, end - audio_start)], signature=streaminfo[18:34])  # RFC 9639 8.2: MD5


def _wav(src: Source) -> Payload | None:
    wave, first_chunk = riff._form(src, src.read(0, riff.FORM_HEADER))
    riff._walk(src, wave, first_chunk)
    if wave.data is None:
        return None
    return Payload([(wave.data.body, wave.data.size)])


def _aiff(src: Source) -> Payload | None:
    header = src.read(0, riff.FORM_HEADER)
    form_size = struct.unpack_from(">I", header, 4)[0]
    form = aiff.Aiff(header[8:12], None if form_size == 0 else 8 + form_size)
    aiff._walk(src, form)
    if form.sound is None:
        return None
    return Payload([(form.sound.start, form.sound.length)])


def _mp4(src: Source) -> Payload | None:
    boxes, _walked_to = mp4._walk_top_level(src)
    return Payload([(box.body, box.size - box.header) for box in boxes if box.type == b"mdat"])


def _ogg(src: Source) -> Payload | None:
    """The body of every page in the audio region: one page header read a page."""
    region = _ogg_region(src)
    if region is None:
        return None
    ranges = []
    for page in _ogg_pages(src, region[0], region[1]):
        ranges.append(_body(page))
    return Payload(ranges)


_FINDERS = {"mp3": _mp3, "flac": _flac, "wav": _wav, "aiff": _aiff, "mp4": _mp4, "ogg": _ogg}


# --- Ogg pages -----------------------------------------------------------------------

def _ogg_region(src: Source) -> tuple[int, int] | None:
    """Where the audio pages are: from the end of the header pages to the trailing tags."""
    headers = ogg.read_headers(src)
    if headers.end is None:
        return None
    end = tags.trailing_tags_start(src, headers.end)
    return (headers.end, end) if end > headers.end else None


def _ogg_pages(src: Source, offset: int, end: int):
    """The pages from ``offset`` (where one must start) to ``end``."""
    while offset < end:
        page = ogg.parse_page_header(src.read(offset, ogg.PAGE_HEADER + ogg.MAX_LACING), 0, offset)
        if page is None or page.end > end:
            raise ValueError(f"no whole Ogg page at byte {offset:,}")
        yield page
        offset = page.end


def _body(page: ogg.Page) -> tuple[int, int]:
    start = page.offset + ogg.PAGE_HEADER + len(page.lacing)
    return start, page.end - start


def _ogg_page_at(src: Source, point: int, start: int, end: int) -> ogg.Page | None:
    """The page that holds byte ``point`` of the audio region [start, end).

    A page starts at most MAX_PAGE bytes before any byte it holds: the capture pattern
    nearest before ``point`` whose header parses is taken, then pages are followed
    forward (from ``start``, a page boundary, if none is found) until one reaches past it.
    """
    page = _ogg_page_before(src, point, start) or _ogg_page_header(src, start)
    while page is not None and page.end <= point:
        page = _ogg_page_header(src, page.end) if page.end < end else None
    return page if page is not None and page.end <= end else None


def _ogg_page_before(src: Source, point: int, start: int) -> ogg.Page | None:
    """The page whose capture pattern is the last one at or before ``point``, not before ``start``."""
    high, low_limit = point + 1, max(start, point - ogg.MAX_PAGE)
    while high > low_limit:
        low = max(low_limit, high - OGG_SEARCH_WINDOW)
        window = src.read(low, high - low + len(ogg.CAPTURE) - 1)
        at = len(window)
        while (at := window.rfind(ogg.CAPTURE, 0, at + len(ogg.CAPTURE) - 1)) >= 0:
            page = _ogg_page_header(src, low + at)
            if page is not None:
                return page
        high = low
    return None


def _ogg_page_header(src: Source, offset: int) -> ogg.Page | None:
    return ogg.parse_page_header(src.read(offset, ogg.PAGE_HEADER + ogg.MAX_LACING), 0, offset)


def _ogg_bodies(src: Source, page: ogg.Page, point: int, end: int, want: int) -> bytes:
    """Up to ``want`` bytes of page bodies from ``point`` (or the next body after it) on,
    ``page`` being the page that holds ``point``."""
    parts, have = [], 0
    for following in _ogg_pages(src, page.offset, end):
        body, length = _body(following)
        skip = max(0, point - body)
        if skip < length:
            parts.append(src.read(body + skip, min(length - skip, want - have)))
            have += len(parts[-1])
        if have >= want:
            break
    return b"".join(parts)


# --- the sampled identity ------------------------------------------------------------

def sampled_identity(src: Source, fmt: str) -> str | None:
    """``a1:<payload length>:<hex>``, or None when the payload cannot be located."""
    try:
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
    total = sum(length for _offset, length in ranges)
    digest = hashlib.blake2b(payload.signature, digest_size=DIGEST_SIZE)
    if total <= 3 * SLICE:
        spans = [(0, total)]
    else:
        spans = [(0, SLICE), ((total - SLICE) // 2, SLICE), (total - SLICE, SLICE)]
    starts = _starts(ranges)
    for position, length in spans:
        digest.update(_payload_bytes(src, ranges, starts, position, length))
    return f"{SAMPLED_SCHEME}:{total}:{digest.hexdigest()}"


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
        parts.append(_cached_read(src, offset + skip, take))
        position, length, index = position + take, length - take, index + 1
    return b"".join(parts)


def _cached_read(src: Source, offset: int, length: int) -> bytes:
    """Bytes from the head or tail window when the check already read them there."""
    head = src.head
    if offset + length <= len(head):
        return head[offset:offset + length]
    tail = src._tail  # only if a check loaded it: loading it here would read more than asked
    if tail is not None and offset >= src.tail_offset:
        return tail[offset - src.tail_offset:offset - src.tail_offset + length]
    return src.read(offset, length)


def _ogg_sampled(src: Source) -> str | None:
    """Page bodies at the start, middle and end of the audio region (region offsets, so
    the same after the pages are renumbered and moved), and the region's length."""
    region = _ogg_region(src)
    if region is None:
        return None
    start, end = region
    length = end - start
    points = [start] if length <= 3 * SLICE else [start, start + (length - SLICE) // 2, end - SLICE]
    want = length if length <= 3 * SLICE else SLICE
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for point in points:
        page = _ogg_page_at(src, point, start, end)
        if page is None:
            return None
        digest.update(_ogg_bodies(src, page, point, end, want))
    return f"{SAMPLED_SCHEME}:{length}:{digest.hexdigest()}"


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
    payload is read. Raises OSError when the file cannot be read (``digests`` are then
    incomplete)."""
    with Source(path) as src:
        module = sniff(src.head)
        payload = _locate(src, module.FORMAT) if module is not None else None
        ranges = payload.ranges if payload else []
        if digests:
            sweep = (0, src.size)
        elif ranges:
            sweep = (ranges[0][0], ranges[-1][0] + ranges[-1][1])
        else:
            return None
        hasher = _PayloadHasher(ranges)
        for offset, chunk in _chunks(src, *sweep):
            for digest in digests.values():
                digest.update(chunk)
            hasher.update(offset, chunk)
    return hasher.identity() if ranges else None


def _chunks(src: Source, start: int, end: int):
    """(offset, bytes) of ``src`` from ``start`` to ``end`` in chunks of READ_CHUNK."""
    offset = start
    while offset < end:
        chunk = src.read(offset, min(READ_CHUNK, end - offset))
        if not chunk:
            raise OSError(f"the file ended at byte {offset:,} while it was read (it shrank?)")
        yield offset, chunk
        offset += len(chunk)


class _PayloadHasher:
    """Hashes the parts of consecutive file chunks that fall inside the payload ranges."""

    def __init__(self, ranges: list[tuple[int, int]]):
        self.ranges = ranges
        self.index = 0
        self.total = sum(length for _offset, length in ranges)
        self.digest = hashlib.blake2b(digest_size=DIGEST_SIZE)

    def update(self, offset: int, chunk: bytes) -> None:
        view, chunk_end = memoryview(chunk), offset + len(chunk)
        while self.index < len(self.ranges):
            start, length = self.ranges[self.index]
            end = start + length
            if start >= chunk_end:
                return
            lo, hi = max(start, offset), min(end, chunk_end)
            if lo < hi:
                self.digest.update(view[lo - offset:hi - offset])
            if end > chunk_end:
                return
            self.index += 1

    def identity(self) -> str:
        return f"{FULL_SCHEME}:{self.total}:{self.digest.hexdigest()}"
