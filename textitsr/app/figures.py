"""Plotly figures and image arrays the pages show: result scores, change difference."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from textitsr.errors import InputError
from textitsr.escape import html_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    import plotly.graph_objects as go

    from textitsr.service import PairHit


def jpeg_bytes(image: np.ndarray, max_side: int = 256) -> bytes:
    """An RGB uint8 array as JPEG (downscaled to max_side): quick to encode and a fraction of a
    PNG's bytes for imagery."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def data_url(jpeg: bytes) -> str:
    """JPEG bytes as an inline data URL."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def jpeg_data_url(image: np.ndarray, max_side: int = 256) -> str:
    """An RGB uint8 array as an inline JPEG data URL (see `jpeg_bytes`)."""
    return data_url(jpeg_bytes(image, max_side))


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) of JPEG bytes, read from the header (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"image bytes: expected a JPEG image ({err})") from err


def place_timeline(history: Sequence[PairHit], title: str = "") -> go.Figure:
    """One place's pairs in date order, each a segment from its before to its after date at its score:
    the highest segment says when the change asked about happened."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for h in history:
        before, after = h.dates
        if not before or not after:
            continue
        fig.add_trace(go.Scatter(
            x=[before, after], y=[h.score, h.score], mode="lines+markers", showlegend=False,
            line={"width": 5}, name=html_text(h.pair_id),
            customdata=[[html_text(f"{before} → {after}"), html_text(h.pair_id)]] * 2,
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>score %{y:.3f}<extra></extra>",
        ))
    top = 40 if title else 10  # the page's heading usually names the chart
    fig.update_layout(title=title or None, height=260, margin={"l": 10, "r": 10, "t": top, "b": 10},
                      yaxis_title="score", xaxis_type="date")
    return fig


def score_chart(hits: Sequence[PairHit], title: str = "Similarity of the results") -> go.Figure:
    """Horizontal bar chart of result scores, best on top."""
    import plotly.graph_objects as go

    labels = [html_text(f"#{h.rank} {h.pair_id}") for h in hits]
    fig = go.Figure(
        go.Bar(
            x=[h.score for h in hits],
            y=labels,
            orientation="h",
            marker_color="#2b6cb0",
            hovertemplate="%{y}<br>score %{x:.3f}<extra></extra>",
            text=[f"{h.score:.3f}" for h in hits],
            textposition="auto",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="cosine similarity",
        yaxis={"autorange": "reversed"},
        height=max(220, 32 * len(hits) + 100),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


#: Diverging colours of the difference map: darker after (blue), no change (white), brighter (red).
DIFFERENCE_COLORS = "RdBu_r"


def difference_map(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel signed brightness change in [-1, 1]: mean over RGB of (after - before) / 255."""
    if before.shape != after.shape:
        raise InputError(f"difference: before {before.shape} and after {after.shape} differ in size")
    diff = (after.astype(np.float32) - before.astype(np.float32)).mean(axis=-1)
    return diff / 255.0


def difference_heatmap(before: np.ndarray, after: np.ndarray) -> go.Figure:
    """Diverging heatmap of after - before: white is no change, red brighter, blue darker.

    The colour range is symmetric around zero and follows the strongest change (at least 0.1),
    so small changes stay visible and zero always sits in the neutral middle.
    """
    import plotly.graph_objects as go

    diff = difference_map(before, after)
    top = max(float(np.percentile(np.abs(diff), 99.5)) if diff.size else 0.0, 0.1)
    fig = go.Figure(go.Heatmap(
        z=diff, zmin=-top, zmid=0.0, zmax=top, colorscale=DIFFERENCE_COLORS,
        hovertemplate="after - before: %{z:+.2f}<extra></extra>",
        colorbar={"title": {"text": "after − before<br>(brightness, 0-1)"},
                  "tickvals": [-top, 0.0, top],
                  "ticktext": [f"−{top:.2f} darker", "0 no change", f"+{top:.2f} brighter"]},
    ))
    fig.update_layout(title="Difference: after − before (mean of R, G, B)",
                      margin={"l": 0, "r": 0, "t": 40, "b": 0})
    fig.update_xaxes(showticklabels=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor="x")
    return fig


#: What each spectral change statistic (`textitsr.data.describe.change_stats`) measures, its unit and
#: the factor to that unit. Names say what is measured, not what it might mean: NDBI rises on bare
#: soil as on new roofs, so a forest clearing raises it too ("built gain" would claim buildings).
_PIXEL_SHARE = "% of the tile's valid pixels"
STATISTICS: dict[str, tuple[str, str, float]] = {
    "ndvi_before": ("mean NDVI, before", "index, −1 to 1", 1.0),
    "ndvi_after": ("mean NDVI, after", "index, −1 to 1", 1.0),
    "ndvi_delta": ("mean NDVI change (after − before)", "index difference, −2 to 2", 1.0),
    "vegetation_loss": ("vegetation loss: vegetated pixels whose NDVI fell > 0.2", _PIXEL_SHARE, 100.0),
    "vegetation_gain": ("vegetation gain: pixels vegetated after whose NDVI rose > 0.2", _PIXEL_SHARE, 100.0),
    "ndwi_delta": ("mean NDWI change (after − before)", "index difference, −2 to 2", 1.0),
    "water_before": ("water (NDWI > 0.2), before", _PIXEL_SHARE, 100.0),
    "water_after": ("water (NDWI > 0.2), after", _PIXEL_SHARE, 100.0),
    "water_gain": ("water appeared", _PIXEL_SHARE, 100.0),
    "water_loss": ("water receded", _PIXEL_SHARE, 100.0),
    "ndbi_delta": ("mean bare/built-up index (NDBI) change", "index difference, −2 to 2", 1.0),
    "built_gain": ("bare/built-up index increase: NDBI rose > 0.2 (bare soil or roofs)", _PIXEL_SHARE, 100.0),
    "built_loss": ("bare/built-up index decrease: NDBI fell > 0.2", _PIXEL_SHARE, 100.0),
    "brightness_before": ("mean brightness of the visible bands, before", "pixel value scaled 0 to 1", 1.0),
    "brightness_after": ("mean brightness of the visible bands, after", "pixel value scaled 0 to 1", 1.0),
    "brightness_delta": ("mean brightness change (after − before)", "scaled pixel value, −1 to 1", 1.0),
    "pixel_change": ("mean absolute difference of the shown bands", "scaled pixel value, 0 to 1", 1.0),
    "relative_pixel_change": (
        "that difference against the pairs indexed with it (robust z-score; 0 is their usual)",
        "robust standard deviations, −3 to 3",
        1.0,
    ),
    "archive_pairs": ("pairs of its archive that difference was read against", "pairs", 1.0),
}


def stat_unit(name: str) -> tuple[str, float]:
    """(unit, factor) of a spectral change statistic: index means and differences are unitless,
    brightness is a scaled pixel value, and only counts of pixels are a share of the tile."""
    if name in STATISTICS:
        return STATISTICS[name][1:]
    index = name.split("_")[0].upper()
    if name.endswith("_delta"):
        return (f"{index} change (after − before)", 1.0)
    return ("value", 1.0)  # a statistic this table does not know: shown as it is, no unit claimed


def stats_frame_rows(stats: Mapping[str, float]) -> list[dict[str, Any]]:
    """Spectral change statistics as table rows (statistic, value, unit)."""
    rows = []
    for name, value in stats.items():
        unit, factor = stat_unit(name)
        label = STATISTICS[name][0] if name in STATISTICS else name.replace("_", " ")
        rows.append({"statistic": label, "value": round(float(value) * factor, 4), "unit": unit})
    return rows
