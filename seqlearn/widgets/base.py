"""The base of seqlearn's widgets: bundled front end, static fallback, ``save()``.

The front end is one ES module (``widgets.js``) and one stylesheet (``widgets.css``)
shipped inside the package and sent to the browser by anywidget: nothing is fetched
from a CDN, so the widgets work offline.  The module renders the view named by the
``_kind`` trait.
"""
from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import traitlets

from ..errors import ConfigError
from .colors import COLORMAPS
from .static import Heatmap, heatmap_png, heatmap_svg, standalone_html

_HERE = Path(__file__).parent
ESM_PATH = _HERE / "widgets.js"
CSS_PATH = _HERE / "widgets.css"


def float32_bytes(array: np.ndarray) -> bytes:
    """``array`` as little-endian float32 bytes, C order: what the views read as a ``Float32Array``."""
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


class SeqlearnWidget(anywidget.AnyWidget):
    """Common machinery; subclasses set ``_kind`` and implement :meth:`heatmap`."""

    _esm = ESM_PATH
    _css = CSS_PATH
    _kind = traitlets.Unicode().tag(sync=True)
    _colormaps = traitlets.Dict(COLORMAPS).tag(sync=True)

    def heatmap(self) -> Heatmap:
        """What the static renderings show: the current selection as a labelled matrix."""
        raise NotImplementedError

    def to_svg(self) -> str:
        """The current selection as a standalone SVG document."""
        return heatmap_svg(self.heatmap())

    def to_html(self) -> str:
        """A standalone interactive HTML page (no network needed), with the SVG as fallback."""
        state = {k: v for k, v in self.get_state().items() if k not in ("_esm", "_css")}
        return standalone_html(
            title=self.heatmap().title or type(self).__name__,
            esm=ESM_PATH.read_text(encoding="utf-8"),
            css=CSS_PATH.read_text(encoding="utf-8"),
            state=state,
            fallback_svg=self.to_svg(),
        )

    def save(self, path: str | Path) -> Path:
        """Write the current selection to ``path``: ``.svg``, ``.png`` (matplotlib) or
        ``.html`` (interactive, self-contained).  Returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".svg":
            path.write_text(self.to_svg(), encoding="utf-8")
        elif suffix == ".png":
            heatmap_png(self.heatmap(), path)
        elif suffix in (".html", ".htm"):
            path.write_text(self.to_html(), encoding="utf-8")
        else:
            raise ConfigError(f"{type(self).__name__}.save: cannot write {path.name!r}; use .svg, .png or .html")
        return path

    def _repr_mimebundle_(self, **kwargs):
        # The widget view for live front ends, plus the SVG as text/html for nbconvert,
        # GitHub and front ends without widgets (nbconvert falls back to it when the
        # notebook holds no widget state, which is JupyterLab's default on save).
        data, metadata = super()._repr_mimebundle_(**kwargs)
        data["text/html"] = f'<div class="seqlearn-static">\n{self.to_svg()}\n</div>'
        return data, metadata
