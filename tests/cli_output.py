"""Shared test helpers for what users see of a mistake: one clear CLI line, and the damaged files readers refuse."""

from __future__ import annotations


def one_line(result) -> str:
    """The CLI ``result``'s output, asserted to be at most two lines and free of a traceback."""
    text = result.output.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) <= 2, text
    return text


#: The damaged-file cases every artifact reader must refuse in one line (format readers' tests parametrize on them).
DAMAGES = ["junk", "empty", "truncated", "zeroed body", "onnx"]


def damaged(damage: str, header: bytes) -> bytes:
    """A bad file of kind ``damage``: junk text, nothing, a plausible ``header`` over junk cut short or zeroed after
    the header, or an ONNX file's opening bytes where another format was expected."""
    body = header + bytes(range(256)) * 64
    return {"junk": b"not a model file" * 100, "empty": b"", "truncated": body[:4000],
            "zeroed body": body[:len(header)] + b"\0" * (len(body) - len(header)),
            "onnx": b"\x08\x07\x12\x07pytorch" * 40}[damage]
