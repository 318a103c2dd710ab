"""Text from users and models made safe to print as one line on a terminal (the CLI's `note:`, `error:` and result lines).

A file name inside a zip, a SKU, a URL or a caption is not ours: a newline in it would start a line that looks like
the CLI's own (`note: all clear`), an escape sequence (ESC, or its one-byte C1 form) would recolour the terminal, move
the cursor, set the window title or write a hyperlink, and a bidi control (U+202E) would show `gpj.exe` as `exe.jpg`.
`one_line` writes each such character as a visible escape (`\\n`, `\\x1b`, `\\u202e`) and leaves every other character,
accents, CJK and emoji included, as it is.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidi embeddings, overrides, isolates and marks (Unicode's "Bidi_Control" property).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ / ZWJ: part of Persian words and emoji sequences, invisible but harmless


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _unsafe(char: str) -> bool:
    if char in BIDI_CONTROLS:
        return True
    category = unicodedata.category(char)
    # Cc: C0 controls, DEL and C1 controls (0x80-0x9f, e.g. CSI 0x9b); Zl / Zp: line and paragraph separators;
    # Cf: invisible format characters (zero-width space, BOM, soft hyphen, ...), bidi controls among them.
    return category in ("Cc", "Zl", "Zp") or (category == "Cf" and char not in _JOINERS)


def one_line(text: object) -> str:
    """`text` (anything, shown as str) as one printable terminal line: control, format and bidi characters escaped."""
    value = str(text)
    if all(char.isprintable() and char not in BIDI_CONTROLS for char in value):  # the common case, untouched
        return value
    return "".join(_escaped(char) if _unsafe(char) else char for char in value)
