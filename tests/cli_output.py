"""What a user mistake must look like on the command line: one clear line (two at most), no traceback."""

from __future__ import annotations


def one_line(result) -> str:
    """The CLI ``result``'s output, asserted to be at most two lines and free of a traceback."""
    text = result.output.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) <= 2, text
    return text
