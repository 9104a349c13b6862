"""Text that reaches a browser shows as typed: no tag, link or emphasis can come out of a pair id or a
caption, and ids taken from file names carry no markup at all."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from textitsr.data.pairs import id_part
from textitsr.escape import html_text, markdown_code, markdown_text

XSS = "p<img src=x onerror=alert(1)>A.tif"
_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def rendered_text(html: str) -> str:
    """The visible text of rendered HTML (entities decoded); fails on any tag but <p>."""
    import html as htmllib

    tags = set(re.findall(r"</?([a-zA-Z0-9]+)", html))
    assert tags <= {"p"}, html
    return htmllib.unescape(re.sub(r"</?p>", "", html)).strip()


@pytest.mark.parametrize(
    "text",
    [
        XSS,
        "[click](javascript:alert(2))",
        "![pic](x)",
        "**bold** _it_ `code`",
        "<b>b</b>",
        "# heading",
        "- item",
        "1. item",
        "a\\b",
        ":red[red] :material/home: $x^2$",
        "line one\nline two",
        "~~gone~~ a | b",
        "&lt;b&gt; &amp;",
        "> quote",
        "42) item",
    ],
)
def test_markdown_text_renders_as_the_characters_typed(text: str) -> None:
    assert rendered_text(_MD.render(markdown_text(text))) == " ".join(text.split())


def test_plain_text_stays_readable_in_the_markdown_source() -> None:
    """Words, dots, dashes and colons are left alone, so messages read the same in the source."""
    assert markdown_text("no-such-pair: a road was built. 3.5 km") == "no-such-pair: a road was built. 3.5 km"
    assert markdown_text("see https://evil.example and www.evil.example") == (
        "see https\\://evil.example and www\\.evil.example"  # GFM would link them
    )


@given(st.text())
def test_any_text_survives_markdown_escaping(text: str) -> None:
    shown = rendered_text(_MD.render(markdown_text(text)))
    assert shown == " ".join(text.split()).replace("\x00", "\ufffd")


@given(st.text())
def test_html_text_opens_no_tag(text: str) -> None:
    escaped = html_text(text)
    assert "<" not in escaped and ">" not in escaped and '"' not in escaped
    import html as htmllib

    assert htmllib.unescape(escaped) == text


@given(st.text())
def test_id_part_keeps_only_safe_characters(text: str) -> None:
    part = id_part(text)
    assert part and re.fullmatch(r"[\w.+-]+", part)
    assert id_part(part) == part  # already safe ids pass unchanged


def test_pair_ids_from_hostile_file_names_are_sanitised(tmp_path) -> None:
    from PIL import Image

    from textitsr.data.folder import FolderSource

    for side in ("before", "after"):
        (tmp_path / side).mkdir()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(
            tmp_path / side / "p<img src=x onerror=alert(1)>A.png"
        )
    ids = [p.pair_id for p in FolderSource(tmp_path).pairs()]
    assert ids == ["folder_p_img_src_x_onerror_alert_1_A"]


def test_geotiff_ids_from_hostile_file_names_are_sanitised(tmp_path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    for name in (XSS, "q<script>B.tif"):
        with rasterio.open(
            tmp_path / name,
            "w",
            driver="GTiff",
            width=16,
            height=16,
            count=3,
            dtype="uint8",
            crs="EPSG:32614",
            transform=from_origin(500000, 4000000, 10, 10),
        ) as dst:
            dst.write(np.full((3, 16, 16), 100, np.uint8))
    from textitsr.data.geotiff import GeoTiffSource

    ids = [p.pair_id for p in GeoTiffSource(tmp_path, tile_size=8).pairs()]
    assert ids and all(re.fullmatch(r"[\w.+-]+", pid) for pid in ids), ids


@pytest.mark.parametrize(
    "text", ["p<img src=x onerror=alert(1)>A.tif", "a`b", "``x``", "`", "[l](javascript:x)"]
)
def test_markdown_code_shows_ids_literally(text: str) -> None:
    html = _MD.render(markdown_code(text))
    assert re.fullmatch(r"<p><code>[^<]*</code></p>\n", html), html
    import html as htmllib

    assert htmllib.unescape(re.sub(r"</?(p|code)>", "", html)).strip() == text
