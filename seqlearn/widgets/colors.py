"""Colour scales shared by the widgets' JavaScript, their SVG fallback and their PNG export.

A colour map is a list of ``#rrggbb`` stops spread evenly over ``[vmin, vmax]`` and
interpolated linearly in sRGB.  The same stops travel to the browser (``_colormaps``
trait), so the interactive view, the static SVG and matplotlib's PNG agree on every colour.
"""
from __future__ import annotations

import numpy as np

#: ``sequential``: white to dark blue, for weights and gates in [0, 1];
#: ``diverging``: blue - white - red, for hidden and cell states centred on 0.
COLORMAPS: dict[str, list[str]] = {
    "sequential": ["#ffffff", "#c6dbef", "#6baed6", "#2171b5", "#08306b"],
    "diverging": ["#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b"],
}


def _rgb(stop: str) -> tuple[int, int, int]:
    return int(stop[1:3], 16), int(stop[3:5], 16), int(stop[5:7], 16)


def colors_for(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """The ``#rrggbb`` colour of each value as a string array of the same shape.

    Values are clipped to ``[vmin, vmax]``; channels are rounded to the nearest integer,
    as the JavaScript view does.
    """
    stops = np.array([_rgb(s) for s in COLORMAPS[cmap]], dtype=np.float64)
    span = vmax - vmin if vmax > vmin else 1.0
    t = np.clip((np.asarray(values, dtype=np.float64) - vmin) / span, 0.0, 1.0) * (len(stops) - 1)
    low = np.minimum(np.floor(t).astype(int), len(stops) - 2)
    frac = (t - low)[..., None]
    rgb = np.rint(stops[low] * (1 - frac) + stops[low + 1] * frac).astype(int)
    hexes = np.char.add("#", np.char.zfill(np.char.mod("%06x", (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]), 6))
    return hexes


def matplotlib_cmap(cmap: str):
    """The colour map as a matplotlib ``LinearSegmentedColormap`` (for PNG export)."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(f"seqlearn-{cmap}", COLORMAPS[cmap])
