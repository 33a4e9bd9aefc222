"""The audio identity: the same through tag writes and renames, different when the audio differs.

Real files are encoded by FFmpeg (PyAV) and retagged with mutagen, as DJ software does;
the range finders are also tested on files built byte by byte.
"""

import hashlib
import os
import shutil
import sqlite3
import struct

import pytest
from mutagen.aiff import AIFF
from mutagen.apev2 import APEv2
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, GEOB, ID3, TIT2, TXXX
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

import media
from conftest import write_manifest
from poold import app
from poold.integrity import check_file, identity
from poold.integrity import ogg as ogg_format
from poold.integrity.base import Source
from poold.integrity.crc import crc32_ogg
from poold.integrity.identity import full_identity, payload_ranges, sampled_identity
from poold.manifest import Track
from poold.scan import DEEP, QUICK, Job, ScanOptions, judge
from poold.state import State

COVER = bytes(range(256)) * 300  # 75 KB of "artwork": more than any padding a muxer leaves


@pytest.fixture(scope="module")
def encoded_long(tmp_path_factory):
    """encoded_long(kind) -> a 4-second file of that kind (long enough for three separate slices)."""
    folder = tmp_path_factory.mktemp("identity")
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = media.make(folder / f"{kind}{media.extension(kind)}", kind, seconds=4)
        return cache[kind]

    return get


@pytest.fixture
def fresh(tmp_path, encoded_long):
    """fresh(kind) -> a copy of the encoded file, to retag or damage."""
    def copy(kind):
        target = tmp_path / f"copy-{kind}{media.extension(kind)}"
        shutil.copyfile(encoded_long(kind), target)
        return str(target)

    return copy


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def ranges(path):
    verdict = check_file(path)
    with Source(path) as src:
        return payload_ranges(src, verdict.format)


class Snapshot:
    """A file's whole-file hash and identities, taken before it is retagged."""

    def __init__(self, path):
        self.path = path
        self.verdict = check_file(path)
        assert self.verdict.status == "ok", self.verdict
        self.sha256, self.full, self.ranges = sha256(path), full_identity(path), ranges(path)
        assert self.verdict.identity and self.verdict.identity.startswith("a1:")
        assert self.full and self.full.startswith("f1:")

    def assert_same_audio(self):
        """The file changed, its audio did not: both identities are unchanged."""
        after = check_file(self.path)
        assert after.status == "ok", after
        assert sha256(self.path) != self.sha256
        assert after.identity == self.verdict.identity
        assert full_identity(self.path) == self.full
        return ranges(self.path)


# --- retagging keeps the identity ---------------------------------------------------

def test_mp3_grown_id3v2_ape_lyrics3_and_id3v1(fresh):
    path = fresh("mp3")
    before = Snapshot(path)
    tags = ID3(path)
    tags.add(GEOB(encoding=0, mime="application/octet-stream", filename="", desc="Serato Markers2",
                  data=os.urandom(50_000)))
    tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=COVER))
    tags.save(path)  # grown past its padding
    moved = before.assert_same_audio()
    assert moved[0][0] > before.ranges[0][0] + 100_000  # the frames really moved

    ape = APEv2()
    ape["Artist"] = "poold"
    ape["Serato"] = "cue points " * 100
    ape.save(path)  # at the end (mutagen's APEv2 removes an ID3v1 tag, so that comes next)
    before.assert_same_audio()
    ID3(path).save(path, v1=2)  # an ID3v1 tag behind the APEv2 tag
    _insert_before_id3v1(path, _lyrics3v2(b"la la la\r\n" * 50))
    data = open(path, "rb").read()
    assert data[-128:-125] == b"TAG" and data[-128 - 9:-128] == b"LYRICS200" and b"APETAGEX" in data[-2000:]
    before.assert_same_audio()


def test_mp3_appended_id3v2_with_footer(fresh):
    path = fresh("mp3_notag")
    before = Snapshot(path)
    with open(path, "ab") as f:
        f.write(_id3v24_with_footer(b"TIT2\x00\x00\x00\x05\x00\x00\x03abc\x00" + bytes(500)))
    before.assert_same_audio()


