"""User and model text inside Streamlit's Markdown elements, shown as the literal text it is.

Streamlit renders the body of st.markdown / st.error / st.info / st.warning / st.success / st.caption /
st.toast / st.write(str), widget labels, radio options, metric labels and values, progress text and image
captions as GitHub-flavoured Markdown (HTML is escaped unless unsafe_allow_html, Markdown is not). A SKU,
file name, CSV cell, batch name, caption, summary or error message echoed there could otherwise show a
remote image (a tracking beacon), a link to a phishing page, LaTeX, coloured text or headings in a
colleague's browser. Cells of st.dataframe / st.data_editor, st.text, st.code, text-input values and the
options of st.selectbox / st.multiselect are plain text and need none of this.

`inert(text)` escapes it; `say(template, **parts)` builds an app message whose template keeps its own
Markdown (bold and so on) while every part is inert. Two layers, because Streamlit's frontend
(StreamlitMarkdown, react-markdown + remark plugins) works in two steps:

1. Parsing. Every Markdown-significant ASCII character gets a backslash, which CommonMark turns back into
   the plain character: links and images `[]()!`, angle autolinks and HTML `<>`, emphasis `*_~`, code
   `` ` ``, headings `#`, lists `+-.` (and `)` of "1)"), block quotes `>`, tables `|`, setext underlines
   `=`, entities `&`, LaTeX `$` (Streamlit's LaTeX check skips `\\$`), directives such as `:red[x]` and
   `:material/icon:` (`:`, `[]`, `{}`, and `/`: Streamlit rewrites `:material/` to `:material_` in the
   source before parsing), and the backslash itself.
2. Plugins that run on the parsed text, after the escapes are gone: GFM's bare-URL autolinker
   (`http://`, `https://`, `www.`, `name@host.tld`), the `:material_name:` / `:streamlit:` / emoji
   shortcodes and the arrows `-> <- <-> -- >= <= ~=`. Escapes cannot stop these, so an invisible
   WORD JOINER (U+2060) goes where it breaks their patterns: `http:⁠//`, `www⁠.`, `name⁠@host`,
   `:⁠smile:` (after every colon before a word character, so a part cannot finish a shortcode with
   the template's next colon), `-⁠>`. The text reads the same; a copied URL carries the invisible character.

Newlines stay line breaks (a hard break each; a blank line still separates paragraphs) and leading
spaces stay visible (no-break spaces, so an indented line never turns into a code block).
"""

from __future__ import annotations

import re
from typing import Any

WORD_JOINER = "\u2060"
MARKDOWN_CHARACTERS = "\\`*_[](){}<>!#+-.|~$:&=/"
_SIGNIFICANT = re.compile("([" + re.escape(MARKDOWN_CHARACTERS) + "])")
_URL_SCHEME = re.compile(r"(?<=:)(?=//)")  # http:⁠// (and any other scheme)
_WWW = re.compile(r"(?i)(?<=www)(?=\.)")  # www⁠.example
_EMAIL_AT = re.compile(r"(?<=[-.\w+])(?=@[-\w]+(?:\.[-\w]+)+)")  # name⁠@host.tld (GFM links only a dotted domain: dev@localhost stays as is)
_SHORTCODE = re.compile(r"(?<=:)(?=[\w+-])")  # :⁠smile:, :⁠material_home:, :⁠streamlit: (with or without the closing colon)
_ARROW = re.compile(r"(?<![^\s])([<\-~>])(?=(?:->|-|>|=)(?:\s|$))")  # -⁠>, <⁠-, <⁠->, -⁠-, >⁠=, <⁠=, ~⁠=
_LEADING_SPACE = re.compile(r"^[ \t]+", re.MULTILINE)


def inert(text: Any) -> str:
    """`text` (anything; None is "") as Markdown source that renders exactly as the text itself."""
    if text is None:
        return ""
    value = str(text).replace("\r\n", "\n").replace("\r", "\n")
    for pattern in (_URL_SCHEME, _WWW, _EMAIL_AT, _SHORTCODE, _ARROW):
        value = pattern.sub(lambda match: (match.group(1) if match.groups() else "") + WORD_JOINER, value)
    value = _SIGNIFICANT.sub(r"\\\1", value)
    value = _LEADING_SPACE.sub(lambda match: match.group(0).replace("\t", "    ").replace(" ", "\u00a0"), value)
    return "  \n".join(value.split("\n"))


def say(template: str, **parts: Any) -> str:
    """An app message: `template` is the app's own Markdown with `{name}` fields, each part is inert.

    say("Batch **{name}** failed: {error}", name=batch.name, error=message)"""
    return template.format(**{name: inert(value) for name, value in parts.items()})


def shown(markdown: str) -> str:
    """What a reader sees of `inert(text)`: the text back (no escapes, joiners or hard-break spaces).
    For tests and logs; never feed it back into a Markdown element."""
    value = re.sub(r"\\(.)", r"\1", markdown.replace("  \n", "\n"))
    return value.replace(WORD_JOINER, "").replace("\u00a0", " ")
