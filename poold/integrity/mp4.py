"""MP4, M4A and QuickTime MOV: the box structure and the sample tables that point into it.

Both ISO/IEC 14496-12 (ISO base media file format, "ISOBMFF") and Apple's QuickTime File
Format ("QTFF") store a file as a sequence of boxes ("atoms"): a 32-bit size, a four-byte
type, and a 64-bit size instead when the 32-bit one is 1 (ISOBMFF 4.2). The index, 'moov',
holds per track a sample table (ISOBMFF 8.7: 'stsz'/'stz2' sample sizes, 'stsc' samples per
chunk, 'stco'/'co64' chunk offsets) giving the absolute file position of every sample; the
samples themselves sit in 'mdat' boxes.

The check walks the top-level boxes (each must fit in the file), reads 'moov' and places
every sample: a sample beyond the end of the file proves truncation, a sample outside any
box that can hold media proves a broken index. A download cut before 'moov' was written
(muxers write it last unless "fast start") has no index at all. A zero-filled tail leaves
the boxes consistent, so a few samples per track are read and tested for being entirely
zero, which the codecs listed in :data:`ZERO_PROOF_CODECS` cannot produce.
"""

from __future__ import annotations

import bisect
import re
import struct
import sys
from array import array
from dataclasses import dataclass

from .base import WINDOW, BeyondLimits, Damage, Source, Verdict, is_zero, ok, zero_run_at_end
from .tags import trailing_tags_start

FORMAT = "mp4"
EXTENSIONS = frozenset({".mp4", ".m4a", ".m4v", ".mov", ".m4b"})

# 'moov' is read whole; a real one is a few MB even for hours of video.
MOOV_LIMIT = 64 * 1024 * 1024
# Fragmented files have a moof+mdat pair per fragment; this bounds the walk.
MAX_TOP_BOXES = 200_000
# A container inside 'moov' or 'moof' holds a handful of boxes (tracks, tables, sample
# entries); more than this is a hostile file, judged `unchecked` rather than walked.
MAX_CHILD_BOXES = 10_000
# Metadata boxes ('ilst' and its items) are read only this far: the checks on them look
# for zero-filled cover art, and a metadata bomb of a million items is not damage.
MAX_METADATA_ITEMS = 1_000
# Boxes QuickTime allows as the first box of a file written before 'ftyp' existed (QTFF "Atoms").
LEGACY_FIRST_BOXES = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
# The boxes that may stand at the top level of a file: ISOBMFF's (4.2 and the box tables
# of 8.1-8.16: 'imda' is the 2019 "identified media data"; 'emsg' is DASH's event message,
# ISO/IEC 23009-1 5.10.3.3), QuickTime's ('wide', 'pnot', 'junk' as Apple's own files use
# it), and 'uuid' extensions. A box of any other type that runs past the end of the file
# is not taken for a cut box: bytes appended after a complete file read as a "box" of a
# garbage type with a garbage size, and that is no evidence of a cut.
TOP_LEVEL_BOXES = frozenset({b"ftyp", b"styp", b"pdin", b"moov", b"moof", b"mfra", b"mdat", b"imda", b"free",
                             b"skip", b"meta", b"meco", b"sidx", b"ssix", b"prft", b"emsg", b"uuid", b"wide",
                             b"pnot", b"junk"})
# Bytes of a four-character code that poold quotes in a message; any other code is
# shown in hex, so that garbage is never presented as a box name.
READABLE_CODE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-_\xa9")
# How much of what follows the last box is read to see whether it is all zeros.
PADDING_READ = 16 * 1024 * 1024
# Top-level boxes that hold structure or metadata, so a sample found inside one is misplaced.
# Elsewhere samples may lie anywhere in the file (ISOBMFF 8.7.5: offsets are file offsets,
# "not the offset into any box"), so only these are excluded besides box headers.
METADATA_BOXES = frozenset({b"ftyp", b"moov", b"moof", b"mfra", b"styp", b"sidx", b"ssix", b"prft", b"pdin", b"meta"})
# Containers inside 'moov' whose children must tile them exactly (ISOBMFF 8.1-8.7 box tables),
# each with the containers it holds; 'udta' holds free-form metadata, see _validate_containers.
CONTAINERS = {
    b"moov": (b"trak", b"mvex", b"udta"),
    b"trak": (b"mdia", b"edts", b"udta"),
    b"mdia": (b"minf",),
    b"minf": (b"stbl", b"dinf"),
    b"stbl": (), b"dinf": (), b"edts": (), b"mvex": (), b"udta": (),
    b"moof": (b"traf",), b"traf": (),
}

