"""Carry a damaged file's tags onto its healed copy: DJ software keeps cue points, beat
grids, keys and loops there (Serato's GEOB frames in ID3, freeform ``----`` atoms in
MP4, Vorbis comments in FLAC and Ogg), and a redownload from POOL has none of them.

The copy is tagged as a second temporary file, which must pass the quick check with
the same duration as the untagged copy before it replaces it (an atomic rename): the
audio does not change, and a crash mid-way leaves the verified copy as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import mutagen
from mutagen.id3 import ID3

from .integrity import check_file

log = logging.getLogger(__name__)


def carry_tags(damaged: Path, copy: Path) -> str | None:
    """Copy the tags still readable in ``damaged`` onto ``copy``; say what was copied, or None."""
    tagged = copy.with_name(copy.name.replace(".poold-heal-", ".poold-heal-tags-", 1))
    tagged.unlink(missing_ok=True)  # left by a crash
    old = _read_tags(damaged)
    if not old:
        return None
    shutil.copyfile(copy, tagged)
    try:
        described = _write_tags(old, tagged)
    except (mutagen.MutagenError, OSError, ValueError) as exc:
        tagged.unlink(missing_ok=True)
        log.warning("could not copy the tags of %s onto its new copy (%s); it keeps POOL's tags only", damaged, exc)
        return None
    if described is None:  # the copy has every tag already
        tagged.unlink()
        return None
    before, after = check_file(copy), check_file(tagged)
    if after.status != "ok" or after.duration != before.duration:
        tagged.unlink(missing_ok=True)
        log.warning("%s: tagging the new copy changed how it checks (%s); it keeps POOL's tags only",
                    copy.name, after.detail)
        return None
    os.replace(tagged, copy)
    return described


def _read_tags(path: Path):
    """The file's tags (mutagen's object), or None when there are none or they cannot be read."""
    try:
        loaded = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError, EOFError):
        loaded = None
    if loaded is not None and loaded.tags:
        return loaded.tags
    try:
        return ID3(path)  # a truncated MP3 still begins with its ID3 tag
    except (mutagen.MutagenError, OSError, ValueError, EOFError):
        return None


def _write_tags(old, path: Path) -> str | None:
    """Write the tags of ``old`` that the copy lacks or holds otherwise; None when it has them all."""
    new = mutagen.File(path)
    if new is None:
        raise ValueError("mutagen does not know the new copy's format")
    if new.tags is None:
        new.add_tags()
    if isinstance(old, ID3):
        if not isinstance(new.tags, ID3):
            raise ValueError("the damaged file has ID3 tags, the new copy another kind")
        frames = [frame for frame in old.values() if repr(new.tags.get(frame.HashKey)) != repr(frame)]
        if not frames:
            return None
        for frame in frames:
            new.tags.add(frame)
        new.save()
        special = sum(1 for frame in frames if frame.FrameID == "GEOB")
        return f"{len(frames)} ID3 frames" + (f" ({special} GEOB: Serato cues, grids, loops)" if special else "")
    if type(old) is not type(new.tags):
        raise ValueError(f"the damaged file has {type(old).__name__} tags, the new copy {type(new.tags).__name__}")
    keys = [key for key in old.keys() if key not in new.tags or new.tags[key] != old[key]]
    if not keys:
        return None
    for key in keys:
        new.tags[key] = old[key]
    new.save()
    freeform = sum(1 for key in keys if str(key).startswith("----"))
    return f"{len(keys)} tags" + (f" ({freeform} freeform atoms)" if freeform else "")
