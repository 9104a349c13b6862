"""Escaping for text that reaches a browser: pair ids, captions, dates, error messages.

Pair ids come from file names and captions from annotation files, so either may hold HTML or Markdown
(``p<img src=x onerror=alert(1)>A.tif``, ``[click](javascript:...)``). Streamlit renders
`st.markdown`/`st.caption`/`st.error` text as Markdown, and Leaflet tooltips and Plotly labels take
HTML; every such string goes through one of these functions so it shows as the literal text.
"""

from __future__ import annotations

import html
import re
import string
from typing import Any

# CommonMark lets a backslash escape any ASCII punctuation; Streamlit adds :colour[...], :icon:, $math$.
_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
_WHITESPACE = re.compile(r"\s+")


def html_text(value: Any) -> str:
    """`value` as HTML text: `<`, `>`, `&` and quotes become entities (no tag can open)."""
    return html.escape(str(value), quote=True)


def markdown_text(value: Any) -> str:
    """`value` as literal Markdown text on one line: every punctuation mark backslash-escaped.

    Links, images, emphasis, code spans, HTML and Streamlit's colour/icon/math directives all show
    as the characters typed; line breaks become spaces so a value cannot start a new block.
    """
    return _MD_SPECIAL.sub(r"\\\1", _WHITESPACE.sub(" ", str(value)))
