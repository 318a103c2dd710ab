"""pipeline.terminal.one_line: any user or model text printed by the CLI is one line a terminal shows as text."""

from __future__ import annotations

import pytest

from pipeline.terminal import one_line


@pytest.mark.parametrize("raw, shown", [
    ("a\nnote: forged", "a\\nnote: forged"),
    ("cr\rover", "cr\\rover"),
    ("tab\there", "tab\\there"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # 7-bit CSI
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # OSC: window title, hyperlinks
    ("\x9b2J", "\\x9b2J"),  # one-byte C1 CSI
    ("next\x85line", "next\\x85line"),  # C1 NEL
    ("del\x7f", "del\\x7f"),
    ("\x00nul", "\\x00nul"),
    ("ملف\u202egpj.exe", "ملف\\u202egpj.exe"),  # right-to-left override
    ("\u2066iso\u2069 \u200fmark", "\\u2066iso\\u2069 \\u200fmark"),
    ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
])
def test_controls_separators_and_bidi_are_escaped_visibly(raw, shown):
    assert one_line(raw) == shown
    assert one_line(raw).isprintable()


@pytest.mark.parametrize("text", ["Blue mug, 350 ml", "café crème", "商品😀.jpg", "Größe XL", "مرحبا", "a\\nb literal",
                                  "👩\u200d👩\u200d👧 family", "می\u200cخواهم", "non\u00a0breaking"])
def test_ordinary_text_of_any_script_is_left_as_it_is(text):
    assert one_line(text) == text


def test_anything_is_shown_as_its_text():
    from pathlib import Path

    assert one_line(Path("/tmp/x\ny.jpg")) == "/tmp/x\\ny.jpg" and one_line(ValueError("bad\x1b")) == "bad\\x1b"
