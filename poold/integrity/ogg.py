"""Ogg carrying Vorbis, Opus or FLAC: whole header pages at the start, a final page at the end.

Ogg (RFC 3533) is a sequence of pages, each with a capture pattern, an explicit length
(its segment table) and a CRC-32, so both ends of a file can be judged exactly:

- the start: the first logical stream's pages are walked until its codec header packets
  are complete (Vorbis I specification section 4.2; RFC 7845 section 5 for Opus; the
  FLAC-in-Ogg mapping, RFC 9639 section 10.1), every page checked against its CRC;
- the end: the last page must end exactly at the end of the file, pass its CRC and carry
  the end-of-stream flag (RFC 3533 section 4). Its granule position gives the duration.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from . import tags
from .base import WINDOW, BeyondLimits, Damage, Source, Verdict, is_zero, ok, zero_run_at_end
from .crc import crc32_ogg

FORMAT = "ogg"
EXTENSIONS = frozenset({".ogg", ".oga", ".opus"})

CAPTURE = b"OggS"
PAGE_HEADER = 27
MAX_LACING = 255
MAX_PAGE = PAGE_HEADER + MAX_LACING + MAX_LACING * 255  # RFC 3533 section 6: 65,307 bytes
CONTINUED, BOS, EOS = 0x01, 0x02, 0x04
NO_GRANULE = -1  # RFC 3533 section 6: no packet finishes on the page
CRC_FIELD = slice(22, 26)
# Header packets larger than this (say, a huge cover art comment) are not walked to their
# end; the tail checks still apply.
HEADER_BUDGET = 16 * 1024 * 1024
PACKET_PREFIX = 64  # bytes kept of each header packet: enough for every identification header
# A zero run this long at the end is a zero-filled tail, not a chance ending of a page.
ZERO_RUN = 64
# A page header ("OggS", version 0) with any one byte of its capture pattern damaged.
NEAR_CAPTURE = re.compile(rb"(?=.ggS\0|O.gS\0|Og.S\0|Ogg.\0)", re.S)
# Zero padding after the end-of-stream page is looked for up to this far from the end.
PADDING_LIMIT = 1024 * 1024
OPUS_RATE = 48000  # RFC 7845 section 4: Opus granule positions count 48 kHz samples


@dataclass(frozen=True)
class Page:
    """One page header (RFC 3533 section 6) found at ``offset``."""

    offset: int
    flags: int
    granule: int
    serial: int
    sequence: int
    lacing: bytes

    @property
    def end(self) -> int:
        return self.offset + PAGE_HEADER + len(self.lacing) + sum(self.lacing)


@dataclass
class Codec:
    """What the identification header of the first logical stream says."""

    name: str
    sample_rate: int | None = None  # granule positions per second, when known
    pre_skip: int = 0  # Opus: granules to drop at the start (RFC 7845 section 4.2)
    total_samples: int = 0  # FLAC: STREAMINFO's total, 0 = unknown
    # Header packets including the first; None for FLAC (counted by the last-block flag)
    # and for codecs poold does not know (their headers are not walked).
    header_count: int | None = None


@dataclass(frozen=True)
class Headers:
    codec: Codec
    serial: int
    end: int | None  # where the header pages end, None if not walked to the end


def sniff(head: bytes) -> bool:
    """Capture pattern and stream structure version 0 (RFC 3533 section 6)."""
    return head[:5] == CAPTURE + b"\0"


def check(src: Source) -> Verdict:
    last, padding = find_last_page(src)
    headers = read_headers(src)
    if not last.flags & EOS:
        if headers.end is not None and last.end <= headers.end:
            raise Damage("truncated", "the file holds only the Ogg header pages, no audio")
        raise Damage("truncated", f"the last page (#{last.sequence:,}) lacks the end-of-stream flag: "
                                  "the file was cut at a page boundary")
    note = f"; {padding:,} zero bytes of padding follow its end-of-stream page" if padding else ""
    if last.serial != headers.serial or last.granule == NO_GRANULE:
        return ok(FORMAT, f"{headers.codec.name}, last page complete{note}")
    _check_flac_length(last, headers.codec)
    duration = _duration(last, headers.codec)
    return ok(FORMAT, f"{headers.codec.name}, {last.sequence + 1:,} pages, last page complete{note}", duration)


# --- pages ---------------------------------------------------------------------------------

def parse_page_header(data: bytes, pos: int, base: int = 0) -> Page | None:
    """The page header at ``data[pos:]``, or None if it is not one or is not all there."""
    if data[pos:pos + 5] != CAPTURE + b"\0" or len(data) < pos + PAGE_HEADER:
        return None
    flags, granule, serial, sequence, _crc, count = struct.unpack_from("<BqIIIB", data, pos + 5)
    lacing = data[pos + PAGE_HEADER:pos + PAGE_HEADER + count]
    if len(lacing) < count:
        return None
    return Page(base + pos, flags, granule, serial, sequence, bytes(lacing))


def crc_matches(page: bytes) -> bool:
    """RFC 3533 section 6: the CRC-32 over the whole page with its CRC field set to zero."""
    stored = int.from_bytes(page[CRC_FIELD], "little")
    return crc32_ogg(page[:CRC_FIELD.start] + b"\0\0\0\0" + page[CRC_FIELD.stop:]) == stored


def read_page(src: Source, offset: int) -> tuple[Page, bytes]:
    """The page that must start at ``offset`` and its bytes; Damage if it is not there whole."""
    header = src.read(offset, PAGE_HEADER + MAX_LACING)
    if len(header) < len(CAPTURE) and CAPTURE.startswith(header):
        raise Damage("truncated", f"the file ends at byte {src.size:,}, where the next page must start")
    if header[:4] != CAPTURE:
        if is_zero(header):
            raise Damage("zero_filled", f"zero bytes where an Ogg page must start (byte {offset:,})")
        raise Damage("bad_structure", f"no Ogg page where one must start (byte {offset:,})")
    page = parse_page_header(header, 0, offset)
    if page is None:
        if len(header) < PAGE_HEADER or len(header) < PAGE_HEADER + header[26]:
            raise Damage("truncated", f"the file ends inside the page header at byte {offset:,}")
        raise Damage("bad_structure", f"the page at byte {offset:,} has unknown version {header[4]}")
    if page.end > src.size:
        raise Damage("truncated", f"page #{page.sequence:,} needs {page.end - offset:,} bytes "
                                  f"but the file ends after {src.size - offset:,}")
    data = src.read(offset, page.end - offset)
    if not crc_matches(data):
        raise Damage("crc_mismatch", f"page #{page.sequence:,} (byte {offset:,}) fails its CRC-32")
    return page, data


# --- the end of the file -----------------------------------------------------------------

def find_last_page(src: Source) -> tuple[Page, int]:
    """The page that ends exactly at the end of the file and passes its CRC, and how
    many bytes of zero padding follow it (0 unless it ends the stream).

    Ogg defines no trailer, but taggers sometimes append ID3v1 or APEv2 blocks that every
    player skips; a complete final page right before such tags is accepted. So are zeros
    after a page that carries the end-of-stream flag: that flag is written only on the
    stream's last page (RFC 3533 section 4), so the stream is complete and the zeros are
    padding. A cut download never ends with it.
    """
    page = _page_ending_at(src, src.size)
    if page is None:
        tags_start = tags.trailing_tags_start(src)
        if tags_start < src.size:
            page = _page_ending_at(src, tags_start)
    if page is not None:
        return page, 0
    page = _page_before_zeros(src)
    if page is None or not page.flags & EOS:
        raise _diagnose_end(src)
    return page, src.size - page.end


def _page_ending_at(src: Source, end: int, earliest: int | None = None) -> Page | None:
    """The page that passes its CRC and ends at ``end``, or anywhere from ``earliest`` to
    ``end`` when zeros fill that span (a page may itself end in zero bytes)."""
    earliest = end if earliest is None else earliest
    base = max(0, earliest - MAX_PAGE)
    data = src.read(base, end - base)
    pos = len(data)
    while (pos := data.rfind(CAPTURE, 0, pos)) >= 0:
        page = parse_page_header(data, pos, base)
        if page is not None and earliest <= page.end <= end and crc_matches(data[pos:page.end - base]):
            return page
    return None


def _page_before_zeros(src: Source) -> Page | None:
    """The page that ends where the zeros at the end of the file begin (or inside them)."""
    zeros_from = src.size - _zero_run(src)
    if zeros_from == src.size or zeros_from <= src.size - PADDING_LIMIT:
        return None
    return _page_ending_at(src, src.size, zeros_from)


def _zero_run(src: Source) -> int:
    """How many zero bytes the file ends with, counted up to PADDING_LIMIT."""
    end = src.size
    while end > max(0, src.size - PADDING_LIMIT):
        start = max(0, end - WINDOW)
        piece = src.read(start, end - start)
        zeros = zero_run_at_end(piece)
        if zeros < len(piece):
            return src.size - end + zeros
        end = start
    return src.size - end


def _diagnose_end(src: Source) -> Damage:
    """Why no page ends at the end of the file: zeros, a cut page, a bad CRC or junk."""
    base = max(0, src.size - MAX_PAGE)
    data = src.read(base, src.size - base)
    zeros = zero_run_at_end(data)
    if zeros >= ZERO_RUN:
        at_least = "at least " if zeros == len(data) else ""
        return Damage("zero_filled", f"the file ends in {at_least}{zeros:,} zero bytes instead of an Ogg page")
    damaged = _page_with_damaged_capture(data, base, src.size)
    if damaged is not None:
        return Damage("bad_structure", f"the last page (#{damaged.sequence:,}, byte {damaged.offset:,}) has a "
                                       "damaged capture pattern")
    pos = data.rfind(CAPTURE)
    if pos < 0:
        return Damage("bad_structure", f"no Ogg page in the last {len(data):,} bytes of the file")
    page = parse_page_header(data, pos, base)
    if page is None:
        return Damage("truncated", f"the file ends inside the header of its last page (byte {base + pos:,})")
    if page.end > src.size:
        return Damage("truncated", f"page #{page.sequence:,}, the last in the file, needs "
                                   f"{page.end - page.offset:,} bytes but the file ends after {src.size - page.offset:,}")
    if page.end == src.size:
        return Damage("crc_mismatch", f"the last page (#{page.sequence:,}) fails its CRC-32")
    return _diagnose_after_page(data, base, page)


def _diagnose_after_page(data: bytes, base: int, page: Page) -> Damage:
    """What the bytes after the last capture pattern's page are, when that page ends before
    the end of the file (``data`` holds the file's tail from offset ``base``)."""
    pos, rest = page.offset - base, data[page.end - base:]
    if not crc_matches(data[pos:page.end - base]):
        # The lengths in its segment table are part of the CRC (RFC 3533 section 6): a damaged
        # table moves the page's end, so this is one damaged page, not a page plus extra bytes.
        return Damage("crc_mismatch", f"the last page (#{page.sequence:,}, byte {page.offset:,}) fails its "
                                      f"CRC-32: its damaged header ends it {len(rest):,} byte(s) short of "
                                      "the end of the file")
    if is_zero(rest):
        return Damage("zero_filled", f"{len(rest):,} zero bytes follow the last Ogg page")
    return Damage("trailing_data", f"{len(rest):,} bytes of non-Ogg data follow the last page")


def _page_with_damaged_capture(data: bytes, base: int, end: int) -> Page | None:
    """A page header whose capture pattern has one wrong byte but whose segment table ends
    the page exactly at ``end``: the last page, its capture pattern hit. Version 0 and a
    page length matching to the byte are not chance (RFC 3533 section 6)."""
    for match in NEAR_CAPTURE.finditer(data):
        pos = match.start()
        if data[pos:pos + 4] == CAPTURE:
            continue
        page = parse_page_header(CAPTURE + data[pos + 4:pos + PAGE_HEADER + MAX_LACING], 0, base + pos)
        if page is not None and page.end == end:
            return page
    return None


# --- the header packets ------------------------------------------------------------------

class _PacketReader:
    """Reassembles the first logical stream's packets (RFC 3533 section 5: lacing values
    of 255 continue a packet, a smaller one ends it), keeping only each one's first
    ``keep`` bytes."""

    def __init__(self, keep: int = PACKET_PREFIX):
        self.keep = keep
        self.next_sequence: int | None = None
        self.partial: bytearray | None = None
        self.done: list[bytes] = []

    def feed(self, page: Page, data: bytes) -> None:
        if self.next_sequence is not None and page.sequence != self.next_sequence:
            raise Damage("bad_structure", f"page #{self.next_sequence:,} of the stream is missing "
                                          f"(page #{page.sequence:,} follows)")
        self.next_sequence = page.sequence + 1
        if bool(page.flags & CONTINUED) != (self.partial is not None):
            raise Damage("bad_structure", f"page #{page.sequence:,} does not continue the packet "
                                          "the page before it left open")
        pos = PAGE_HEADER + len(page.lacing)
        for size in page.lacing:
            if self.partial is None:
                self.partial = bytearray()
            if len(self.partial) < self.keep:
                self.partial += data[pos:pos + min(size, self.keep - len(self.partial))]
            pos += size
            if size < 255:
                self.done.append(bytes(self.partial))
                self.partial = None


def read_headers(src: Source) -> Headers:
    """Walk the pages from the start until the first stream's header packets are complete."""
    first, data = read_page(src, 0)
    if not first.flags & BOS:
        raise Damage("bad_structure", "the first page does not begin a logical stream (no BOS flag)")
    reader = _PacketReader()
    reader.feed(first, data)
    if not reader.done:
        raise Damage("bad_structure", "the first page does not hold a complete identification packet")
    codec = identify(reader.done[0])
    offset = first.end
    while not _headers_complete(codec, reader.done):
        if offset > HEADER_BUDGET:
            return Headers(codec, first.serial, None)
        page, data = read_page(src, offset)
        if page.serial == first.serial:
            reader.feed(page, data)
        offset = page.end
    _check_header_packets(codec, reader.done)
    return Headers(codec, first.serial, offset)


def tag_items(src: Source, limit: int) -> int:
    """How many comments the first stream's comment header holds, up to ``limit``: what
    FFmpeg reads into its dictionary (see :mod:`.tags`). It is the second header packet:
    Vorbis I section 5.2, RFC 7845 section 5.2 ("OpusTags"), and for FLAC a
    VORBIS_COMMENT metadata block (RFC 9639 section 10.1). A comment header that does
    not end within HEADER_BUDGET is BeyondLimits: FFmpeg would hold all of it in memory."""
    identification, comments = _first_two_packets(src)
    for signature in (b"\x03vorbis", b"OpusTags"):
        if comments.startswith(signature):
            return tags.vorbis_comment_count(comments[len(signature):], limit)
    if identification.startswith(b"\x7fFLAC") and comments[:1] and comments[0] & 0x7F == 4:
        return tags.vorbis_comment_count(comments[4:], limit)  # after the block header
    return 0


def _first_two_packets(src: Source) -> tuple[bytes, bytes]:
    first, data = read_page(src, 0)
    reader = _PacketReader(keep=HEADER_BUDGET)
    reader.feed(first, data)
    offset = first.end
    while len(reader.done) < 2:
        if offset > HEADER_BUDGET:
            raise BeyondLimits(f"its comment header runs past the first {HEADER_BUDGET // 2**20} MiB")
        page, data = read_page(src, offset)
        if page.serial == first.serial:
            reader.feed(page, data)
        offset = page.end
    return reader.done[0], reader.done[1]


def _headers_complete(codec: Codec, packets: list[bytes]) -> bool:
    if codec.name == "flac":
        # The header packets are metadata blocks; the last one carries the last-block flag
        # (STREAMINFO's own block header, inside the first packet, if it is the only block).
        flag_byte = packets[-1][:1] if len(packets) > 1 else packets[0][13:14]
        return flag_byte != b"" and flag_byte[0] & 0x80 != 0
    return codec.header_count is None or len(packets) >= codec.header_count


def identify(packet: bytes) -> Codec:
    """The codec of the first packet, its identification header checked by its own spec."""
    if packet.startswith(b"\x01vorbis"):
        return _vorbis(packet)
    if packet.startswith(b"OpusHead"):
        return _opus(packet)
    if packet.startswith(b"\x7fFLAC"):
        return _flac(packet)
    return Codec("unknown codec", header_count=None)


def _vorbis(packet: bytes) -> Codec:
    """Vorbis I specification section 4.2.2: the identification header."""
    if len(packet) < 30:
        raise Damage("bad_structure", "the Vorbis identification header is too short")
    version, channels, rate = struct.unpack_from("<IBI", packet, 7)
    small, large = packet[28] & 0x0F, packet[28] >> 4
    if version != 0 or channels == 0 or rate == 0 or not 6 <= small <= large <= 13 or not packet[29] & 1:
        raise Damage("bad_structure", "the Vorbis identification header is invalid")
    return Codec("vorbis", sample_rate=rate, header_count=3)


def _opus(packet: bytes) -> Codec:
    """RFC 7845 section 5.1: the identification header ("OpusHead")."""
    if len(packet) < 19:
        raise Damage("bad_structure", "the Opus identification header is too short")
    version, channels, pre_skip = packet[8], packet[9], struct.unpack_from("<H", packet, 10)[0]
    mapping = packet[18]
    if version >= 16 or channels == 0 or (mapping == 0 and channels > 2):
        raise Damage("bad_structure", "the Opus identification header is invalid")
    return Codec("opus", sample_rate=OPUS_RATE, pre_skip=pre_skip, header_count=2)


def _flac(packet: bytes) -> Codec:
    """RFC 9639 section 10.1 (Ogg mapping): 0x7F "FLAC", version, header count, "fLaC",
    then the STREAMINFO metadata block (section 8.2)."""
    if len(packet) < 51 or packet[9:13] != b"fLaC" or packet[13] & 0x7F != 0:
        raise Damage("bad_structure", "the FLAC-in-Ogg identification header is invalid")
    packed = int.from_bytes(packet[27:35], "big")
    return Codec("flac", sample_rate=(packed >> 44) or None, total_samples=packed & ((1 << 36) - 1))


def _check_header_packets(codec: Codec, packets: list[bytes]) -> None:
    """The packets after the identification header must be the codec's other headers:
    Vorbis comment (type 3) and setup (type 5), section 4.2.1; "OpusTags", RFC 7845 5.2;
    for FLAC, metadata blocks of a permitted type (RFC 9639 section 8.1)."""
    expected = {"vorbis": (b"\x03vorbis", b"\x05vorbis"), "opus": (b"OpusTags",)}.get(codec.name)
    if expected is not None:
        for index, (packet, signature) in enumerate(zip(packets[1:], expected), start=2):
            if not packet.startswith(signature):
                raise Damage("bad_structure", f"header packet {index} is not the {codec.name} header it must be")
    if codec.name == "flac":
        for index, packet in enumerate(packets[1:], start=2):
            if not packet or packet[0] & 0x7F == 127:
                raise Damage("bad_structure", f"header packet {index} is not a FLAC metadata block")


# --- length ----------------------------------------------------------------------------

def _check_flac_length(last: Page, codec: Codec) -> None:
    """FLAC-in-Ogg: the last granule position counts the samples decoded so far; it must
    reach the total STREAMINFO declares (one less is tolerated: some muxers count the
    last sample's index rather than samples)."""
    total = codec.total_samples
    if codec.name == "flac" and total and last.granule < total - 1:
        raise Damage("truncated", f"the stream ends at sample {last.granule:,} of the {total:,} "
                                  f"STREAMINFO declares ({last.granule / total:.0%})")


def _duration(last: Page, codec: Codec) -> float | None:
    if not codec.sample_rate:
        return None
    return max(0, last.granule - codec.pre_skip) / codec.sample_rate
