"""The text report's lines for what is not a problem: moves and retags."""

from __future__ import annotations

import io

from poold.app import AuditOutcome
from poold.report import MOVES_LISTED, print_audit
from poold.scan import AuditReport


def rendered(report: AuditReport) -> str:
    out = io.StringIO()
    print_audit(AuditOutcome(report), out)
    return out.getvalue()


def test_moves_and_retags_are_reported_as_fine():
    report = AuditReport("/lib", "/lib/manifest.json", checked=3, ok=3, retagged=1,
                         moved={7: "Crates/8A - 124 - Seven.mp3", 3: "Crates/Three.mp3"})
    text = rendered(report)
    assert "Retagged: 1 file whose tags changed" in text
    assert "Found elsewhere (moved or renamed; the new place is recorded, nothing requested): 2 tracks" in text
    assert text.index("  3 -> Crates/Three.mp3") < text.index("  7 -> Crates/8A - 124 - Seven.mp3")


def test_a_reorganised_library_lists_the_first_moves_only():
    moved = {trackid: f"Crates/{trackid}.mp3" for trackid in range(MOVES_LISTED + 5)}
    text = rendered(AuditReport("/lib", "/lib/m.json", checked=len(moved), ok=len(moved), moved=moved))
    assert text.count(" -> ") == MOVES_LISTED and "... and 5 more" in text


def test_nothing_moved_says_nothing_about_moves():
    text = rendered(AuditReport("/lib", "/lib/m.json", checked=1, ok=1))
    assert "Found elsewhere" not in text and "Retagged" not in text
