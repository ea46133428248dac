"""Text that comes from the operating system: arguments, the environment, file names.

Python hands over bytes that are not UTF-8 as lone surrogates (PEP 383). Such a
string prints, and the OS takes it back unchanged, but the journal, TOML and JSON
hold text: it would fail deep inside a write. So it is refused where it enters,
with its bytes shown, and never silently altered.
"""

from __future__ import annotations


def not_utf8(text: str) -> str | None:
    """Why ``text`` cannot be kept as text, or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        what = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else "a lone surrogate"
        return f"{what} at character {exc.start + 1} is not valid UTF-8"
    return None


def printable(text: str) -> str:
    """``text`` with each undecodable byte written as ``\\xNN``, for messages."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
