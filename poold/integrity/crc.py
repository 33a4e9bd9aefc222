"""The checksums FLAC and Ogg define, computed without third-party code.

All three are plain (non-reflected) CRCs with a zero initial value and no final XOR:

- CRC-8, polynomial x^8 + x^2 + x + 1 (0x07): FLAC frame header, RFC 9639 section 9.1.8.
- CRC-16, polynomial x^16 + x^15 + x^2 + 1 (0x8005): FLAC frame footer, RFC 9639 section 9.3.
- CRC-32, polynomial 0x04C11DB7: Ogg page checksum, RFC 3533 section 6.

Because there is no final XOR, running a CRC over data *followed by its own stored
(big-endian) CRC* yields 0, which is how the FLAC footer is checked.
"""

from __future__ import annotations

import functools
import sys
import zlib
from array import array


def _msb_first_table(poly: int, width: int) -> tuple[int, ...]:
    """The 256-entry lookup table of a non-reflected CRC of ``width`` bits."""
    top = 1 << (width - 1)
    mask = (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else (crc << 1)
        table.append(crc & mask)
    return tuple(table)


CRC8_TABLE = _msb_first_table(0x07, 8)
CRC16_TABLE = _msb_first_table(0x8005, 16)

# Reverses the bit order of every byte; see crc32_ogg.
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = CRC8_TABLE[crc ^ byte]
    return crc


def crc16_step(crc: int, byte: int) -> int:
    """One byte of FLAC's CRC-16, for callers that watch the register as it runs."""
    return ((crc << 8) & 0xFFFF) ^ CRC16_TABLE[(crc >> 8) ^ byte]


@functools.cache
def _crc16_word_table() -> list[int]:
    """CRC-16 register after feeding 16 bits: for a 16-bit CRC that is a function of
    (register XOR next big-endian word) alone, so two bytes cost one lookup."""
    table = CRC16_TABLE
    return [((table[high] << 8) & 0xFFFF) ^ table[(table[high] >> 8) ^ low]
            for high in range(256) for low in range(256)]


def crc16(data: bytes | memoryview) -> int:
    table = _crc16_word_table()
    even = len(data) & ~1
    words = array("H")
    words.frombytes(data[:even])
    if sys.byteorder == "little":
        words.byteswap()
    crc = 0
    for word in words:
        crc = table[crc ^ word]
    if len(data) & 1:
        crc = crc16_step(crc, data[-1])
    return crc


def crc32_ogg(data: bytes | memoryview) -> int:
    """Ogg's CRC-32, computed by zlib's C code.

    zlib implements the bit-reflected form of the same polynomial. Reflecting every
    input byte and then the 32-bit result turns one into the other; passing
    0xFFFFFFFF as the running value and XOR-ing the result cancel zlib's pre- and
    post-inversion, leaving Ogg's zero initial value and zero final XOR.
    """
    reflected = zlib.crc32(bytes(data).translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)
