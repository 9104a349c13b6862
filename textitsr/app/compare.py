"""Swipe and blink between a pair's before and after images, entirely in the browser.

The viewer is one self-contained HTML document (our own few lines of CSS and JavaScript, no
third-party script) that Streamlit shows in an iframe (`st.iframe`, sized to its content). Dragging
the swipe line or blinking changes only what that iframe draws: nothing goes back to the server,
so no rerun, no round trip, no image re-sent. The images travel once, inline as JPEG data URLs.

Every text that reaches the document (labels with dates) is HTML-escaped; the script reads only
the document's own elements and builds no markup from data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textitsr.app.figures import data_url, jpeg_data_url, jpeg_size
from textitsr.errors import InputError
from textitsr.escape import html_text

#: Largest side of the images sent to the viewer (the store's thumbnails are 256 px).
VIEWER_MAX_SIDE = 512
#: Tallest the images are drawn (px); narrower columns draw them smaller.
VIEWER_IMAGE_HEIGHT = 480
#: Time each image stays on screen while blinking (ms).
BLINK_MS = 700

_STYLE = """
body{margin:0;font:14px "Source Sans Pro",sans-serif;color:#31333f;background:transparent}
.compare{width:100%;max-width:var(--max-w)}
.viewer{position:relative;user-select:none;touch-action:none}
.viewer img{display:block;width:100%;height:auto;image-rendering:auto}
.top{position:absolute;inset:0}
.swipe .top{clip-path:inset(0 calc(100% - var(--cut)) 0 0)}
.line{position:absolute;top:0;bottom:0;left:var(--cut);width:2px;margin-left:-1px;background:#fff;
 box-shadow:0 0 3px #000;cursor:ew-resize}
.blink .line,.blink .tag-left{display:none}
.blink.showing-before .top{visibility:hidden}
.tag{position:absolute;top:6px;padding:1px 6px;border-radius:4px;background:rgba(0,0,0,.6);color:#fff;
 font-size:12px}
.tag-left{left:6px}.tag-right{right:6px}
.controls{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin-top:8px}
.controls input[type=range]{flex:1;min-width:120px}
.swipe .blink-only,.blink .swipe-only{display:none}
button{font:inherit;padding:2px 10px;border:1px solid #bbb;border-radius:6px;background:#fff;cursor:pointer}
button[aria-pressed=true]{background:#2b6cb0;color:#fff;border-color:#2b6cb0}
"""

_SCRIPT = """
const root = document.getElementById("compare");
const viewer = document.getElementById("viewer");
const range = document.getElementById("cut");
const blinkTag = document.getElementById("blink-tag");
const pause = document.getElementById("pause");
let timer = null;
function setCut(percent) {
  const p = Math.max(0, Math.min(100, Number(percent)));
  root.style.setProperty("--cut", p + "%");
  range.value = p;
  range.setAttribute("aria-valuetext", "after shown on the left " + Math.round(p) + "%");
}
function show(which) {
  root.classList.toggle("showing-before", which === "before");
  root.dataset.showing = which;
  blinkTag.textContent = blinkTag.dataset[root.classList.contains("blink") ? which : "before"];
}
function stopBlink() { clearInterval(timer); timer = null; pause.textContent = "Play"; }
function startBlink() {
  stopBlink();
  timer = setInterval(() => show(root.dataset.showing === "before" ? "after" : "before"),
                      Number(root.dataset.blinkMs));
  pause.textContent = "Pause";
}
function setMode(mode) {
  root.classList.toggle("swipe", mode === "swipe");
  root.classList.toggle("blink", mode === "blink");
  document.querySelectorAll("[data-mode]").forEach(
    b => b.setAttribute("aria-pressed", String(b.dataset.mode === mode)));
  if (mode === "blink") { show("before"); startBlink(); } else { stopBlink(); show("after"); }
}
range.addEventListener("input", () => setCut(range.value));
function dragTo(event) {
  const box = viewer.getBoundingClientRect();
  setCut(100 * (event.clientX - box.left) / box.width);
}
viewer.addEventListener("pointerdown", event => {
  if (!root.classList.contains("swipe")) { stopBlink();
    show(root.dataset.showing === "before" ? "after" : "before"); return; }
  viewer.setPointerCapture(event.pointerId); dragTo(event);
});
viewer.addEventListener("pointermove", event => {
  if (viewer.hasPointerCapture(event.pointerId)) dragTo(event);
});
document.querySelectorAll("[data-mode]").forEach(
  b => b.addEventListener("click", () => setMode(b.dataset.mode)));
pause.addEventListener("click", () => timer ? stopBlink() : startBlink());
setCut(range.value);
setMode(root.dataset.start);
"""


@dataclass(frozen=True)
class ViewerImages:
    """The two images of a pair, as the viewer gets them (data URLs) with their captions."""

    before_url: str
    after_url: str
    before_label: str
    after_label: str
    aspect: float  # width / height

    @classmethod
    def from_arrays(
        cls, before: np.ndarray, after: np.ndarray, labels: tuple[str, str] = ("before", "after"),
        max_side: int = VIEWER_MAX_SIDE,
    ) -> ViewerImages:
        """Encode both images once; they must be the same size (the swipe lines them up pixel for pixel)."""
        if before.shape[:2] != after.shape[:2] or before.ndim != 3:
            raise InputError(f"swipe/blink: before {before.shape} and after {after.shape} must be "
                             "RGB images of the same size")
        height, width = before.shape[:2]
        return cls(jpeg_data_url(before, max_side), jpeg_data_url(after, max_side), labels[0], labels[1],
                   width / max(height, 1))

    @classmethod
    def from_jpegs(cls, before: bytes, after: bytes, labels: tuple[str, str] = ("before", "after")
                   ) -> ViewerImages:
        """The viewer's images from JPEG bytes as they are (the app's cached thumbnails: nothing is
        decoded or encoded again); both must be the same size."""
        size, other = jpeg_size(before), jpeg_size(after)
        if size != other:
            raise InputError(f"swipe/blink: before {size[0]}x{size[1]} and after {other[0]}x{other[1]} px "
                             "must be images of the same size")
        return cls(data_url(before), data_url(after), labels[0], labels[1], size[0] / max(size[1], 1))


def viewer_html(images: ViewerImages, *, start: str = "swipe", cut_percent: int = 50,
                image_height: int = VIEWER_IMAGE_HEIGHT, blink_ms: int = BLINK_MS) -> str:
    """The swipe/blink viewer as a complete HTML document.

    Swipe: the after image shows left of a line the analyst drags (on the image or with the
    slider), the before image right of it. Blink: before and after alternate every `blink_ms`
    (Pause stops it; a click on the image flips by hand).
    """
    if start not in ("swipe", "blink"):
        raise InputError(f"viewer start mode: expected 'swipe' or 'blink', got {start!r}")
    esc = html_text
    max_w = max(int(round(image_height * images.aspect)), 1)
    cut = min(max(int(cut_percent), 0), 100)
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>{_STYLE}</style></head><body>
<div id="compare" class="compare {esc(start)}" style="--max-w:{max_w}px;--cut:{cut}%"
 data-start="{esc(start)}" data-showing="after" data-blink-ms="{int(blink_ms)}">
<div id="viewer" class="viewer">
<img class="bottom" src="{esc(images.before_url)}" alt="{esc(images.before_label)}" draggable="false">
<img class="top" src="{esc(images.after_url)}" alt="{esc(images.after_label)}" draggable="false">
<div class="line"></div>
<span class="tag tag-left">{esc(images.after_label)}</span>
<span class="tag tag-right" id="blink-tag" data-before="{esc(images.before_label)}"
 data-after="{esc(images.after_label)}">{esc(images.before_label)}</span>
</div>
<div class="controls">
<button type="button" data-mode="swipe">Swipe</button><button type="button" data-mode="blink">Blink</button>
<input class="swipe-only" id="cut" type="range" min="0" max="100" step="1" value="{cut}"
 aria-label="Swipe position">
<button class="blink-only" type="button" id="pause">Pause</button>
</div>
</div>
<script>{_SCRIPT}</script></body></html>"""


def before_after_viewer(before: bytes, after: bytes, labels: tuple[str, str] = ("before", "after"),
                        *, start: str = "swipe", image_height: int = VIEWER_IMAGE_HEIGHT) -> None:
    """Show the swipe/blink viewer of two JPEG images on the current Streamlit page (no widget,
    nothing sent back)."""
    import streamlit as st

    images = ViewerImages.from_jpegs(before, after, labels)
    st.iframe(viewer_html(images, start=start, image_height=image_height), height="content")