# iTunes-style metadata: a 'meta' box (in 'moov' or 'moov'/'udta') holding 'ilst', whose items
# hold 'data' atoms: a type indicator (type set byte 0 = well-known types, then a 24-bit type),
# a 4-byte locale, then the value (QTFF "Metadata": "Data atom", "Well-known types").
DATA_HEADER = 8
# Images and how each must end, recognised by their signature or, when zeros replaced even
# that, by the data atom's well-known type (13 JPEG, 14 PNG):
# - JPEG: SOI FF D8 then a marker; the last marker is EOI FF D9 (ITU-T T.81 B.2.1).
# - PNG: the 8-byte signature (PNG 5.2); the last chunk is IEND: length 0, "IEND", CRC AE 42 60 82
#   (PNG 11.2.5). Only its type and CRC are looked for: zero-stripping eats the zero length.
IMAGE_FORMATS = (
    ("JPEG", b"\xff\xd8\xff", b"\xff\xd9", 13),
    ("PNG", b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82", 14),
)
# An image counts as zero-filled only when it ends in at least IMAGE_ZERO_RUN zero bytes and,
# those stripped, its end marker is not among the last bytes (IMAGE_END_SLACK bytes of leeway):
# some writers pad an image after its end marker, with zeros or a few other bytes.
IMAGE_ZERO_RUN = 256
IMAGE_END_SLACK = 16

# Zero-sample probe: the last few samples of each track plus a few spread through it, and
# in fragmented files the last samples of each track run of a few fragments.
PROBE_LAST = 3
PROBE_SPREAD = 5
PROBE_FRAGMENTS = 4
PROBE_FIRST_READ = 4096
PROBE_PIECE = 1024 * 1024
PROBE_BUDGET = 32 * 1024 * 1024

# Sample entries whose every sample has non-zero bytes by construction:
# - avc1/avc3 (H.264) and hvc1/hev1 (HEVC): a sample is a run of NAL units, each prefixed by
#   its length (ISO/IEC 14496-15 5.3.2 / 8.3.2). All zeros would mean NAL units of length 0,
#   but a NAL unit has at least its header byte(s) (ITU-T H.264 7.3.1, H.265 7.3.1.1).
# - alac: every frame ends with the 3-bit ID_END element tag 0b111 (Apple ALAC encoder,
#   ALACEncoder.cpp: "add 3-bit frame end tag: ID_END").
# - ac-3/ec-3: each sample is a syncframe starting with the syncword 0x0B77 (ETSI TS 102 366 4.3).
# - fLaC: each sample is a FLAC frame starting with the 14-bit sync code 0x3FFE (FLAC format, FRAME_HEADER).
# - .mp3: MPEG audio frames start with an 11-bit all-ones sync (ISO/IEC 11172-3 2.4.1.3).
# 'mp4a' depends on what it carries; see _mp4a_is_zero_proof.
ZERO_PROOF_CODECS = frozenset({b"avc1", b"avc3", b"hvc1", b"hev1", b"alac", b"ac-3", b"ec-3", b"fLaC", b".mp3"})
# MPEG-4 Audio object types whose frames are raw_data_block()s, which end with the 3-bit
# ID_END element 0b111 (ISO/IEC 14496-3 4.4.2.1, Table 4.3): AAC Main, LC, SSR, LTP and the
# SBR/PS extensions of those (5, 29). ER object types (17+) use another syntax: not included.
AAC_OBJECT_TYPES = frozenset({1, 2, 3, 4})
SBR_PS_OBJECT_TYPES = frozenset({5, 29})
# esds objectTypeIndication values (ISO/IEC 14496-1 Table 5, mp4ra.org): MPEG-2 AAC profiles
# (raw_data_block as above) and MPEG-1/2 audio (frame sync).
MPEG2_AAC_OTIS = frozenset({0x66, 0x67, 0x68})
MPEG_AUDIO_OTIS = frozenset({0x69, 0x6B})
MPEG4_AUDIO_OTI = 0x40


class _Malformed(Exception):
    """A box inside 'moov' does not fit its parent; ``offset`` is where, within the buffer."""

    def __init__(self, offset: int, message: str):
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Box:
    type: bytes
    offset: int
    header: int
    size: int

    @property
    def body(self) -> int:
        return self.offset + self.header

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Sizes:
    """Sample sizes: one size common to all samples, or a table of each sample's."""
    common: int
    table: array
    count: int

    def of(self, first: int, n: int) -> int:
        """Total bytes of ``n`` samples from index ``first``."""
        if self.common:
            return self.common * n
        return sum(self.table[first:first + n])


@dataclass
class Track:
    number: int
    track_id: int | None
    handler: str
    codec: bytes
    zero_proof: bool
    sizes: Sizes
    run_first_chunks: array  # 'stsc': the first chunk (1-based) of each run ...
    run_samples_per_chunk: array  # ... and how many samples each of its chunks holds
    offsets: array  # 'stco'/'co64': each chunk's file offset

    @property
    def name(self) -> str:
        return f"track {self.number} ({self.handler or '?'}, {_fourcc(self.codec)})"


# --- sniffing -----------------------------------------------------------------------

def sniff(head: bytes) -> bool:
    """A plausible first box: 'ftyp', or for QuickTime files older than 'ftyp' one of the
    boxes QTFF lets a movie start with, followed by another plausible box header. A file
    cut inside its first box header still shows the start of 'ftyp'."""
    if len(head) < 8:
        return len(head) > 4 and b"ftyp".startswith(head[4:]) and 16 <= int.from_bytes(head[:4], "big") <= 4096
    size, btype = struct.unpack_from(">I4s", head)
    if btype == b"ftyp":
        brand_at = 8
        if size == 1:  # a 64-bit size follows the type (ISOBMFF 4.2)
            if len(head) < 16:
                return True
            size, brand_at = struct.unpack_from(">Q", head, 8)[0], 16
        return size >= brand_at + 8 and (len(head) < brand_at + 4 or _printable(head[brand_at:brand_at + 4]))
    if btype not in LEGACY_FIRST_BOXES:
        return False
    if size == 0:
        return btype == b"mdat"
    if size == 1:
        return len(head) >= 16 and struct.unpack_from(">Q", head, 8)[0] >= 16
    if size < 8:
        return False
    following = head[size:size + 8]
    return len(following) < 8 or _printable(following[4:8])


def _printable(fourcc: bytes) -> bool:
    return len(fourcc) == 4 and all(0x20 <= b <= 0x7E for b in fourcc)


def _fourcc(fourcc: bytes) -> str:
    """A four-character code as text, or in hex when it is not readable (garbage)."""
    if len(fourcc) == 4 and all(byte in READABLE_CODE for byte in fourcc) and fourcc.strip():
        return fourcc.decode("latin-1")
    return f"0x{fourcc.hex()}"


def _quoted(fourcc: bytes) -> str:
    name = _fourcc(fourcc)
    return name if name.startswith("0x") else f"'{name}'"


def _box_name(btype: bytes) -> str:
    """How a message names a box: "the 'moov' box", or "a box of type 0x..." for garbage."""
    name = _quoted(btype)
    return f"a box of type {name}" if name.startswith("0x") else f"the {name} box"


# --- the check ------------------------------------------------------------------------

def check(src: Source) -> Verdict:
    boxes, walked_to = _walk_top_level(src)
    moov = next((box for box in boxes if box.type == b"moov"), None)
    fragmented = any(box.type == b"moof" for box in boxes)
    if moov is None:
        _judge_leftover(src, walked_to, have_index=False)
        if fragmented:
            return ok(FORMAT, "fragmented: every box complete (no sample index to place)")
        raise Damage("truncated", "no 'moov' box (the index a player needs): the download stopped before it was written")
    buf = _read_body(src, moov)
    _validate_containers(buf, 0, len(buf), b"moov", "the movie index ('moov')")
    _check_metadata(buf, moov.body, src.size)
    tracks = [track for track in _tracks(buf) if track is not None]
    placer, probe = _Placer(src, boxes), _Probe(src)
    for track in tracks:
        probe.track(track, _place_track(placer, track))
    if fragmented:
        _check_fragments(src, buf, placer, tracks, probe)
    padding = _judge_leftover(src, walked_to, have_index=True, complete=not fragmented)
    return ok(FORMAT, _describe(tracks, boxes) + padding, _movie_duration(buf, fragmented))


def _describe(tracks: list[Track], boxes: list[Box]) -> str:
    samples = sum(track.sizes.count for track in tracks)
    fragments = sum(box.type == b"moof" for box in boxes)
    in_fragments = f" and {fragments:,} fragment(s)" if fragments else ""
    return f"{len(tracks)} track(s), {samples:,} indexed samples{in_fragments}, all inside the file"


# --- top level ------------------------------------------------------------------------

def _walk_top_level(src: Source) -> tuple[list[Box], int]:
    """The top-level boxes, and the offset where they stop (the file size unless something
    that is not a box follows; :func:`_judge_leftover` decides what that is)."""
    boxes: list[Box] = []
    offset = 0
    while offset < src.size:
        if len(boxes) >= MAX_TOP_BOXES:
            raise BeyondLimits(f"more than {MAX_TOP_BOXES:,} top-level boxes")
        box = _top_level_box(src, offset)
        if box is None:
            break
        boxes.append(box)
        offset = box.end
    return boxes, offset


def _top_level_box(src: Source, offset: int) -> Box | None:
    """The box at ``offset``, or None when no box header is there (ISOBMFF 4.2)."""
    raw = src.read(offset, 16)
    if len(raw) < 8:
        return None
    size, btype = struct.unpack_from(">I4s", raw)
    if not _printable(btype):
        return None
    header = 8
    if size == 1:
        if len(raw) < 16:
            raise Damage("truncated", f"the file ends inside the 16-byte header of {_box_name(btype)} "
                                      f"at byte {offset:,}")
        size, header = struct.unpack_from(">Q", raw, 8)[0], 16
    elif size == 0:  # "box extends to the end of the file"
        size = src.size - offset
    if size < header:
        raise Damage("bad_structure", f"{_box_name(btype)} at byte {offset:,} declares an impossible size of {size}")
    if offset + size > src.size:
        if btype not in TOP_LEVEL_BOXES or _tags_start_at(src, offset):
            return None  # not a box: judged with whatever else follows the last box
        have = src.size - offset
        raise Damage("truncated", f"{_box_name(btype)} at byte {offset:,} declares {size:,} bytes "
                                  f"but the file ends after {have:,} of them ({_percent(have, size)})")
    return Box(btype, offset, header, size)


def _zero_header(src: Source, offset: int) -> Damage:
    """Zero bytes where a top-level box type must be: types are four printable characters
    (ISOBMFF 4.2, QTFF "Atoms"), so the file was zero-filled from about here."""
    ending = ", and the file ends in zeros" if is_zero(src.tail) else ""
    return Damage("zero_filled", f"zero bytes where a box header should be at byte {offset:,} "
                                 f"({_percent(offset, src.size)} into the file){ending}")


def _zero_to_end(src: Source, start: int) -> bool:
    """Whether the file holds only zeros from ``start`` on: read whole up to PADDING_READ,
    past that judged from the first PADDING_READ bytes and the last window."""
    pos = start
    while pos < min(src.size, start + PADDING_READ):
        piece = src.read(pos, min(WINDOW, start + PADDING_READ - pos))
        if not is_zero(piece):
            return False
        pos += len(piece)
    return pos >= src.size or is_zero(src.tail[max(0, pos - src.tail_offset):])


def _tags_start_at(src: Source, offset: int) -> bool:
    """Whether ID3v1/APEv2/Lyrics3 tag blocks, appended by taggers that do not know MP4,
    fill the file from ``offset`` to its end; players ignore them."""
    return trailing_tags_start(src, offset) == offset < src.size


def _judge_leftover(src: Source, walked_to: int, have_index: bool, complete: bool = False) -> str:
    """What follows the last top-level box when that is not the end of the file; a note
    for an ``ok`` verdict when it is harmless.

    ``complete`` says every sample the index lists lies in the file and no fragment can
    be missing (no 'moof'): zeros after the last box are then padding. ISOBMFF 4.2 makes a
    file a sequence of boxes; nothing refers to what follows them, and players stop there.
    Fewer than a box header's 8 bytes are a cut inside the next box's header instead (its
    size field starts with zeros).
    """
    left = src.size - walked_to
    if left == 0 or _tags_start_at(src, walked_to):
        return ""
    if left < 8:
        raise Damage("truncated", f"the file ends {left} byte(s) into the box header at byte {walked_to:,}")
    if complete and _zero_to_end(src, walked_to):
        return f"; {left:,} zero bytes of padding follow the last box"
    if is_zero(src.read(walked_to + 4, 4)):
        raise _zero_header(src, walked_to)
    if not have_index:
        raise Damage("bad_structure", f"unrecognised data where a box header should be at byte {walked_to:,}")
    raise Damage("trailing_data", f"{left:,} bytes of unrecognised data after the last box (from byte {walked_to:,})")


# --- inside moov ------------------------------------------------------------------------

def _read_body(src: Source, box: Box) -> bytes:
    if box.size > MOOV_LIMIT:
        raise BeyondLimits(f"{_box_name(box.type)} is {box.size:,} bytes, "
                         f"over the {MOOV_LIMIT:,} the quick check reads")
    parts, pos = [], box.body
    while pos < box.end:
        part = src.read(pos, box.end - pos)
        if not part:
            break
        parts.append(part)
        pos += len(part)
    return b"".join(parts)


def _children(buf: bytes, start: int, end: int, limit: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, body start, end) of the boxes filling ``buf[start:end]``; the first ``limit``
    of them when given, else BeyondLimits past MAX_CHILD_BOXES.

    QTFF allows a user data list to end with a 32-bit zero, so fewer than 8 bytes left
    over are ignored; zeros where a longer box header should be are reported.
    """
    found, pos = [], start
    while end - pos >= 8:
        if len(found) == (limit or MAX_CHILD_BOXES):
            if limit:
                break
            raise BeyondLimits(f"more than {MAX_CHILD_BOXES:,} boxes in one container")
        if is_zero(buf[pos:pos + 8]):
            if is_zero(buf[pos:end]) and end - pos <= 8:  # QTFF terminator
                break
            raise _Malformed(pos, "zero bytes where a box header should be")
        btype, size, header = _box_header(buf, pos, end)
        if size < header or pos + size > end:
            raise _Malformed(pos, f"{_box_name(btype)} at +{pos:,} does not fit inside its parent")
        found.append((btype, pos + header, pos + size))
        pos += size
    return found


def _validate_containers(buf: bytes, start: int, end: int, btype: bytes, what: str) -> None:
    """Every container box's children must tile it (ISOBMFF 4.2); 'udta' holds free-form
    metadata and is only checked for zeros in place of its boxes. ``buf`` is the body of
    the top-level box ``what`` names."""
    try:
        children = _children(buf, start, end)
    except _Malformed as problem:
        if is_zero(buf[problem.offset:problem.offset + 8]):
            raise Damage("zero_filled", f"{what} is zero from byte +{problem.offset:,} of its body") from None
        if btype == b"udta":
            return
        raise Damage("bad_structure", f"{what} is damaged: {problem}") from None
    for child, body, child_end in children:
        if child in CONTAINERS[btype]:
            _validate_containers(buf, body, child_end, child, what)


def _child(buf: bytes, start: int, end: int, btype: bytes) -> tuple[int, int] | None:
    for child, body, child_end in _children(buf, start, end):
        if child == btype:
            return body, child_end
    return None


def _path(buf: bytes, span: tuple[int, int] | None, *types: bytes) -> tuple[int, int] | None:
    for btype in types:
        if span is None:
            return None
        span = _child(buf, span[0], span[1], btype)
    return span


# --- metadata inside moov ----------------------------------------------------------------

def _check_metadata(buf: bytes, base: int, file_size: int) -> None:
    """Zero-filled metadata: when 'moov' is written last, a zero-filled tail may reach only
    the metadata at its end (cover art, padding), leaving every sample intact.

    Two proofs: zeros where a box header of 'udta', 'meta', 'ilst' or an item should be,
    running to the end of 'moov' (box types are printable, ISOBMFF 4.2); and a cover image
    whose data ends in zeros instead of its format's end marker. ``base`` is the file
    offset of ``buf``, the body of 'moov'.
    """
    for item, body, end in _metadata_items(buf, base, file_size):
        for child, data, data_end in _metadata_children(buf, body, end, base, file_size):
            if child == b"data":
                _check_image(buf, data, data_end, item, base, file_size)


def _metadata_items(buf: bytes, base: int, file_size: int) -> list[tuple[bytes, int, int]]:
    """(type, body start, end) of each item in the 'ilst' of 'moov'/'meta' or 'moov'/'udta'/'meta'."""
    moov_children = _children(buf, 0, len(buf))  # already validated
    metas = [(body, end) for btype, body, end in moov_children if btype == b"meta"]
    for btype, body, end in moov_children:
        if btype == b"udta":
            metas += [(b, e) for t, b, e in _metadata_children(buf, body, end, base, file_size) if t == b"meta"]
    items = []
    for body, end in metas:
        start = _meta_children_start(buf, body, end, base, file_size)
        for btype, list_body, list_end in _metadata_children(buf, start, end, base, file_size):
            if btype == b"ilst":
                items += _metadata_children(buf, list_body, list_end, base, file_size)
    return items


def _meta_children_start(buf: bytes, body: int, end: int, base: int, file_size: int) -> int:
    """Where the children of 'meta' start: it is a full box in ISOBMFF (8.11.1) and iTunes
    files, a plain container in QuickTime (QTFF "Metadata atoms"); its first child is 'hdlr'.
    Neither layout: ``end`` (nothing to read), unless zeros fill it to the end of 'moov'."""
    if buf[body + 4:body + 8] == b"hdlr":
        return body
    if buf[body + 8:body + 12] == b"hdlr":
        return body + 4
    _zero_to_end_of_moov(buf, body, base, file_size)
    return end


def _metadata_children(buf: bytes, start: int, end: int, base: int, file_size: int) -> list[tuple[bytes, int, int]]:
    """The boxes filling a metadata box. Metadata is free-form enough that a box which does
    not fit is only evidence when zeros run from it to the end of 'moov'; otherwise its
    siblings are left unread."""
    try:
        return _children(buf, start, end, limit=MAX_METADATA_ITEMS)
    except _Malformed as problem:
        _zero_to_end_of_moov(buf, problem.offset, base, file_size)
        return []


# Where FFmpeg finds metadata items (libavformat/mov.c): every child of a 'udta' or an
# 'ilst' is one; these boxes are searched for them, each for the boxes listed.
TAG_HOLDERS = {b"moov": (b"trak", b"udta", b"meta"), b"trak": (b"udta", b"meta"),
               b"udta": (b"meta",), b"meta": (b"ilst",), b"ilst": ()}
TAG_LISTS = frozenset({b"udta", b"ilst"})
_ALIGNED_HDLR = re.compile(rb"(?:....)*?hdlr", re.S)


def tag_items(src: Source, limit: int) -> int:
    """How many metadata items FFmpeg reads into its dictionaries (see :mod:`.tags`), up
    to ``limit``: the children of every 'udta' and 'ilst' in 'moov', its tracks, and a
    top-level 'udta' or 'meta'. Counted as far as the boxes fit, as a reader walking them gets."""
    boxes, _ = _walk_top_level(src)
    count = 0
    for box in boxes:
        if box.type in (b"moov", b"udta", b"meta") and count < limit:
            buf = _read_body(src, box)
            count += _tag_items_in(buf, box.type, 0, len(buf), limit - count)
    return count


def _tag_items_in(buf: bytes, btype: bytes, start: int, end: int, limit: int) -> int:
    if btype == b"meta":
        start = _meta_children_start_as_ffmpeg(buf, start, end)
        if start is None:
            return 0
    count = 0
    for child, body, child_end in _boxes_that_fit(buf, start, end, limit if btype in TAG_LISTS else MAX_CHILD_BOXES):
        if btype in TAG_LISTS:
            count += 1
        if child in TAG_HOLDERS[btype] and count < limit:
            count += _tag_items_in(buf, child, body, child_end, limit - count)
    return min(count, limit)


def _meta_children_start_as_ffmpeg(buf: bytes, body: int, end: int) -> int | None:
    """Where FFmpeg reads the children of 'meta' from (libavformat/mov.c, mov_read_meta):
    the box whose type 'hdlr' it finds first, looking 4 bytes at a time; None if none."""
    found = _ALIGNED_HDLR.match(buf, body + 4, end)
    return None if found is None else found.end() - 8


def _box_header(buf: bytes, pos: int, end: int) -> tuple[bytes, int, int]:
    """(type, size, header length) of the box header at ``pos``: a 64-bit size after a
    size of 1, and a size of 0 meaning "to ``end``" (ISO/IEC 14496-12 4.2)."""
    size, btype = struct.unpack_from(">I4s", buf, pos)
    if size == 1 and end - pos >= 16:
        return btype, struct.unpack_from(">Q", buf, pos + 8)[0], 16
    return btype, (end - pos if size == 0 else size), 8


def _boxes_that_fit(buf: bytes, start: int, end: int, limit: int) -> list[tuple[bytes, int, int]]:
    """Up to ``limit`` boxes filling ``buf[start:end]``, up to the first that does not fit."""
    found, pos = [], start
    while end - pos >= 8 and len(found) < limit:
        btype, size, header = _box_header(buf, pos, end)
        if size < header or pos + size > end:
            break
        found.append((btype, pos + header, pos + size))
        pos += size
    return found


def _zero_to_end_of_moov(buf: bytes, offset: int, base: int, file_size: int) -> None:
    """Raise zero_filled when ``buf`` is all zeros from ``offset`` to its end."""
    zeros_from = len(buf) - zero_run_at_end(buf)
    if zeros_from <= offset < len(buf):
        raise Damage("zero_filled", f"the movie index ('moov') is zero from byte {base + zeros_from:,} "
                                    f"({_percent(base + zeros_from, file_size)} into the file) to its end, "
                                    "where metadata boxes should be")


def _check_image(buf: bytes, body: int, end: int, item: bytes, base: int, file_size: int) -> None:
    """A JPEG or PNG in a 'data' atom must end with its end marker (see :data:`IMAGE_FORMATS`);
    ending in a run of zeros without it, the image was cut and zero-filled."""
    if end - body < DATA_HEADER + IMAGE_ZERO_RUN or buf[end - 1] != 0:
        return
    well_known = int.from_bytes(buf[body + 1:body + 4], "big") if buf[body] == 0 else None
    image = bytes(buf[body + DATA_HEADER:end])
    kept = image.rstrip(b"\0")
    zeros = len(image) - len(kept)
    if zeros < IMAGE_ZERO_RUN:
        return
    for name, signature, end_marker, type_code in IMAGE_FORMATS:
        recognised = image.startswith(signature) or (well_known == type_code and signature.startswith(kept))
        if recognised and end_marker not in kept[-(len(end_marker) + IMAGE_END_SLACK):]:
            zero_start = base + body + DATA_HEADER + len(kept)
            raise Damage("zero_filled", f"the {len(image):,}-byte {name} image in the {_quoted(item)} metadata "
                                        f"item ends in {zeros:,} zero bytes instead of its end marker: zero "
                                        f"from byte {zero_start:,} ({_percent(zero_start, file_size)} into the file)")


def _movie_duration(buf: bytes, fragmented: bool) -> float | None:
    """Seconds from 'mvhd' (ISOBMFF 8.2.2: timescale and duration, 32- or 64-bit by version).
    In a fragmented file 'mvhd' covers only the samples in 'moov'; the whole length is in
    'mvex'/'mehd' (8.8.2), if the writer gave it."""
    mvhd = _child(buf, 0, len(buf), b"mvhd")
    if mvhd is None:
        return None
    body = buf[mvhd[0]:mvhd[1]]
    try:
        timescale = struct.unpack_from(">I", body, 20 if body[0] == 1 else 12)[0]
        if fragmented:
            mehd = _path(buf, (0, len(buf)), b"mvex", b"mehd")
            duration = _version_sized(buf[mehd[0]:mehd[1]], 4) if mehd else None
        else:
            duration = _version_sized(body, 24 if body[0] == 1 else 16)
    except (IndexError, struct.error):
        return None
    if not timescale or not duration:
        return None
    return duration / timescale


def _version_sized(body: bytes, at: int) -> int | None:
    """A full box's 64-bit (version 1) or 32-bit field at ``at``; None for all ones ("unknown")."""
    if body[0] == 1:
        value, unknown = struct.unpack_from(">Q", body, at)[0], 0xFFFFFFFFFFFFFFFF
    else:
        value, unknown = struct.unpack_from(">I", body, at)[0], 0xFFFFFFFF
    return None if value == unknown else value


def _tracks(buf: bytes) -> list[Track | None]:
    traks = [(body, end) for btype, body, end in _children(buf, 0, len(buf)) if btype == b"trak"]
    return [_track(buf, number, span) for number, span in enumerate(traks, 1)]


def _track(buf: bytes, number: int, trak: tuple[int, int]) -> Track | None:
    """The track's sample table, or None when its samples are not this file's to check
    (data in another file) or it has no sample table to read."""
    mdia = _path(buf, trak, b"mdia")
    minf = _path(buf, mdia, b"minf")
    stbl = _path(buf, minf, b"stbl")
    if stbl is None or not _self_contained(buf, _path(buf, minf, b"dinf", b"dref")):
        return None
    tables = {btype: (body, end) for btype, body, end in _children(buf, *stbl)}
    sizes = tables.get(b"stsz") or tables.get(b"stz2")
    offsets = tables.get(b"stco") or tables.get(b"co64")
    if sizes is None or offsets is None or b"stsc" not in tables:
        return None
    try:
        sample_sizes = _sample_sizes(buf, sizes, b"stsz" in tables)
        chunk_offsets = _chunk_offsets(buf, offsets, b"stco" in tables)
        run_first_chunks, run_samples_per_chunk = _samples_per_chunk(buf, tables[b"stsc"])
    except ValueError as problem:
        raise Damage("bad_structure", f"track {number}'s sample table is damaged: {problem}") from None
    codec, zero_proof = _codec(buf, tables.get(b"stsd"))
    return Track(number, _track_id(buf, _path(buf, trak, b"tkhd")), _handler(buf, _path(buf, mdia, b"hdlr")),
                 codec, zero_proof, sample_sizes, run_first_chunks, run_samples_per_chunk, chunk_offsets)


def _track_id(buf: bytes, tkhd: tuple[int, int] | None) -> int | None:
    """track_ID from 'tkhd' (ISOBMFF 8.3.2), after 32- or 64-bit creation/modification times."""
    if tkhd is None or tkhd[1] - tkhd[0] < 4:
        return None
    at = tkhd[0] + (20 if buf[tkhd[0]] == 1 else 12)
    return struct.unpack_from(">I", buf, at)[0] if at + 4 <= tkhd[1] else None


def _self_contained(buf: bytes, dref: tuple[int, int] | None) -> bool:
    """Whether every data reference is "this file" (ISOBMFF 8.7.2: flag 1 on 'url '/'urn ')."""
    if dref is None:
        return True
    try:
        entries = _children(buf, dref[0] + 8, dref[1])
    except _Malformed:
        return True  # unreadable references: assume the usual, this file
    return all(end - body >= 4 and buf[body + 3] & 1 for _btype, body, end in entries)


def _handler(buf: bytes, hdlr: tuple[int, int] | None) -> str:
    """The handler type of 'hdlr' (ISOBMFF 8.4.3): 'vide', 'soun', ..."""
    if hdlr is None or hdlr[1] - hdlr[0] < 12:
        return ""
    return _fourcc(buf[hdlr[0] + 8:hdlr[0] + 12])


def _table(buf: bytes, span: tuple[int, int], entry_size: int, header: int = 8) -> tuple[int, memoryview]:
    """Entry count and entry bytes of a full-box table; the entries must fit the box."""
    body, end = span
    if end - body < header:
        raise ValueError("table header cut short")
    count = struct.unpack_from(">I", buf, body + header - 4)[0]
    start = body + header
    if count * entry_size > end - start:
        raise ValueError(f"{count:,} entries declared, room for {(end - start) // entry_size:,}")
    return count, memoryview(buf)[start:start + count * entry_size]


def _big_endian_array(typecode: str, data) -> array:
    values = array(typecode, bytes(data))
    if sys.byteorder == "little":
        values.byteswap()
    return values


def _sample_sizes(buf: bytes, span: tuple[int, int], is_stsz: bool) -> Sizes:
    """Sample sizes from 'stsz' or 'stz2' (ISOBMFF 8.7.3)."""
    body, end = span
    if end - body < 12:
        raise ValueError("sample size box cut short")
    if is_stsz:
        common = struct.unpack_from(">I", buf, body + 4)[0]
        if common:
            return Sizes(common, array("I"), struct.unpack_from(">I", buf, body + 8)[0])
        count, data = _table(buf, span, 4, header=12)
        return Sizes(0, _big_endian_array("I", data), count)
    field_size = buf[body + 7]
    count = struct.unpack_from(">I", buf, body + 8)[0]
    if field_size not in (4, 8, 16):
        raise ValueError(f"compact sample sizes of {field_size} bits")
    needed = (count * field_size + 7) // 8
    if needed > end - body - 12:
        raise ValueError(f"{count:,} compact sample sizes declared, the box is shorter")
    data = bytes(buf[body + 12:body + 12 + needed])
    if field_size == 16:
        return Sizes(0, _big_endian_array("H", data), count)
    if field_size == 8:
        return Sizes(0, array("B", data), count)
    nibbles = array("B", (n for byte in data for n in (byte >> 4, byte & 15)))
    return Sizes(0, nibbles[:count], count)


def _chunk_offsets(buf: bytes, span: tuple[int, int], is_stco: bool) -> array:
    """Chunk offsets from 'stco' (32-bit) or 'co64' (64-bit), ISOBMFF 8.7.5."""
    width = 4 if is_stco else 8
    _count, data = _table(buf, span, width)
    return _big_endian_array("I" if is_stco else "Q", data)


def _samples_per_chunk(buf: bytes, span: tuple[int, int]) -> tuple[array, array]:
    """'stsc' runs (ISOBMFF 8.7.4) as (first chunks, samples per chunk); the first chunks
    start at 1 and increase strictly."""
    _count, data = _table(buf, span, 12)
    fields = _big_endian_array("I", data)
    first_chunks, per_chunk = fields[0::3], fields[1::3]
    previous = 0
    for first in first_chunks:
        if first <= previous:
            raise ValueError(f"sample-to-chunk run starting at chunk {first} after chunk {previous}")
        previous = first
    return first_chunks, per_chunk


def _codec(buf: bytes, stsd: tuple[int, int] | None) -> tuple[bytes, bool]:
    """The first sample entry's format and whether its samples can never be all zero."""
    if stsd is None:
        return b"????", False
    try:
        entries = _children(buf, stsd[0] + 8, stsd[1])
    except _Malformed:
        return b"????", False
    if not entries:
        return b"????", False
    codec, body, end = entries[0]
    if codec == b"mp4a":
        return codec, _mp4a_is_zero_proof(buf, body, end)
    return codec, codec in ZERO_PROOF_CODECS


def _mp4a_is_zero_proof(buf: bytes, body: int, end: int) -> bool:
    """Whether an 'mp4a' entry carries AAC or MPEG-1/2 audio, per its 'esds'.

    The audio sample entry has 28 bytes of fields before its child boxes, 16 more in
    QuickTime's version 1 and 36 more in version 2 (QTFF "Sound sample descriptions");
    QuickTime nests 'esds' inside a 'wave' box.
    """
    if end - body < 28:
        return False
    version = struct.unpack_from(">H", buf, body + 8)[0]
    extra = {0: 0, 1: 16, 2: 36}.get(version)
    if extra is None:
        return False
    try:
        children = _children(buf, body + 28 + extra, end)
        esds = next(((b, e) for t, b, e in children if t == b"esds"), None)
        wave = next(((b, e) for t, b, e in children if t == b"wave"), None)
        if esds is None and wave is not None:
            esds = _child(buf, wave[0], wave[1], b"esds")
    except _Malformed:
        return False
    return esds is not None and _esds_is_zero_proof(bytes(buf[esds[0] + 4:esds[1]]))


def _esds_is_zero_proof(descriptors: bytes) -> bool:
    """Read the ES_Descriptor (ISO/IEC 14496-1 7.2.6.5) down to the decoder config."""
    try:
        tag, pos, _length = _descriptor(descriptors, 0)
        if tag != 0x03:
            return False
        flags = descriptors[pos + 2]
        pos += 3
        if flags & 0x80:  # streamDependenceFlag
            pos += 2
        if flags & 0x40:  # URL_Flag
            pos += 1 + descriptors[pos]
        if flags & 0x20:  # OCRstreamFlag
            pos += 2
        tag, pos, _length = _descriptor(descriptors, pos)
        if tag != 0x04:
            return False
        object_type = descriptors[pos]
        if object_type in MPEG2_AAC_OTIS or object_type in MPEG_AUDIO_OTIS:
            return True
        if object_type != MPEG4_AUDIO_OTI:
            return False
        tag, pos, length = _descriptor(descriptors, pos + 13)
        return tag == 0x05 and _audio_object_type_is_aac(descriptors[pos:pos + length])
    except IndexError:
        return False


def _descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload length) of an MPEG-4 descriptor (ISO/IEC 14496-1 8.3.3:
    the length takes 1-4 bytes of 7 bits, the top bit meaning "another byte follows")."""
    tag = data[pos]
    pos += 1
    length = 0
    for _ in range(4):
        length = (length << 7) | (data[pos] & 0x7F)
        pos += 1
        if not data[pos - 1] & 0x80:
            break
    return tag, pos, length


def _audio_object_type_is_aac(config: bytes) -> bool:
    """AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): AAC, or SBR/PS over an AAC core."""
    bits = _Bits(config)
    object_type = bits.object_type()
    if object_type in SBR_PS_OBJECT_TYPES:
        if bits.take(4) == 15:  # samplingFrequencyIndex escape: explicit 24-bit rate
            bits.take(24)
        bits.take(4)  # channelConfiguration
        if bits.take(4) == 15:  # extensionSamplingFrequencyIndex
            bits.take(24)
        object_type = bits.object_type()
    return object_type in AAC_OBJECT_TYPES


class _Bits:
    def __init__(self, data: bytes):
        self.value = int.from_bytes(data, "big")
        self.left = 8 * len(data)

    def take(self, n: int) -> int:
        if n > self.left:
            raise IndexError("AudioSpecificConfig cut short")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def object_type(self) -> int:
        object_type = self.take(5)
        return 32 + self.take(6) if object_type == 31 else object_type


# --- placing the samples ----------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """Samples stored back to back: a chunk ('stco'), or a track run of a fragment ('trun')."""
    offset: int
    first: int  # index of its first sample in ``sizes``
    count: int
    sizes: Sizes

    @property
    def nbytes(self) -> int:
        return self.sizes.of(self.first, self.count)

    def sample(self, index: int) -> tuple[int, int]:
        """File offset and size of the run's ``index``-th sample."""
        return self.offset + self.sizes.of(self.first, index), self.sizes.of(self.first + index, 1)

    def samples_past(self, file_size: int) -> int:
        """How many of the run's samples end beyond ``file_size``."""
        if self.sizes.common:
            return self.count - min(self.count, max(0, file_size - self.offset) // self.sizes.common)
        end = self.offset
        for index in range(self.count):
            end += self.sizes.of(self.first + index, 1)
            if end > file_size:
                return self.count - index
        return 0


@dataclass
class Layout:
    """Where a track's chunks are: the index of each chunk's first sample and its file offset."""
    first_samples: array
    offsets: array


class _Placer:
    """Checks that runs of samples lie in the file and inside a box that may hold media."""

    def __init__(self, src: Source, boxes: list[Box]):
        self.size = src.size
        self.boxes = boxes
        self.starts = [box.offset for box in boxes]

    def misplaced(self, run: Run) -> bool:
        """Whether the run (which ends inside the file) lies outside every media box."""
        index = bisect.bisect_right(self.starts, run.offset) - 1
        if index < 0:
            return True
        box = self.boxes[index]
        inside = box.body <= run.offset and run.offset + run.nbytes <= box.end
        return not inside or box.type in METADATA_BOXES

    def judge(self, name: str, total: int, missing: int, misplaced: int | None) -> None:
        if missing:
            raise Damage("truncated", f"{name}: {missing:,} of its {total:,} samples lie beyond the end "
                                      f"of the file ({_percent(total - missing, total)} present)")
        if misplaced is not None:
            raise Damage("bad_structure", f"{name}: samples at byte {misplaced:,} lie outside every media data box")


def _chunks(track: Track):
    """Each chunk as a :class:`Run`, from the 'stsc' runs over the 'stco' offsets (ISOBMFF 8.7.4)."""
    total_chunks = len(track.offsets)
    runs = len(track.run_first_chunks)
    sample = 0
    for index, first in enumerate(track.run_first_chunks):
        per_chunk = track.run_samples_per_chunk[index]
        last = track.run_first_chunks[index + 1] - 1 if index + 1 < runs else total_chunks
        for chunk in range(first, min(last, total_chunks) + 1):
            if sample >= track.sizes.count:
                return
            n = min(per_chunk, track.sizes.count - sample)
            yield Run(track.offsets[chunk - 1], sample, n, track.sizes)
            sample += n


def _place_track(placer: _Placer, track: Track) -> Layout:
    layout = Layout(array("Q"), array("Q"))
    missing, misplaced = 0, None
    for run in _chunks(track):
        layout.first_samples.append(run.first)
        layout.offsets.append(run.offset)
        if run.nbytes == 0:
            continue
        if run.offset + run.nbytes > placer.size:
            missing += run.samples_past(placer.size)
        elif misplaced is None and placer.misplaced(run):
            misplaced = run.offset
    placer.judge(track.name, track.sizes.count, missing, misplaced)
    return layout


# --- movie fragments (ISOBMFF 8.8) --------------------------------------------------------

@dataclass(frozen=True)
class FragmentRun:
    track_id: int
    run: Run


def _check_fragments(src: Source, buf: bytes, placer: _Placer, tracks: list[Track], probe: "_Probe") -> None:
    """Place and probe the samples of a few movie fragments: the last and some spread out.

    A cut inside a fragment already shows as a box running past the end of the file; this
    finds index damage and zero-filled fragment data.
    """
    moofs = [box for box in placer.boxes if box.type == b"moof"]
    by_id = {track.track_id: track for track in tracks}
    defaults = _trex_default_sizes(buf)
    for index in _spread(len(moofs), PROBE_FRAGMENTS):
        moof = moofs[index]
        body = _read_body(src, moof)
        _validate_containers(body, 0, len(body), b"moof", "a movie fragment header ('moof')")
        for fragment_run in _fragment_runs(body, moof.offset, defaults):
            track = by_id.get(fragment_run.track_id)
            name = track.name if track else f"track ID {fragment_run.track_id}"
            run = fragment_run.run
            missing = run.samples_past(placer.size) if run.offset + run.nbytes > placer.size else 0
            misplaced = run.offset if not missing and run.nbytes and placer.misplaced(run) else None
            placer.judge(f"{name}, fragment at byte {moof.offset:,}", run.count, missing, misplaced)
            if track is not None and track.zero_proof:
                for sample in range(max(0, run.count - PROBE_LAST), run.count):
                    label = f"sample {sample + 1:,} of {run.count:,} in the fragment at byte {moof.offset:,}"
                    probe.sample(track, label, *run.sample(sample))


def _trex_default_sizes(buf: bytes) -> dict[int, int]:
    """default_sample_size per track_ID from 'mvex'/'trex' (ISOBMFF 8.8.3)."""
    mvex = _child(buf, 0, len(buf), b"mvex")
    if mvex is None:
        return {}
    defaults = {}
    for btype, body, end in _children(buf, *mvex):
        if btype == b"trex" and end - body >= 20:
            track_id, size = struct.unpack_from(">I8xI", buf, body + 4)
            defaults[track_id] = size
    return defaults


def _fragment_runs(body: bytes, moof_offset: int, defaults: dict[int, int]) -> list[FragmentRun]:
    """The track runs of one 'moof', with their absolute data offsets (ISOBMFF 8.8.7, 8.8.8)."""
    runs: list[FragmentRun] = []
    previous_data_end = None
    try:
        for btype, start, end in _children(body, 0, len(body)):
            if btype != b"traf":
                continue
            track_id, base, default_size = _fragment_header(body, start, end, moof_offset, previous_data_end, defaults)
            data_end = base
            for child, child_start, child_end in _children(body, start, end):
                if child == b"trun":
                    run = _track_run(body, child_start, child_end, base, data_end, default_size)
                    runs.append(FragmentRun(track_id, run))
                    data_end = run.offset + run.nbytes
            previous_data_end = data_end
    except (struct.error, IndexError, ValueError) as problem:
        raise Damage("bad_structure", f"the movie fragment at byte {moof_offset:,} is damaged: {problem}") from None
    return runs


def _fragment_header(body: bytes, start: int, end: int, moof_offset: int,
                     previous_data_end: int | None, defaults: dict[int, int]) -> tuple[int, int, int]:
    """(track_ID, base data offset, default sample size) from 'tfhd' (ISOBMFF 8.8.7).

    Without an explicit base-data-offset, the base is the 'moof' itself for the first track
    fragment (or always, with default-base-is-moof) and the end of the previous track
    fragment's data otherwise.
    """
    tfhd = _child(body, start, end, b"tfhd")
    if tfhd is None:
        raise ValueError("a track fragment without 'tfhd'")
    flags = int.from_bytes(body[tfhd[0] + 1:tfhd[0] + 4], "big")
    track_id = struct.unpack_from(">I", body, tfhd[0] + 4)[0]
    pos = tfhd[0] + 8
    base = None
    if flags & 0x01:
        base = struct.unpack_from(">Q", body, pos)[0]
        pos += 8
    pos += 4 * bool(flags & 0x02) + 4 * bool(flags & 0x08)
    default_size = defaults.get(track_id, 0)
    if flags & 0x10:
        default_size = struct.unpack_from(">I", body, pos)[0]
    if pos + 4 * bool(flags & 0x10) > tfhd[1]:
        raise ValueError("'tfhd' shorter than its flags say")
    if base is None:
        base = moof_offset if flags & 0x020000 or previous_data_end is None else previous_data_end
    return track_id, base, default_size


def _track_run(body: bytes, start: int, end: int, base: int, data_end: int, default_size: int) -> Run:
    """A 'trun' (ISOBMFF 8.8.8): its samples start at base + data_offset, or where the
    previous run's data ended; each sample record holds the fields its flags select."""
    flags = int.from_bytes(body[start + 1:start + 4], "big")
    count = struct.unpack_from(">I", body, start + 4)[0]
    pos = start + 8
    offset = data_end
    if flags & 0x01:
        offset = base + struct.unpack_from(">i", body, pos)[0]
        pos += 4
    pos += 4 * bool(flags & 0x04)
    fields = [flag for flag in (0x100, 0x200, 0x400, 0x800) if flags & flag]
    if not fields:
        return Run(offset, 0, count, Sizes(default_size, array("I"), count))
    record = 4 * len(fields)
    if pos + count * record > end:
        raise ValueError(f"'trun' declares {count:,} samples, its box is shorter")
    if 0x200 not in fields:
        return Run(offset, 0, count, Sizes(default_size, array("I"), count))
    values = _big_endian_array("I", body[pos:pos + count * record])
    return Run(offset, 0, count, Sizes(0, values[fields.index(0x200)::len(fields)], count))


# --- zero-filled samples ----------------------------------------------------------------

class _Probe:
    """Reads samples whose codec cannot make them all zero, within a byte budget."""

    def __init__(self, src: Source):
        self.src = src
        self.budget = PROBE_BUDGET

    def track(self, track: Track, layout: Layout) -> None:
        """The last few samples of the track and a few spread through it."""
        if not track.zero_proof:
            return
        count = track.sizes.count
        for index in sorted(set(range(max(0, count - PROBE_LAST), count)) | set(_spread(count, PROBE_SPREAD)),
                            reverse=True):
            chunk = bisect.bisect_right(layout.first_samples, index) - 1
            if chunk < 0:
                continue
            first = layout.first_samples[chunk]
            run = Run(layout.offsets[chunk], first, index - first + 1, track.sizes)
            self.sample(track, f"sample {index + 1:,} of {count:,}", *run.sample(index - first))

    def sample(self, track: Track, label: str, offset: int, size: int) -> None:
        if size == 0 or self.budget <= 0 or offset + size > self.src.size:
            return
        zero, spent = _all_zero(self.src, offset, size, self.budget)
        self.budget -= spent
        if zero:
            raise Damage("zero_filled", f"{track.name}: {label} (byte {offset:,}, "
                                        f"{_percent(offset, self.src.size)} into the file) is all zero bytes, "
                                        "which its codec never produces")


def _spread(count: int, n: int) -> list[int]:
    """Up to ``n`` indices spread evenly over ``range(count)``, always including the last."""
    if count <= 0:
        return []
    return sorted({count - 1} | {count * k // n for k in range(n)})


def _all_zero(src: Source, offset: int, size: int, budget: int) -> tuple[bool, int]:
    """Whether ``size`` bytes at ``offset`` are all zero, and how many bytes that took.

    A real sample shows a non-zero byte in its first few bytes, so the first read is
    small and later ones happen only while everything so far is zero.
    """
    spent, step = 0, PROBE_FIRST_READ
    while spent < size:
        if spent >= budget:
            return False, spent
        piece = src.read(offset + spent, min(step, size - spent))
        if not piece:
            return False, spent
        spent += len(piece)
        if not is_zero(piece):
            return False, spent
        step = PROBE_PIECE
    return True, spent


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"