@pytest.mark.parametrize("kind", ["m4a", "m4a_faststart", "mp4_faststart", "alac"])
def test_mp4_cover_art(fresh, kind):
    path = fresh(kind)
    before = Snapshot(path)
    tags = MP4(path)
    tags["covr"] = [MP4Cover(COVER, MP4Cover.FORMAT_JPEG)]
    tags["----:com.serato.dj:markersv2"] = [os.urandom(20_000)]
    tags.save()
    after = before.assert_same_audio()
    moov_first = kind.endswith("faststart")
    if moov_first:  # 'moov' grew in front of 'mdat': the samples moved, their offsets were rewritten
        assert after[0][0] > before.ranges[0][0] + len(COVER)
    else:  # 'moov' after 'mdat' grew at the end of the file
        assert after == before.ranges


@pytest.mark.parametrize("kind", ["m4a", "m4a_faststart"])
def test_mp4_boxes_appended_at_the_end(fresh, kind):
    """Tools that keep metadata outside 'moov' append top-level boxes (an XMP 'uuid', 'free')."""
    path = fresh(kind)
    before = Snapshot(path)
    xmp_uuid = bytes.fromhex("be7acfcb97a942e89c71999491e3afac")
    with open(path, "ab") as f:
        f.write(_box(b"uuid", xmp_uuid + b"<x:xmpmeta>cue points</x:xmpmeta>") + _box(b"free", bytes(4000)))
    assert before.assert_same_audio() == before.ranges


def test_mp4_moov_before_or_after_mdat_is_the_same_audio(encoded_long):
    """The same encoding muxed with 'moov' last and with 'moov' first ("fast start")."""
    last, first = encoded_long("m4a"), encoded_long("m4a_faststart")
    assert sha256(last) != sha256(first) and ranges(last)[0][0] < ranges(first)[0][0]
    assert check_file(last).identity == check_file(first).identity
    assert full_identity(last) == full_identity(first)


def test_flac_picture_block(fresh):
    path = fresh("flac")
    before = Snapshot(path)
    tags = FLAC(path)
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/jpeg", COVER
    tags.add_picture(picture)
    tags.save()
    after = before.assert_same_audio()
    assert after[0][0] > before.ranges[0][0] + 60_000  # the cover, less the padding it took


def test_flac_grown_vorbis_comment(fresh):
    path = fresh("flac")
    before = Snapshot(path)
    tags = FLAC(path)
    tags["comment"] = "x" * 30_000  # more than the padding FFmpeg leaves
    tags.save()
    after = before.assert_same_audio()
    assert after[0][0] > before.ranges[0][0]


@pytest.mark.parametrize("kind, opener", [("ogg", OggVorbis), ("opus", OggOpus), ("ogg_flac", OggFLAC)])
def test_ogg_comment_grown_across_pages(fresh, kind, opener):
    path = fresh(kind)
    before = Snapshot(path)
    first_audio_page = _first_audio_page(path)
    tags = opener(path)
    tags["comment"] = ["x" * 100_000]  # two more header pages: every audio page is renumbered
    tags.save()
    before.assert_same_audio()
    moved = _first_audio_page(path)
    assert moved.offset > first_audio_page.offset + 100_000
    assert moved.sequence > first_audio_page.sequence  # renumbered, so its CRC changed too


def test_ogg_repaginated_audio_keeps_the_full_identity(fresh, tmp_path):
    """A tool that repaginates the audio (as vcedit may) changes page headers and segment
    tables; the packet bytes, which the full identity hashes, stay the same."""
    path = fresh("ogg")
    full = full_identity(path)
    repaginated = str(tmp_path / "repaginated.ogg")
    _repaginate_audio(path, repaginated)
    assert sha256(repaginated) != sha256(path)
    assert check_file(repaginated).status == "ok"
    assert full_identity(repaginated) == full


def test_wav_id3_and_list_chunks(fresh):
    path = fresh("wav")
    before = Snapshot(path)
    tags = WAVE(path)
    tags.add_tags()
    tags.tags.add(TIT2(encoding=3, text="poold"))
    tags.tags.add(TXXX(encoding=3, desc="key", text="8A"))
    tags.save()
    before.assert_same_audio()
    _insert_chunk_before(path, b"data", b"LIST", b"INFO" + _chunk(b"INAM", b"A title\0") + _chunk(b"IART", b"poold"))
    after = before.assert_same_audio()
    assert after[0][0] > before.ranges[0][0]


