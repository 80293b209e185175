"""Hidden-state explorer: per-token hidden states and gate activations of a recurrent encoder.

The view colours the sentence's tokens by one unit's activation, draws all units x tokens
as a heatmap (click a row to pick a unit), and lists the units most active at the token
under the pointer.  Series (hidden state, LSTM input/forget/output gates, GRU reset/update
gates, ...) come from :func:`~seqlearn.widgets.activations.encoder_activations`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import traitlets

from ..errors import ConfigError, DataError
from .activations import encoder_activations
from .base import SeqlearnWidget, float32_bytes
from .static import Heatmap

#: at most this many units are drawn in the static fallback (the most active ones)
STATIC_UNITS = 48


def series_scale(name: str, values: np.ndarray) -> dict[str, Any]:
    """How a series is coloured and ranked: gates (in (0, 1)) on the sequential scale,
    ranked by value; states on the diverging scale, symmetric around 0 (at least [-1, 1]),
    ranked by magnitude."""
    if name.endswith("gate"):
        return {"cmap": "sequential", "vmin": 0.0, "vmax": 1.0, "rank": "value"}
    bound = max(1.0, float(np.abs(values).max(initial=0.0)))
    return {"cmap": "diverging", "vmin": -bound, "vmax": bound, "rank": "abs"}


class HiddenStateView(SeqlearnWidget):
    """Per-token activations of one sentence: a unit selector, the units x tokens heatmap,
    and the units most active at the selected token.

    ``series``: ``{name: (len(tokens), hidden_size)}``, all of one hidden size.  Synced
    selection: ``series_index``, ``unit``, ``token``; ``top_k`` units are listed.
    """

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    series = traitlets.List(traitlets.Dict()).tag(sync=True)
    values = traitlets.Bytes().tag(sync=True)
    hidden_size = traitlets.Int().tag(sync=True)
    series_index = traitlets.Int(0).tag(sync=True)
    unit = traitlets.Int(0).tag(sync=True)
    token = traitlets.Int(0).tag(sync=True)
    top_k = traitlets.Int(10).tag(sync=True)

    def __init__(self, tokens: Sequence[str], series: Mapping[str, Any], **kwargs: Any):
        if not tokens:
            raise ConfigError("HiddenStateView needs at least one token")
        if not series:
            raise ConfigError("HiddenStateView needs at least one series of activations")
        arrays = {}
        for name, value in series.items():
            array = value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if array.ndim != 2 or array.shape[0] != len(tokens):
                raise DataError(f"series {name!r} has shape {array.shape}; expected ({len(tokens)}, hidden_size)")
            arrays[name] = array.astype(np.float32)
        sizes = {a.shape[1] for a in arrays.values()}
        if len(sizes) != 1:
            raise DataError(f"all series must have one hidden size; got {sorted(sizes)}")
        self._arrays = list(arrays.values())
        meta = [{"name": name, **series_scale(name, a)} for name, a in arrays.items()]
        super().__init__(tokens=[str(t) for t in tokens], series=meta, values=float32_bytes(np.stack(self._arrays)),
                         hidden_size=sizes.pop(), _kind="hidden", **kwargs)

    @traitlets.validate("series_index", "unit", "token")
    def _in_range(self, proposal):
        name = proposal.trait.name
        limit = {"series_index": len(self.series), "unit": self.hidden_size, "token": len(self.tokens)}[name]
        if not 0 <= proposal.value < limit:
            raise ConfigError(f"HiddenStateView: {name} must be in [0, {limit}), got {proposal.value}")
        return proposal.value

    @property
    def current(self) -> np.ndarray:
        """The selected series ``(len(tokens), hidden_size)``."""
        return self._arrays[self.series_index]

    def most_active(self, token: int | None = None, k: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` (default ``top_k``) units most active at ``token`` (default: the selected
        one) in the selected series, as ``(unit, value)``, most active first: by value for
        gates, by magnitude for states; ties go to the lower unit (as the view lists them)."""
        token = self.token if token is None else token
        k = self.top_k if k is None else k
        row = self.current[token].astype(np.float64)
        activity = np.abs(row) if self.series[self.series_index]["rank"] == "abs" else row
        order = np.lexsort((np.arange(len(row)), -activity))[:k]
        return [(int(u), float(row[u])) for u in order]

    @classmethod
    def from_encoder(cls, encoder: torch.nn.Module, inputs: torch.Tensor, tokens: Sequence[str],
                     **view_options: Any) -> "HiddenStateView":
        """The view of ``encoder`` (an :class:`~seqlearn.encoder.RNNEncoder`) over one sentence:
        ``inputs`` ``(len(tokens), input_size)`` are its embedded tokens."""
        if inputs.size(0) != len(tokens):
            raise DataError(f"{len(tokens)} tokens but {inputs.size(0)} input vectors")
        return cls(tokens, encoder_activations(encoder, inputs), **view_options)

    def heatmap(self) -> Heatmap:
        """Units x tokens of the selected series; with many units, the :data:`STATIC_UNITS`
        with the largest activity anywhere in the sentence (the selected unit always)."""
        meta = self.series[self.series_index]
        values = self.current.T  # (hidden, tokens)
        if values.shape[0] > STATIC_UNITS:
            centre = 0.0 if meta["rank"] == "abs" else meta["vmin"]
            peak = np.abs(values - centre).max(1)
            peak[self.unit] = np.inf
            units = np.sort(np.argsort(-peak, kind="stable")[:STATIC_UNITS])
        else:
            units = np.arange(values.shape[0])
        title = f"{meta['name']}, {len(units)} of {values.shape[0]} units"
        return Heatmap(values=values[units], row_labels=[f"unit {u}" for u in units], col_labels=list(self.tokens),
                       cmap=meta["cmap"], vmin=meta["vmin"], vmax=meta["vmax"], title=title)


def show_hidden_states(model: Any, sentence: str | Sequence[str], **view_options: Any) -> HiddenStateView:
    """A :class:`HiddenStateView` of a :class:`~seqlearn.Seq2Seq` model's encoder over one
    source sentence (a string, split with the model's source tokenizer, or a token list).

    The tokens are embedded as the model embeds them (``</s>`` appended, no dropout); a
    token outside the vocabulary is read as ``<unk>`` but labelled as written.
    """
    tokens = model.src_tokenizer.tokenize(sentence) if isinstance(sentence, str) else [str(t) for t in sentence]
    ids = torch.tensor(model.src_vocab.encode(tokens, add_eos=True), device=model.src_embedding.weight.device)
    with torch.no_grad():
        inputs = model.src_embedding(ids)
    return HiddenStateView.from_encoder(model.encoder, inputs, [*tokens, model.src_vocab.itos[model.src_vocab.eos_index]],
                                        **view_options)
