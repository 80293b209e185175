"""Static renderings of a widget: SVG (the notebook fallback), PNG and a standalone HTML page.

Every string that comes from data (tokens, titles) is escaped here: SVG text goes
through :func:`xml.sax.saxutils.escape`, the state embedded in the HTML page is JSON with
``<``, ``>`` and ``&`` written as ``\\u`` escapes, and matplotlib gets ``$`` escaped so a
token is never read as mathtext.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .colors import colors_for, matplotlib_cmap

#: labels longer than this are cut (with an ellipsis) in the static renderings
MAX_LABEL = 30
_FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


@dataclass
class Heatmap:
    """A labelled matrix and its colour scale: what the static renderings draw.

    values: ``(rows, cols)``; rows_shown: rows past it are left blank (the step slider).
    """

    values: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    cmap: str
    vmin: float
    vmax: float
    title: str = ""
    rows_shown: int | None = None


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _text_width(label: str, font: float) -> float:
    return 0.62 * font * len(label)


def heatmap_svg(h: Heatmap) -> str:
    """The heatmap as a self-contained SVG document (no scripts, no external references).

    Columns are labelled on top (rotated), rows on the left; a colour legend sits on the right.
    """
    rows, cols = h.values.shape
    cell = max(10, min(20, 720 // max(rows, cols, 1)))
    font = min(12, cell - 1)
    row_labels = [_short(s) for s in h.row_labels]
    col_labels = [_short(s) for s in h.col_labels]
    title_h = 22 if h.title else 0
    left = 8 + max((_text_width(s, font) for s in row_labels), default=0)
    top = title_h + 10 + max((_text_width(s, font) for s in col_labels), default=0)
    grid_w, grid_h = cols * cell, rows * cell
    legend_x = left + grid_w + 18
    legend_h = max(60, min(grid_h, 160))
    width = legend_x + 12 + 6 + 6 * font
    height = top + max(grid_h, legend_h) + 8
    shown = rows if h.rows_shown is None else max(0, min(rows, h.rows_shown))

    colors = colors_for(h.values, h.cmap, h.vmin, h.vmax)
    values, counts = np.unique(colors[:shown], return_counts=True)
    background = values[counts.argmax()] if shown else "#ffffff"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="seqlearn-heatmap" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{_FONT}" font-size="{font}">',
        f"<title>{escape(h.title or 'heatmap')}</title>",
        f'<rect width="100%" height="100%" fill="#ffffff"/>',
    ]
    if h.title:
        out.append(f'<text x="4" y="15" font-size="13" font-weight="bold">{escape(h.title)}</text>')
    for j, label in enumerate(col_labels):
        x, y = left + j * cell + cell / 2 + font * 0.35, top - 4
        out.append(f'<text transform="translate({x:.1f},{y:.1f}) rotate(-90)">{escape(label)}</text>')
    for i, label in enumerate(row_labels):
        fill = "" if i < shown else ' fill="#bbbbbb"'
        y = top + i * cell + cell / 2 + font * 0.35
        out.append(f'<text x="{left - 4:.1f}" y="{y:.1f}" text-anchor="end"{fill}>{escape(label)}</text>')
    out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{cell * cols}" height="{cell * shown}" fill="{background}"/>')
    for i in range(shown):
        for j in range(cols):
            if colors[i, j] != background:
                out.append(
                    f'<rect x="{left + j * cell:.1f}" y="{top + i * cell:.1f}" width="{cell}" height="{cell}" '
                    f'fill="{colors[i, j]}"/>'
                )
    out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{grid_w}" height="{grid_h}" fill="none" stroke="#999999"/>')
    out.append(_legend_svg(h, legend_x, top, legend_h, font))
    out.append("</svg>")
    return "\n".join(out)


def _legend_svg(h: Heatmap, x: float, y: float, height: float, font: float) -> str:
    """A vertical colour bar, vmax at the top, with three ticks."""
    steps = 32
    colors = colors_for(np.linspace(h.vmax, h.vmin, steps), h.cmap, h.vmin, h.vmax)
    band = height / steps
    parts = [
        f'<rect x="{x:.1f}" y="{y + k * band:.2f}" width="12" height="{band + 0.5:.2f}" fill="{c}"/>'
        for k, c in enumerate(colors)
    ]
    parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="12" height="{height:.1f}" fill="none" stroke="#999999"/>')
    for frac in (0.0, 0.5, 1.0):
        value = h.vmax - frac * (h.vmax - h.vmin)
        ty = y + frac * height + font * 0.35
        parts.append(f'<text x="{x + 16:.1f}" y="{ty:.1f}">{value:.2g}</text>')
    return "\n".join(parts)


def _mpl_text(text: str) -> str:
    """Text taken literally by matplotlib (a ``$`` would start mathtext)."""
    return text.replace("$", r"\$")


def heatmap_png(h: Heatmap, path: str | Path) -> None:
    """Draw the heatmap with matplotlib (Agg, no pyplot state) into a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = h.values.shape
    shown = rows if h.rows_shown is None else max(0, min(rows, h.rows_shown))
    values = np.ma.masked_array(h.values, mask=np.broadcast_to(np.arange(rows)[:, None] >= shown, h.values.shape))
    inch = 0.22
    label_in = 0.08 * max((len(_short(s)) for s in [*h.row_labels, *h.col_labels]), default=1)
    fig = Figure(figsize=(cols * inch + label_in + 1.6, rows * inch + label_in + 0.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(values, cmap=matplotlib_cmap(h.cmap), vmin=h.vmin, vmax=h.vmax, aspect="equal",
                      interpolation="nearest")
    ax.set_xticks(range(cols), [_mpl_text(_short(s)) for s in h.col_labels], rotation=90, fontsize=8)
    ax.set_yticks(range(rows), [_mpl_text(_short(s)) for s in h.row_labels], fontsize=8)
    ax.xaxis.tick_top()
    if h.title:
        # above the rotated column labels: about 5 points per character at 8 points
        ax.set_title(_mpl_text(h.title), fontsize=10, pad=10 + 5 * max(len(_short(s)) for s in h.col_labels))
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")


def _script_json(value: object) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>``, no ``<!--``."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# Loads the widget's own ES module from the embedded source and renders it against a
# minimal stand-in for the anywidget model (get/set/on/off/save_changes).
_PAGE_SCRIPT = """
const data = JSON.parse(document.getElementById("seqlearn-state").textContent);
for (const [key, b64] of Object.entries(data.buffers)) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  data.state[key] = new DataView(bytes.buffer);
}
const listeners = {};
const model = {
  get: (key) => data.state[key],
  set(key, value) {
    if (data.state[key] === value) return;
    data.state[key] = value;
    for (const fn of (listeners["change:" + key] || []).slice()) fn();
  },
  save_changes() {},
  on(event, fn) { (listeners[event] ||= []).push(fn); },
  off(event, fn) { listeners[event] = (listeners[event] || []).filter((g) => g !== fn); },
};
const url = URL.createObjectURL(new Blob([data.esm], { type: "text/javascript" }));
const module = await import(url);
const root = document.getElementById("seqlearn-view");
root.replaceChildren();
module.default.render({ model, el: root });
"""


def standalone_html(*, title: str, esm: str, css: str, state: dict, fallback_svg: str) -> str:
    """A self-contained interactive page: the widget's ES module and state inlined.

    ``state`` maps trait names to values; ``bytes`` values are shipped base64-encoded and
    handed to the view as ``DataView``, as Jupyter's widget manager does.  The static SVG
    shows until the script replaces it (and stays where scripts do not run).
    """
    plain = {k: v for k, v in state.items() if not isinstance(v, (bytes, bytearray, memoryview))}
    buffers = {
        k: base64.b64encode(bytes(v)).decode("ascii")
        for k, v in state.items()
        if isinstance(v, (bytes, bytearray, memoryview))
    }
    payload = _script_json({"state": plain, "buffers": buffers, "esm": esm})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>\n{css}\n</style>\n</head>\n<body>\n"
        f'<div id="seqlearn-view">\n{fallback_svg}\n</div>\n'
        f'<script type="application/json" id="seqlearn-state">{payload}</script>\n'
        f'<script type="module">{_PAGE_SCRIPT}</script>\n</body>\n</html>\n'
    )
