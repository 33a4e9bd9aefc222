"""Retagging real files the way DJ software and taggers do it (mutagen), for tests and
benchmarks: each function changes the file's bytes and keeps its audio."""

from __future__ import annotations

import random
from pathlib import Path

import mutagen.apev2
import mutagen.flac
import mutagen.id3
import mutagen.mp4
import mutagen.oggvorbis
import mutagen.wave



def junk(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def retag_mp3(path: Path) -> None:
    """Serato-style GEOB frames, a key and cover art grow ID3v2 past its padding (the
    audio shifts), then an APEv2 tag and an ID3v1 tag are added at the end."""
    tags = mutagen.id3.ID3(path)
    tags.add(mutagen.id3.GEOB(encoding=0, mime="application/octet-stream", desc="Serato Overview",
                              data=junk(12_000, 1)))
    tags.add(mutagen.id3.TKEY(encoding=3, text=["8A"]))
    tags.add(mutagen.id3.PRIV(owner="TRAKTOR4", data=junk(900, 2)))
    tags.add(mutagen.id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="Cover", data=b"\xff\xd8\xff\xe0" + junk(20_000, 8)))
    tags.save(path, v1=2, padding=lambda info: 0)
    ape = mutagen.apev2.APEv2()
    ape["Comment"] = "cue 1 at 0:32"
    ape.save(path)


def retag_mp4(path: Path) -> None:
    """Cover art and a Serato freeform atom: 'moov' grows; in front of 'mdat' (fast start)
    mutagen rewrites the chunk offsets, behind it the file just grows."""
    tags = mutagen.mp4.MP4(path)
    tags["covr"] = [mutagen.mp4.MP4Cover(b"\xff\xd8\xff\xe0" + junk(40_000, 3), imageformat=mutagen.mp4.MP4Cover.FORMAT_JPEG)]
    tags["----:com.serato.dj:markersv2"] = [junk(3_000, 4)]
    tags.save()


def retag_flac(path: Path) -> None:
    """A PICTURE block larger than the padding: the frames move."""
    tags = mutagen.flac.FLAC(path)
    picture = mutagen.flac.Picture()
    picture.type, picture.mime, picture.data = 3, "image/jpeg", b"\xff\xd8\xff\xe0" + junk(50_000, 5)
    tags.add_picture(picture)
    tags["SERATO_MARKERS_V2"] = junk(2_000, 6).hex()
    tags.save()


def retag_ogg(path: Path) -> None:
    """A Vorbis comment grown across a page boundary: the audio pages are renumbered
    and their CRCs change."""
    tags = mutagen.oggvorbis.OggVorbis(path)
    tags["SERATO_OVERVIEW"] = junk(70_000, 7).hex()
    tags.save()


def retag_wav(path: Path) -> None:
    """A key and cover art in an 'id3 ' chunk after the samples."""
    tags = mutagen.wave.WAVE(path)
    tags.add_tags()
    tags.tags.add(mutagen.id3.TKEY(encoding=3, text=["11B"]))
    tags.tags.add(mutagen.id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="Cover", data=b"\xff\xd8\xff\xe0" + junk(20_000, 9)))
    tags.save()


RETAG = {".mp3": retag_mp3, ".m4a": retag_mp4, ".flac": retag_flac, ".ogg": retag_ogg, ".wav": retag_wav}
