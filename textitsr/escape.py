"""Escaping for text that reaches a browser: pair ids, captions, dates, error messages.

Pair ids come from file names and captions from annotation files, so either may hold HTML or Markdown
(``p<img src=x onerror=alert(1)>A.tif``, ``[click](javascript:...)``). Streamlit renders
`st.markdown`/`st.caption`/`st.error` text as Markdown, and Leaflet tooltips and Plotly labels take
HTML; every such string goes through one of these functions so it shows as the literal text.
"""

from __future__ import annotations

import html
import re
from typing import Any

# Characters that open inline markup anywhere (emphasis, code, links/images, HTML, tables,
# strikethrough, Streamlit's :colour[...] and $math$, entities); CommonMark lets a backslash escape them.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>~|$&])")
# Markers that only act at the start of a line: headings, lists, quotes, setext underlines.
_MD_LINE_START = re.compile(r"^(\d+)([.)])|^([#+\->=])")
# Bare URLs that GitHub-flavoured Markdown (Streamlit's renderer) turns into links.
_MD_AUTOLINK = re.compile(r"(?i)(?<=[a-z])(:)(?=//)|(?<=\bwww)(\.)")


def html_text(value: Any) -> str:
    """`value` as HTML text: `<`, `>`, `&` and quotes become entities (no tag can open)."""
    return html.escape(str(value), quote=True)


def markdown_text(value: Any) -> str:
    """`value` as literal Markdown text on one line.

    Links, images, emphasis, code spans, HTML, bare URLs and Streamlit's colour/math directives all
    show as the characters typed; a leading '#', '-', '1.' cannot start a block, and line breaks
    become spaces. Plain words and punctuation such as '.', '-', ':' stay as they are.
    """
    text = " ".join(str(value).split())
    text = _MD_INLINE.sub(r"\\\1", text)
    text = _MD_AUTOLINK.sub(lambda m: "\\" + (m.group(1) or m.group(2)), text)
    return _MD_LINE_START.sub(
        lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(1) else f"\\{m.group(3)}", text
    )


def markdown_code(value: Any) -> str:
    """`value` as a Markdown code span (ids, paths): shown literally in monospace.

    The fence is one backtick longer than any run of backticks inside, so the value cannot close it.
    """
    text = " ".join(str(value).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"