def test_aiff_id3_chunk(fresh):
    path = fresh("aiff")
    before = Snapshot(path)
    tags = AIFF(path)
    tags.add_tags()
    tags.tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=COVER))
    tags.save()
    before.assert_same_audio()
    _insert_chunk_before(path, b"SSND", b"NAME", b"A title", big_endian=True)
    after = before.assert_same_audio()
    assert after[0][0] > before.ranges[0][0]


def test_renamed_file_keeps_its_identity(fresh, tmp_path):
    path = fresh("mp3")
    before = Snapshot(path)
    renamed = tmp_path / "Crates" / "8A - 124 - t2.mp3"
    renamed.parent.mkdir()
    os.replace(path, renamed)
    assert check_file(renamed).identity == before.verdict.identity
    assert full_identity(renamed) == before.full


# --- an audio change changes the identity -----------------------------------------------

ALL_AUDIO_KINDS = ["mp3", "flac", "m4a", "ogg", "opus", "wav", "aiff"]


@pytest.mark.parametrize("kind", ALL_AUDIO_KINDS)
def test_a_flipped_byte_in_the_middle_changes_both_identities(fresh, kind):
    path = fresh(kind)
    before = Snapshot(path)
    _flip(path, _payload_offset(before.ranges, 0.5))
    assert full_identity(path) != before.full
    with Source(path) as src:
        assert sampled_identity(src, before.verdict.format) != before.verdict.identity


@pytest.mark.parametrize("kind", ["mp3", "flac", "m4a", "wav", "aiff"])
def test_a_flipped_byte_between_the_slices_changes_only_the_full_identity(fresh, kind):
    """The sampled identity reads three slices; a change elsewhere is for --verify/--deep."""
    path = fresh(kind)
    before = Snapshot(path)
    _flip(path, _payload_offset(before.ranges, 0.25))
    assert full_identity(path) != before.full
    with Source(path) as src:
        assert sampled_identity(src, before.verdict.format) == before.verdict.identity


def test_truncated_or_extended_payload_changes_the_length(fresh):
    path = fresh("wav")
    before = Snapshot(path)
    _resize_wav_data(path, -4 * 1000)  # 1,000 sample frames fewer
    shorter = check_file(path)
    assert shorter.status == "ok" and _length(shorter.identity) == _length(before.verdict.identity) - 4000
    assert shorter.identity != before.verdict.identity and full_identity(path) != before.full
    _resize_wav_data(path, +4 * 2000)
    longer = check_file(path)
    assert _length(longer.identity) == _length(before.verdict.identity) + 4000


def test_mp3_cut_by_one_frame_changes_the_sampled_identity(fresh):
    path = fresh("mp3_noxing")
    before = Snapshot(path)
    start, length = before.ranges[0]
    with Source(path) as src:
        first = identity.mp3.header_at(src.read(start, 4), 0)
    os.truncate(path, start + length - first.length)
    with Source(path) as src:
        cut = sampled_identity(src, "mp3")
    assert cut is not None and _length(cut) == length - first.length


def test_different_tracks_differ(encoded_long, tmp_path):
    one = encoded_long("mp3")
    other = media.make(tmp_path / "other.mp3", "mp3", seconds=4, seed=1)
    assert check_file(one).identity != check_file(other).identity
    assert full_identity(one) != full_identity(other)


def test_the_identity_is_taken_only_for_ok_files_and_never_changes_a_verdict(fresh):
    path = fresh("flac")
    media.truncate(path, 0.5)
    verdict = check_file(path)
    assert verdict.status == "corrupt" and verdict.identity is None


# --- range finders on files built by hand ------------------------------------------------

MP3_FRAME_HEADER = b"\xff\xfb\x90\x00"  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 417 bytes
MP3_FRAME = 417


def _mp3_frames(count):
    body = bytes((i * 7 + 1) % 251 for i in range(MP3_FRAME - 4))  # no 0xFF: no false syncs
    return MP3_FRAME_HEADER + body, (MP3_FRAME_HEADER + body) * count


def _id3v2(body, version=3):
    size = len(body)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3" + bytes([version, 0, 0]) + synchsafe + body


