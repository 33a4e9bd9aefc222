"""The checksums FLAC, Ogg and the LAME tag define, computed without third-party code.

The first three are plain (non-reflected) CRCs with a zero initial value and no final XOR:

- CRC-8, polynomial x^8 + x^2 + x + 1 (0x07): FLAC frame header, RFC 9639 section 9.1.8.
- CRC-16, polynomial x^16 + x^15 + x^2 + 1 (0x8005): FLAC frame footer, RFC 9639 section 9.3.
- CRC-32, polynomial 0x04C11DB7: Ogg page checksum, RFC 3533 section 6.

Because there is no final XOR, running a CRC over data *followed by its own stored
(big-endian) CRC* yields 0, which is how the FLAC footer is checked.

- CRC-16/ARC, the bit-reflected form of FLAC's CRC-16: the LAME tag's music and tag CRCs.
"""

from __future__ import annotations

import zlib


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
BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = CRC8_TABLE[crc ^ byte]
    return crc


def crc16_step(crc: int, byte: int) -> int:
    """One byte of FLAC's CRC-16, for callers that watch the register as it runs."""
    return ((crc << 8) & 0xFFFF) ^ CRC16_TABLE[(crc >> 8) ^ byte]


# CRC-16 over long data, fast in pure Python. A CRC is the remainder of the message
# polynomial over GF(2), and Python's big integers hold a whole chunk as one polynomial.
# 0x18005 = (x + 1)(x^15 + x + 1): x is 1 modulo x + 1, and x^15 + x + 1 is irreducible,
# so x^(2^15 - 1) is 1 modulo both and modulo their product, and so is x^(8 (2^15 - 1)).
# Blocks of 2^15 - 1 bits (or bytes) can therefore be XOR-ed together unreduced, and
# what remains is brought down by folding its upper half onto the lower one (x^k mod P
# times the upper half, a carry-less product of a few shifts): a handful of big-integer
# operations per 32 KB instead of one Python step per byte.
_POLY16 = 0x18005
_PERIOD = 2**15 - 1  # x^_PERIOD = 1 modulo _POLY16
_X_POW_2K = [2]  # x^(2^k) mod _POLY16 for k = 0, 1, ...


def _clmul(a: int, b: int) -> int:
    """Carry-less (GF(2)) product of two polynomials held as integers."""
    product = 0
    while b:
        low = b & -b
        product ^= a << (low.bit_length() - 1)
        b ^= low
    return product


def _mod_small(value: int) -> int:
    """``value``, of up to 64 bits, modulo _POLY16: FLAC's CRC-16 register over its
    upper 48 bits gives them times x^16 modulo the polynomial."""
    crc = 0
    for byte in (value >> 16).to_bytes(6, "big"):
        crc = crc16_step(crc, byte)
    return crc ^ (value & 0xFFFF)


def _x_pow_2k(k: int) -> int:
    while len(_X_POW_2K) <= k:
        _X_POW_2K.append(_mod_small(_clmul(_X_POW_2K[-1], _X_POW_2K[-1])))
    return _X_POW_2K[k]


def _gf2_mod(value: int) -> int:
    """``value`` modulo _POLY16, as polynomials over GF(2)."""
    while value.bit_length() > _PERIOD:
        value = (value & ((1 << _PERIOD) - 1)) ^ (value >> _PERIOD)
    while value.bit_length() > 64:
        k = (value.bit_length() - 1).bit_length() - 1
        half = 1 << k
        value = (value & ((1 << half) - 1)) ^ _clmul(value >> half, _x_pow_2k(k))
    return _mod_small(value)


def poly16_extend(remainder: int, data: bytes | memoryview) -> int:
    """The remainder modulo 0x18005 of a message, extended by ``data`` (each byte's
    most significant bit first), from the remainder of the message before it."""
    view = memoryview(data)
    folded = 0
    for end in range(len(view), 0, -_PERIOD):
        folded ^= int.from_bytes(view[max(0, end - _PERIOD):end], "big")
    return _gf2_mod((remainder << (8 * len(view) % _PERIOD)) ^ folded)


def crc16(data: bytes | memoryview) -> int:
    """FLAC's CRC-16: the message times x^16, modulo the polynomial."""
    return _gf2_mod(poly16_extend(0, data) << 16)


def crc16_arc(chunks) -> int:
    """CRC-16/ARC (the bit-reflected form of the same polynomial, as the LAME tag uses)
    of the concatenated byte strings ``chunks``: reflecting every input byte and then
    the 16-bit result turns one form into the other."""
    remainder = 0
    for chunk in chunks:
        remainder = poly16_extend(remainder, chunk.translate(BIT_REVERSED))
    return int(f"{_gf2_mod(remainder << 16):016b}"[::-1], 2)


def crc32_ogg(data: bytes | memoryview) -> int:
    """Ogg's CRC-32, computed by zlib's C code.

    zlib implements the bit-reflected form of the same polynomial. Reflecting every
    input byte and then the 32-bit result turns one into the other; passing
    0xFFFFFFFF as the running value and XOR-ing the result cancel zlib's pre- and
    post-inversion, leaving Ogg's zero initial value and zero final XOR.
    """
    reflected = zlib.crc32(bytes(data).translate(BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def ogg_page_crc_matches(reflected: bytes | memoryview) -> bool:
    """Whether an Ogg page carries its own CRC, given the page with every byte's bits
    reversed (``page.translate(BIT_REVERSED)``, done once for many pages).

    As in :func:`crc32_ogg`, zlib then computes the reflected CRC, with the checksum
    field taken as zero; the stored field, little-endian with its bytes reflected,
    reads as that reflected value big-endian.
    """
    crc = zlib.crc32(reflected[:22], 0xFFFFFFFF)
    crc = zlib.crc32(b"\0\0\0\0", crc)
    crc = zlib.crc32(reflected[26:], crc) ^ 0xFFFFFFFF
    return crc == int.from_bytes(reflected[22:26], "big")
