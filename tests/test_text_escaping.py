"""dashboard.text.inert: hostile user text becomes Markdown that renders as the literal text.

Two checks per string: the escaped source carries none of the patterns Streamlit's frontend acts on
(its regexes, copied from StreamlitMarkdown in Streamlit 1.67's bundle), and a CommonMark parser
(markdown-it-py, with GFM tables and strikethrough) renders it as one paragraph of plain text.
tests/test_browser_injection.py checks the real frontend in Chromium."""

from __future__ import annotations

import html
import re

import pytest

from dashboard.text import WORD_JOINER, inert, say, shown

HOSTILE = [
    "![b](http://127.0.0.1:8000/beacon.png)",
    "[click](http://evil.example/phish)",
    "[ref][1]\n\n[1]: http://evil.example/ref",
    "<http://evil.example/auto> and <mail@evil.example>",
    "bare http://evil.example/x https://evil.example/y www.evil.example _www.evil.example mail@evil.example",
    "# Heading\n## Sub\nSetext\n===\nSetext two\n---",
    "> quote\n- item\n+ item\n* item\n1. one\n2) two",
    "    indented code\n\n    more code\n```\nfenced\n```\n~~~\ntilde\n~~~",
    "<b>bold</b><img src=x onerror=alert(1)><script>alert(1)</script> &amp; &#x41;",
    "$x^2$ and $$\\int x$$",
    ":red[red] :blue-background[b] :orange-badge[o] :small[s] :shimmer[s] :color[c]{foreground=\"red\"}",
    ":smile: :+1: :material/home: :material_home: :streamlit:",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "**bold** __bold__ *em* _em_ ~~strike~~ `code` a\\*b",
    "a -> b <- c <-> d -- e >= f <= g ~= h",
    "back\\slash\\ at end\\",
    "trailing  \nspaces and\ttabs",
]

# Streamlit 1.67's text-node transforms (they run after escapes are resolved): GFM autolink literals,
# the Material / Streamlit / emoji shortcodes, the typographic arrows.
AUTOLINK_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I)
AUTOLINK_EMAIL = re.compile(r"(?<![^\s\W_])([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")
SHORTCODE = re.compile(r":(?:material_\w+|streamlit|[\w+-][\w+-]*):")
ARROW = re.compile(r"(^|\s)(<->|->|<-|--|>=|<=|~=)(\s|$)")


def resolved(markdown: str) -> str:
    """What a text node holds after parsing: backslash escapes resolved."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def render(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_renders_as_one_paragraph_of_literal_text(text):
    pytest.importorskip("markdown_it")
    out = render(inert(text))
    tags = set(re.findall(r"<(/?[a-z0-9]+)", out))
    assert tags <= {"p", "/p", "br"}, (text, out)  # no a, img, h1, table, code, em, strong, del, blockquote, li, pre
    visible = html.unescape(re.sub(r"<[^>]+>", " ", out)).replace(WORD_JOINER, "")
    assert " ".join(visible.split()) == " ".join(text.split()), (text, out)  # the same words, in order
    assert out.count("<br />") == text.count("\n") - 2 * text.count("\n\n")  # each line its own, blank lines part paragraphs


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_defeats_streamlit_text_node_plugins(text):
    source = inert(text)
    after = resolved(source)
    assert not AUTOLINK_URL.search(after), after
    assert not AUTOLINK_EMAIL.search(after), after
    assert not SHORTCODE.search(after), after
    assert not ARROW.search(after), after
    # Streamlit's own pre-checks on the source: LaTeX only when an unescaped $...$ pair is left,
    # :material/ rewritten before parsing, remark-emoji loaded only for a :code: in the source
    assert not re.search(r"(?<!\\)\$", source)
    assert ":material/" not in source
    assert not re.search(r":(?!material/|streamlit:)[\w+-][\w_+-]*:", source)
    for character in "[]()!<>#*_`|~$":
        assert not re.search(r"(?<!\\)" + re.escape(character), source.replace("\\\\", "")), (character, source)


@pytest.mark.parametrize("text", HOSTILE + ["plain words, nothing odd", "", "naïve café ✓ 日本語", "a\r\nb\rc"])
def test_reader_sees_the_text_itself(text):
    assert shown(inert(text)) == text.replace("\r\n", "\n").replace("\r", "\n")


def test_plain_text_is_left_alone():
    assert inert("Red cotton shirt with stripes") == "Red cotton shirt with stripes"
    assert inert(None) == "" and inert(42) == "42"


def test_newlines_stay_line_breaks_and_indentation_stays_visible():
    assert inert("one\ntwo") == "one  \ntwo"
    assert inert("one\n\n    four") == "one  \n  \n\u00a0\u00a0\u00a0\u00a0four"


def test_say_escapes_only_the_parts():
    message = say("Batch **{name}** failed: {error}", name="![b](http://evil/b.png)", error="bad *file*")
    assert message.startswith("Batch **") and message.count("**") == 2
    assert "\\!\\[b\\]\\(http\\:" + WORD_JOINER + "\\/\\/evil\\/b\\.png\\)" in message
    assert message.endswith("bad \\*file\\*")


def test_a_part_cannot_finish_a_shortcode_with_the_templates_colon():
    for part in (":material/home", ":material_home", ":smile", ":streamlit"):
        source = say("{part}: done", part=part)
        assert ":material/" not in source and not SHORTCODE.search(resolved(source)), source


def test_only_addresses_gfm_would_link_get_a_joiner():
    assert inert("dev@localhost") == "dev@localhost"  # no dotted domain: never autolinked
    assert inert("ann@shop.example") == "ann" + WORD_JOINER + "@shop\\.example"