def _id3v24_with_footer(body):
    size = len(body)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x04\x00\x10" + synchsafe + body + b"3DI\x04\x00\x10" + synchsafe


def _apev2(items=b"\x05\x00\x00\x00\x00\x00\x00\x00Title\x00hello"):
    size = len(items) + 32
    footer = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0) + bytes(8)
    return items + footer


def _lyrics3v2(lyrics):
    fields = b"IND0000210" + b"LYR" + b"%05d" % len(lyrics) + lyrics
    block = b"LYRICSBEGIN" + fields
    return block + b"%06d" % len(block) + b"LYRICS200"


ID3V1 = b"TAG" + b"title".ljust(30, b"\0") + bytes(95)


def _source(tmp_path, data, name="file"):
    path = tmp_path / name
    path.write_bytes(data)
    return Source(path)


def test_mp3_ranges_skip_every_tag(tmp_path):
    _frame, frames = _mp3_frames(6)
    leading = _id3v2(b"\0" * 300) + _id3v2(b"\0" * 50)  # two tags, as some writers leave
    data = leading + frames + _apev2() + _lyrics3v2(b"words") + _id3v24_with_footer(b"\0" * 40) + ID3V1
    with _source(tmp_path, data) as src:
        assert payload_ranges(src, "mp3") == [(len(leading), len(frames))]


def test_mp3_ranges_start_at_the_first_frame_after_junk(tmp_path):
    _frame, frames = _mp3_frames(6)
    leading = _id3v2(b"\0" * 100) + b"junk left by a tagger" * 5
    with _source(tmp_path, leading + frames + ID3V1) as src:
        assert payload_ranges(src, "mp3") == [(len(leading), len(frames))]


def test_mp3_sampled_identity_ignores_the_tags(tmp_path):
    _frame, frames = _mp3_frames(40)
    with _source(tmp_path, frames, "bare.mp3") as src:
        bare = sampled_identity(src, "mp3")
    with _source(tmp_path, _id3v2(bytes(5000)) + frames + _apev2() + ID3V1, "tagged.mp3") as src:
        tagged = sampled_identity(src, "mp3")
    assert bare == tagged == f"a1:{len(frames)}:" + bare.split(":")[2]


def _streaminfo(last=False):
    fields = struct.pack(">HH", 4096, 4096) + bytes(6) + (44100 << 44 | 1 << 41 | 15 << 36 | 8192).to_bytes(8, "big")
    md5 = bytes(range(16))
    return bytes([0x80 if last else 0]) + (34).to_bytes(3, "big") + fields + md5


def test_flac_ranges_after_the_metadata(tmp_path):
    metadata = b"fLaC" + _streaminfo() + bytes([0x84]) + (20).to_bytes(3, "big") + b"\0" * 20
    frames = b"\xff\xf8" + bytes(range(200))
    with _source(tmp_path, _id3v2(bytes(64)) + metadata + frames + ID3V1) as src:
        assert payload_ranges(src, "flac") == [(10 + 64 + len(metadata), len(frames))]


def test_flac_sampled_identity_includes_the_streaminfo_md5(tmp_path):
    """Two streams alike in their sampled bytes differ in the MD5 of all their audio."""
    frames = b"\xff\xf8" + bytes(range(200)) * 100
    one = b"fLaC" + _streaminfo(last=True) + frames
    other = bytearray(one)
    other[4 + 4 + 18] ^= 1  # the first byte of STREAMINFO's MD5
    with _source(tmp_path, one, "one") as a, _source(tmp_path, bytes(other), "other") as b:
        assert payload_ranges(a, "flac") == payload_ranges(b, "flac")
        assert sampled_identity(a, "flac") != sampled_identity(b, "flac")


def _chunk(fourcc, body, big_endian=False):
    return fourcc + struct.pack(">I" if big_endian else "<I", len(body)) + body + b"\0" * (len(body) & 1)


def _wav(chunks):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


FMT = _chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8))  # 8-bit mono: any length is whole frames


def test_wav_ranges_are_the_data_chunk_body(tmp_path):
    samples = bytes(range(255)) * 3  # odd length: a pad byte follows
    head = FMT + _chunk(b"LIST", b"INFOINAM\x04\0\0\0abc\0")
    data = _wav([head, _chunk(b"data", samples), _chunk(b"id3 ", _id3v2(bytes(20)))])
    with _source(tmp_path, data) as src:
        assert payload_ranges(src, "wav") == [(12 + len(head) + 8, len(samples))]


