"""A seeded mutator of real media files, for the fuzz test and benchmarks/fuzz.py.

``mutate(data, rng)`` returns ``(operator name, mutated bytes)``. The operators are the
damage issue #11 names, aimed where the formats keep their structure:

- ``truncate``: cut anywhere, near the head, or near the tail;
- ``flip_head`` / ``flip_tail``: flip bytes where headers, indexes and tags live;
- ``huge_size``: overwrite a size or count field beside a chunk, box, block or frame
  identifier with a huge, zero or off-by-a-little value (MP4 box sizes sit before
  the type, RIFF/AIFF chunk sizes after the ID, full-box entry counts 8-16 bytes in);
- ``nest``: a chain of hundreds to thousands of nested container boxes or LIST
  chunks, spliced in at a structure boundary;
- ``tag_block``: a random ID3v2 tag in front (random frames, declared sizes that lie),
  or an APEv2 / ID3v1 tag at the end, or random bytes appended;
- ``splice``: a block of the file copied over another place of it.

A plain ``random.Random`` drives it, so a case is reproduced from (seed, case number).
"""

from __future__ import annotations

import random
import re
import struct

# Identifiers whose neighbouring bytes are sizes or counts: MP4 boxes, RIFF/AIFF chunks,
# ID3v2 frames, Ogg pages, MP3 Xing/LAME headers, FLAC's marker.
IDENTIFIERS = re.compile(
    rb"ftyp|moov|trak|mdia|minf|stbl|stsd|stsz|stz2|stco|co64|stts|stsc|ctts|mdat|udta|meta|ilst|mvhd|tkhd|mdhd|"
    rb"hdlr|esds|edts|elst|mp4a|alac|avc1|avcC|free|moof|traf|trun|tfhd|mvex|trex|sidx|"
    rb"RIFF|WAVE|fmt |data|LIST|INFO|fact|id3 |ID3 |FORM|AIFF|AIFC|COMM|SSND|"
    rb"TIT2|TPE1|TXXX|APIC|COMM|PRIV|GEOB|OggS|Xing|Info|LAME|fLaC|APETAGEX"
)
CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"meta", b"ilst", b"edts", b"dinf", b"moof")
HUGE = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0x10000000, 0, 1, 7, 8, 9)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    name, operator = rng.choice(OPERATORS)
    return name, operator(bytearray(data), rng)


def truncate(data: bytearray, rng: random.Random) -> bytes:
    where = rng.choice(("anywhere", "head", "tail"))
    if where == "head":
        cut = rng.randrange(min(len(data), 4096))
    elif where == "tail":
        cut = len(data) - 1 - rng.randrange(min(len(data), 65536))
    else:
        cut = rng.randrange(len(data))
    return bytes(data[:cut])


def _flip(data: bytearray, rng: random.Random, start: int, end: int) -> bytes:
    end = max(min(end, len(data)), start + 1)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        position = rng.randrange(start, min(end, len(data)))
        data[position] = rng.choice((data[position] ^ (1 << rng.randrange(8)), 0x00, 0xFF, rng.randrange(256)))
    return bytes(data)


def flip_head(data: bytearray, rng: random.Random) -> bytes:
    return _flip(data, rng, 0, rng.choice((64, 512, 4096, 65536)))


def flip_tail(data: bytearray, rng: random.Random) -> bytes:
    return _flip(data, rng, max(0, len(data) - rng.choice((128, 4096, 65536))), len(data))


def _identifiers(data: bytes) -> list[int]:
    return [match.start() for match in IDENTIFIERS.finditer(data)]


def huge_size(data: bytearray, rng: random.Random) -> bytes:
    found = _identifiers(data)
    if not found:
        return flip_head(data, rng)
    for _ in range(rng.choice((1, 1, 2, 3))):
        at = rng.choice(found)
        position = at + rng.choice((-4, 4, 8, 12, 16, -8, 5, 6))  # size before / after, counts further in
        if not 0 <= position <= len(data) - 4:
            continue
        value = rng.choice(HUGE + (rng.getrandbits(32), int.from_bytes(data[position:position + 4], "big") + rng.randint(-9, 9)))
        data[position:position + 4] = (value & 0xFFFFFFFF).to_bytes(4, rng.choice(("big", "little")))
    return bytes(data)


