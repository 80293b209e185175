"""Notebook widgets: attention alignments and a hidden-state explorer, offline.

Both are anywidget widgets whose front end (one ES module and one stylesheet) ships in
this package: no CDN, no require.js, no network.  Each also carries a static SVG in its
display data, so nbconvert exports and front ends without widgets still show it, and
``view.save("x.svg" | "x.png" | "x.html")`` writes it out.

>>> show_model_attention(model, ["on the 3 of may", "in 1 9 9 8"], beam_size=5, n_best=3)  # doctest: +SKIP
>>> hyps = model.translate(["on the 3 of may"], return_attention=True)  # doctest: +SKIP
>>> show_attention(hyps, ["on the 3 of may"])  # doctest: +SKIP
>>> show_hidden_states(model, "on the 3 of may")  # doctest: +SKIP
"""
from __future__ import annotations

try:
    import anywidget  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("seqlearn.widgets needs anywidget: pip install 'seqlearn[notebook]'") from error

from .activations import cell_activations, encoder_activations
from .attention_view import (
    Alignment,
    AttentionView,
    alignment_from_hypothesis,
    hypothesis_mimebundle,
    show_attention,
    show_model_attention,
)
from .hidden_state_view import HiddenStateView, show_hidden_states

__all__ = [
    "Alignment",
    "AttentionView",
    "HiddenStateView",
    "alignment_from_hypothesis",
    "cell_activations",
    "encoder_activations",
    "hypothesis_mimebundle",
    "show_attention",
    "show_hidden_states",
    "show_model_attention",
]