def test_wav_ranges_of_rf64_and_of_streamed_sizes(tmp_path):
    samples = bytes(range(200)) * 5
    ds64 = _chunk(b"ds64", struct.pack("<QQQI", 4 + 36 + 36 + 8 + len(samples), len(samples), len(samples), 0))
    rf64 = b"RF64\xff\xff\xff\xffWAVE" + ds64 + FMT + b"data\xff\xff\xff\xff" + samples
    streamed = b"RIFF\xff\xff\xff\xffWAVE" + FMT + b"data\xff\xff\xff\xff" + samples
    for name, data in (("rf64", rf64), ("streamed", streamed)):
        with _source(tmp_path, data, name) as src:
            assert payload_ranges(src, "wav") == [(len(data) - len(samples), len(samples))], name


def test_aiff_ranges_skip_the_ssnd_offset(tmp_path):
    comm = _chunk(b"COMM", struct.pack(">HIH", 1, 100, 8) + b"\x40\x0b\xfa" + bytes(7), big_endian=True)
    ssnd = _chunk(b"SSND", struct.pack(">II", 4, 0) + b"\0" * 4 + bytes(range(100)), big_endian=True)
    body = b"AIFF" + comm + ssnd
    with _source(tmp_path, b"FORM" + struct.pack(">I", len(body)) + body) as src:
        assert payload_ranges(src, "aiff") == [(12 + len(comm) + 8 + 8 + 4, 100)]


def test_aiff_ranges_of_a_streamed_ssnd(tmp_path):
    """A streaming writer leaves the FORM and SSND sizes 0: the sound runs to the end."""
    comm = _chunk(b"COMM", struct.pack(">HIH", 1, 0, 8) + b"\x40\x0b\xfa" + bytes(7), big_endian=True)
    data = b"FORM\0\0\0\0AIFF" + comm + b"SSND\0\0\0\0" + bytes(8) + bytes(range(100))
    with _source(tmp_path, data) as src:
        assert payload_ranges(src, "aiff") == [(len(data) - 100, 100)]


def _box(fourcc, body, large=False):
    if large:
        return struct.pack(">I4sQ", 1, fourcc, 16 + len(body)) + body
    return struct.pack(">I4s", 8 + len(body), fourcc) + body


def test_mp4_ranges_are_the_mdat_bodies(tmp_path):
    ftyp = _box(b"ftyp", b"M4A \0\0\0\0M4A isom")
    first, second = bytes(range(256)) * 4, b"more samples" * 10
    layout = [ftyp, _box(b"free", b""), _box(b"mdat", first), _box(b"mdat", b""), _box(b"moov", _box(b"udta", b"")),
              _box(b"mdat", second, large=True), _box(b"free", bytes(100))]
    offsets = [sum(map(len, layout[:index])) for index in range(len(layout))]
    with _source(tmp_path, b"".join(layout)) as src:
        assert payload_ranges(src, "mp4") == [(offsets[2] + 8, len(first)), (offsets[5] + 16, len(second))]


def test_unknown_or_unlocatable_payloads_have_no_identity(tmp_path):
    with _source(tmp_path, b"not a known structure at all" * 10) as src:
        for fmt in ("mp3", "flac", "wav", "aiff", "mp4", "ogg", "no such format"):
            assert payload_ranges(src, fmt) is None
            assert sampled_identity(src, fmt) is None
    assert full_identity(tmp_path / "no such file") is None


def test_overlapping_or_outside_ranges_are_refused():
    assert identity._clean([(0, 10), (5, 10)], 100) is None
    assert identity._clean([(90, 20)], 100) is None
    assert identity._clean([(0, 0), (10, 5)], 100) == [(10, 5)]