def _nested(rng: random.Random, depth: int, riff: bool) -> bytes:
    inner = b"\0" * rng.choice((0, 4, 8))
    for _ in range(depth):
        if riff:
            inner = b"LIST" + struct.pack("<I", len(inner) + 4) + b"INFO" + inner
        else:
            kind = rng.choice(CONTAINERS)
            size = len(inner) + 8 if rng.random() < 0.9 else rng.choice(HUGE)
            inner = struct.pack(">I", size & 0xFFFFFFFF) + kind + inner
    return inner


def nest(data: bytearray, rng: random.Random) -> bytes:
    riff = data[:4] in (b"RIFF", b"FORM")
    chain = _nested(rng, rng.choice((50, 300, 2000, 6000)), riff)
    found = [at - (0 if riff else 4) for at in _identifiers(data)]
    position = rng.choice([at for at in found if at >= 0] or [len(data)])
    data[position:position] = chain
    if riff and len(data) >= 8:  # keep the form's size true, so the nesting itself is judged
        data[4:8] = struct.pack("<I" if data[:4] == b"RIFF" else ">I", len(data) - 8)
    return bytes(data)


def _syncsafe(value: int) -> bytes:
    return bytes(((value >> shift) & 0x7F) for shift in (21, 14, 7, 0))


def _id3v2(rng: random.Random) -> bytes:
    frames = bytearray()
    for _ in range(rng.choice((1, 5, 50, 400))):
        body = rng.randbytes(rng.choice((0, 1, 10, 200, 3000)))
        declared = len(body) if rng.random() < 0.8 else rng.choice((0, 0x0FFFFFFF, len(body) + 1000))
        frame_id = rng.choice((b"TIT2", b"TXXX", b"APIC", b"PRIV", b"COMM", b"GEOB", b"\0\0\0\0", b"XXXX"))
        frames += frame_id + _syncsafe(declared) + b"\0\0" + body
    size = len(frames) if rng.random() < 0.8 else rng.choice((0, 0x0FFFFFFF, len(frames) // 2))
    flags = rng.choice((0, 0, 0x40, 0x80, 0x10))
    return b"ID3" + bytes((rng.choice((2, 3, 4)), 0, flags)) + _syncsafe(size) + bytes(frames)


def _apev2_footer(rng: random.Random) -> bytes:
    items = rng.randbytes(rng.choice((0, 32, 500)))
    size = len(items) + 32 if rng.random() < 0.7 else rng.choice(HUGE)
    count = rng.choice((0, 1, 0xFFFFFFFF))
    return items + b"APETAGEX" + struct.pack("<IIII", 2000, size & 0xFFFFFFFF, count, 0) + bytes(8)


def tag_block(data: bytearray, rng: random.Random) -> bytes:
    where = rng.choice(("id3v2", "id3v2", "apev2", "id3v1", "junk"))
    if where == "id3v2":
        return _id3v2(rng) + bytes(data)
    if where == "apev2":
        return bytes(data) + _apev2_footer(rng)
    if where == "id3v1":
        return bytes(data) + b"TAG" + rng.randbytes(125)
    return bytes(data) + rng.randbytes(rng.choice((1, 100, 5000)))


def splice(data: bytearray, rng: random.Random) -> bytes:
    length = rng.choice((4, 64, 1024, 16384))
    source, target = rng.randrange(len(data)), rng.randrange(len(data))
    block = data[source:source + length]
    data[target:target + len(block)] = block
    return bytes(data)


OPERATORS = [("truncate", truncate), ("flip_head", flip_head), ("flip_tail", flip_tail), ("huge_size", huge_size),
             ("huge_size", huge_size), ("nest", nest), ("tag_block", tag_block), ("splice", splice)]