def test_full_identity_is_the_same_whatever_the_read_chunk(fresh, monkeypatch):
    """Ranges cut across chunk boundaries are hashed in order; digests see every byte."""
    path = fresh("ogg")
    with Source(path) as src:
        ranges_ = payload_ranges(src, "ogg")
        expected = hashlib.sha256(b"".join(src.read(o, n) for o, n in ranges_)).hexdigest()[:32]
    total = sum(n for _o, n in ranges_)
    assert full_identity(path) == f"f1:{total}:{expected}"
    monkeypatch.setattr(identity, "READ_CHUNK", 1000)
    whole = {"sha256": hashlib.sha256()}
    assert identity.hash_file(path, whole) == f"f1:{total}:{expected}"
    assert whole["sha256"].hexdigest() == sha256(path)


def test_a_broken_ogg_page_leaves_no_full_identity_but_whole_digests(fresh):
    path = fresh("ogg")
    ranges_ = ranges(path)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    page_start = data.rindex(b"OggS", 0, ranges_[len(ranges_) // 2][0])
    data[page_start] = ord("X")
    open(path, "wb").write(bytes(data))
    assert full_identity(path) is None
    whole = {"sha256": hashlib.sha256()}
    assert identity.hash_file(path, whole) is None
    assert whole["sha256"].hexdigest() == hashlib.sha256(bytes(data)).hexdigest()


# --- Ogg pages built by hand -----------------------------------------------------------

def _page(packets_lacing, body, sequence, granule=0, flags=0, serial=0x1234):
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(packets_lacing))
    page = bytearray(header + bytes(packets_lacing) + body)
    page[22:26] = crc32_ogg(bytes(page)).to_bytes(4, "little")
    return bytes(page)


def _lacing(size):
    return [255] * (size // 255) + [size % 255]


def _vorbis_file(comment_size, audio_packets):
    ident = b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 2, 44100, 0, 128000, 0, 0xB8, 1)
    comment = b"\x03vorbis" + b"c" * comment_size
    setup = b"\x05vorbis" + b"s" * 50
    pages = [_page(_lacing(len(ident)), ident, 0, flags=ogg_format.BOS)]
    pages.append(_page(_lacing(len(comment)) + _lacing(len(setup)), comment + setup, 1))
    sequence = 2
    for index, packet in enumerate(audio_packets):
        last = index == len(audio_packets) - 1
        pages.append(_page(_lacing(len(packet)), packet, sequence, granule=1000 * (index + 1),
                           flags=ogg_format.EOS if last else 0))
        sequence += 1
    return b"".join(pages), sum(map(len, pages[:2]))


def test_ogg_ranges_are_the_audio_page_bodies(tmp_path):
    packets = [bytes([index]) * (3000 + index) for index in range(8)]
    data, audio_start = _vorbis_file(10, packets)
    with _source(tmp_path, data + ID3V1) as src:
        found = payload_ranges(src, "ogg")
        assert [src.read(o, n) for o, n in found] == packets
        assert found[0][0] == audio_start + 27 + len(_lacing(3000))


def test_ogg_renumbered_pages_keep_both_identities(tmp_path):
    packets = [os.urandom(3000 + index) for index in range(12)]
    small, _ = _vorbis_file(10, packets)
    grown, _ = _vorbis_file(200, packets)  # a longer comment: other page bytes, same audio
    with _source(tmp_path, small, "small.ogg") as one, _source(tmp_path, grown, "grown.ogg") as two:
        assert sampled_identity(one, "ogg") == sampled_identity(two, "ogg") is not None
    assert full_identity(tmp_path / "small.ogg") == full_identity(tmp_path / "grown.ogg")


def test_ogg_windows_cut_out_page_headers_whatever_their_numbers_and_crcs(tmp_path):
    bodies = [bytes([index + 1]) * 200 for index in range(3)]

    def region(crcs, first_sequence):
        pages = [b"OggS\0\0" + bytes(12) + struct.pack("<I", first_sequence + index) + crc + b"\x01\xc8" + body
                 for index, (crc, body) in enumerate(zip(crcs, bodies))]
        return b"".join(pages)

    plain = region([b"\1\2\3\4"] * 3, 5)
    tricky = region([b"\5\6\7\x08", b"OggS", b"gSOg"], 9)  # a capture pattern inside a CRC
    for name, data in (("plain", plain), ("tricky", tricky)):
        with _source(tmp_path, data, name) as src:
            whole = identity._ogg_bodies_within(src, (0, len(data)), 0, len(data))
            from_inside_a_header = identity._ogg_bodies_within(src, (0, len(data)), 228 + 10, len(data))  # page 2 starts at 228
        assert whole == b"".join(bodies)
        assert from_inside_a_header == bodies[1] + bodies[2]


# --- the cache and the scan --------------------------------------------------------------

def _audit(library, **options):
    return app.run_audit(library.config(), options=ScanOptions(**options)).report


def test_identities_are_cached_with_the_verdict(make_library):
    library = make_library(["mp3", "flac", "m4a", "ogg", "wav", "aiff"])
    seen = {}
    app.run_audit(library.config(), on_finding=lambda f: seen.setdefault(f.trackid, f))
    relative = {t: str(p.relative_to(library.root)) for t, p in library.paths.items()}
    expected = {relative[t]: check_file(p).identity for t, p in library.paths.items()}
    assert all(expected.values())
    assert {relative[t]: f.identity for t, f in seen.items()} == expected
    warm = []
    report = app.run_audit(library.config(), on_finding=warm.append).report
    assert report.files_checked == 0 and all(f.identity is None for f in warm)  # not loaded on the warm path
    with State(library.config().state.dir) as state:
        cache = state.file_cache()
        assert {path: cache.identity(path) for path in expected} == expected
        assert cache.identities(list(expected) + ["not/there.mp3"]) == expected
        assert cache.identity("not/there.mp3") is None


def test_a_retagged_file_is_checked_again_and_keeps_its_cached_identity(make_library):
    library = make_library(["mp3", "flac"])
    _audit(library)
    relative = str(library.paths[1001].relative_to(library.root))
    with State(library.config().state.dir) as state:
        before = state.file_cache().identity(relative)
    tags = ID3(library.paths[1001])
    tags.add(GEOB(encoding=0, mime="application/octet-stream", filename="", desc="Serato Overview",
                  data=os.urandom(30_000)))
    tags.save()
    report = _audit(library)
    assert report.files_checked == 1 and not list(report.problems)
    with State(library.config().state.dir) as state:
        assert state.file_cache().identity(relative) == before is not None


def test_verify_takes_the_full_identity_in_the_digest_pass(make_library):
    library = make_library(["mp3", "ogg"])
    rows = []
    for trackid, path in library.paths.items():
        rows.append({"trackid": trackid, "path": str(path.relative_to(library.root)), "sha256": sha256(path)})
    write_manifest(library.manifest, rows)
    seen = []
    app.run_audit(library.config(), options=ScanOptions(verify=True), on_finding=seen.append)
    full = {str(p.relative_to(library.root)): full_identity(p) for p in library.paths.values()}
    assert {f.path: f.full_identity for f in seen} == full and all(full.values())
    again = []  # a warm --verify run answers from the full cached row, identities included
    report = app.run_audit(library.config(), options=ScanOptions(verify=True), on_finding=again.append).report
    assert report.files_checked == 0 and {f.path: f.full_identity for f in again} == full
    with State(library.config().state.dir) as state:
        assert state.file_cache().full(rows[0]["path"]).full_identity == full[rows[0]["path"]]


def test_judge_returns_the_full_identity(encoded):
    path = str(encoded("flac"))
    info = os.stat(path)
    track = Track(1, "x.flac", sha256=sha256(path))
    judged = judge(Job(track, path, (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns), QUICK, True))
    assert judged.sha256 == track.sha256 and judged.full_identity == full_identity(path) is not None
    assert judged.verdict.identity == check_file(path).identity is not None


def test_a_deep_check_takes_both_identities(encoded):
    path = str(encoded("ogg"))
    info = os.stat(path)
    job = Job(Track(1, "x.ogg"), path, (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns), DEEP, False)
    judged = judge(job)
    assert judged.verdict.status == "ok" and judged.sha256 is None
    assert judged.full_identity == full_identity(path) is not None
    assert judged.verdict.identity == check_file(path).identity is not None


def test_a_cache_without_identity_columns_is_recreated(tmp_path):
    folder = tmp_path / "state"
    with State(folder) as state:
        state.db.execute("DROP TABLE files")
        state.db.execute("CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
                         "inode INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, "
                         "detail TEXT NOT NULL, duration REAL, level TEXT NOT NULL, logic TEXT NOT NULL, sha256 TEXT, "
                         "md5 TEXT, checked REAL NOT NULL, stamp INTEGER NOT NULL) WITHOUT ROWID")
        state.db.execute("INSERT INTO files VALUES ('a.mp3', 1, 2, 3, 4, 'ok', 'ok', '', NULL, 'quick', 'x', NULL, "
                         "NULL, 0, 0)")
        state.record_problem(7, "b.mp3", "missing", "missing", "gone")
    with State(folder) as state:
        columns = [row[1] for row in state.db.execute("PRAGMA table_info(files)")]
        assert "identity" in columns and "full_identity" in columns
        assert state.db.execute("SELECT count(*) FROM files").fetchone()[0] == 0
        assert [i.trackid for i in state.open_incidents()] == [7]  # only the cache was dropped
    db = sqlite3.connect(folder / "poold.sqlite3")
    assert db.execute("SELECT count(*) FROM incidents").fetchone()[0] == 1


# --- helpers ------------------------------------------------------------------------------

def _length(identity_string):
    return int(identity_string.split(":")[1])


def _payload_offset(payload, fraction):
    """The file offset of the byte at ``fraction`` of the payload."""
    position = int(sum(n for _o, n in payload) * fraction)
    for offset, length in payload:
        if position < length:
            return offset + position
        position -= length
    raise AssertionError("outside the payload")


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _insert_before_id3v1(path, block):
    data = open(path, "rb").read()
    assert data[-128:-125] == b"TAG"
    open(path, "wb").write(data[:-128] + block + data[-128:])


def _insert_chunk_before(path, before, fourcc, body, big_endian=False):
    """Insert a chunk in front of the chunk ``before`` and grow the form's size."""
    data = bytearray(open(path, "rb").read())
    at, offset = None, 12
    while offset < len(data):
        size = struct.unpack_from(">I" if big_endian else "<I", data, offset + 4)[0]
        if data[offset:offset + 4] == before:
            at = offset
            break
        offset += 8 + size + (size & 1)
    assert at is not None
    chunk = _chunk(fourcc, body, big_endian)
    data[at:at] = chunk
    form = struct.unpack_from(">I" if big_endian else "<I", data, 4)[0] + len(chunk)
    struct.pack_into(">I" if big_endian else "<I", data, 4, form)
    open(path, "wb").write(bytes(data))


def _resize_wav_data(path, delta):
    """Remove (delta < 0) or append (delta > 0) bytes at the end of the data chunk."""
    data = bytearray(open(path, "rb").read())
    at = data.index(b"data")
    size = struct.unpack_from("<I", data, at + 4)[0]
    end = at + 8 + size
    if delta < 0:
        del data[end + delta:end]
    else:
        data[end:end] = os.urandom(delta)
    struct.pack_into("<I", data, at + 4, size + delta)
    struct.pack_into("<I", data, 4, struct.unpack_from("<I", data, 4)[0] + delta)
    open(path, "wb").write(bytes(data))


def _first_audio_page(path):
    with Source(path) as src:
        start, _end = identity._ogg_region(src)
        return ogg_format.parse_page_header(src.read(start, 300), 0, start)


def _repaginate_audio(path, target):
    """Copy an Ogg file, splitting every audio page after its first complete packet (new
    segment tables and sequence numbers, recomputed CRCs), as a repaginating tool may."""
    with Source(path) as src:
        start, end = identity._ogg_region(src)
        head = src.read(0, start)
        raw = [(page, src.read(page.offset, page.end - page.offset)) for page in identity._ogg_pages(src, start, end)]
    out, sequence = [head], raw[0][0].sequence
    for page, data in raw:
        body = data[27 + len(page.lacing):]
        split = next((i + 1 for i, size in enumerate(page.lacing[:-1]) if size < 255), None)
        parts = [(page.lacing, body, page.flags)]
        if split is not None:
            cut = sum(page.lacing[:split])
            parts = [(page.lacing[:split], body[:cut], page.flags & ~ogg_format.EOS),
                     (page.lacing[split:], body[cut:], page.flags & ogg_format.EOS)]
        for lacing, part, flags in parts:
            out.append(_page(lacing, part, sequence, granule=page.granule, flags=flags, serial=page.serial))
            sequence += 1
    assert len(out) - 1 > len(raw)  # pages were really split
    open(target, "wb").write(b"".join(out))
