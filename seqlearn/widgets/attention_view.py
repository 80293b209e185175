"""Interactive attention alignments: :class:`AttentionView` and :func:`show_attention`.

The view shows a target x source heatmap with the tokens as labels.  Hovering a cell, a
source token or a target token highlights the linked tokens and shows the weight; selectors
switch between the sentences of a batch and the n-best hypotheses of each; a step slider
reveals the target token by token.  All matrices travel to the browser once, as one buffer
of float32 bytes (``weights``), described by ``items`` (tokens, shape, offset).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import traitlets

from ..errors import ConfigError, DataError
from ..tokenizers import get_tokenizer
from .base import SeqlearnWidget, float32_bytes
from .static import Heatmap

EOS = "</s>"


@dataclass(frozen=True)
class Alignment:
    """One hypothesis' attention: ``weights`` ``(len(target), len(source))``, rows sum to 1.

    ``sentence``: index of its source sentence in the batch; ``rank``: 0 for the best hypothesis.
    """

    source: tuple[str, ...]
    target: tuple[str, ...]
    weights: np.ndarray
    sentence: int = 0
    rank: int = 0
    score: float | None = None

    def __post_init__(self) -> None:
        shape = (len(self.target), len(self.source))
        if self.weights.shape != shape:
            raise DataError(
                f"attention of sentence {self.sentence}, hypothesis {self.rank} has shape "
                f"{tuple(self.weights.shape)}, but its {shape[0]} target and {shape[1]} source tokens "
                f"need {shape}"
            )


class AttentionView(SeqlearnWidget):
    """Heatmap of attention weights with token labels, selectors and a step slider.

    Build it with :func:`show_attention` (from hypotheses) or from :class:`Alignment` s.
    Selection state (``sentence``, ``hypothesis``, ``step``) is synced both ways; ``step``
    is the number of target tokens revealed, None for all.
    """

    items = traitlets.List(traitlets.Dict()).tag(sync=True)
    weights = traitlets.Bytes().tag(sync=True)
    sentence = traitlets.Int(0).tag(sync=True)
    hypothesis = traitlets.Int(0).tag(sync=True)
    step = traitlets.Int(None, allow_none=True).tag(sync=True)

    def __init__(self, alignments: Sequence[Alignment], *, sentence: int = 0, hypothesis: int = 0,
                 step: int | None = None, **kwargs: Any):
        if not alignments:
            raise ConfigError("AttentionView needs at least one alignment")
        keys = [(a.sentence, a.rank) for a in alignments]
        if len(set(keys)) != len(keys):
            raise ConfigError("AttentionView: two alignments share a (sentence, rank) pair")
        for sentence_id in {s for s, _ in keys}:
            ranks = sorted(r for s, r in keys if s == sentence_id)
            if ranks != list(range(len(ranks))):
                raise ConfigError(f"AttentionView: the ranks of sentence {sentence_id} are {ranks}, not 0, 1, ...")
        self.alignments = list(alignments)
        self._index = {key: i for i, key in enumerate(keys)}
        items, offset = [], 0
        for a in self.alignments:
            rows, cols = a.weights.shape
            items.append({
                "source": list(a.source), "target": list(a.target), "sentence": a.sentence, "rank": a.rank,
                "score": a.score, "rows": rows, "cols": cols, "offset": offset,
            })
            offset += rows * cols
        flat = np.concatenate([np.asarray(a.weights, dtype=np.float32).ravel() for a in self.alignments])
        super().__init__(items=items, weights=float32_bytes(flat), sentence=sentence, hypothesis=hypothesis,
                         step=step, _kind="attention", **kwargs)

    @traitlets.validate("sentence")
    def _valid_sentence(self, proposal):
        if (proposal.value, 0) not in self._index:
            raise ConfigError(f"AttentionView: no sentence {proposal.value}; have {self._sentences()}")
        return proposal.value

    @traitlets.validate("hypothesis")
    def _valid_hypothesis(self, proposal):
        if (self.sentence, proposal.value) not in self._index:
            ranks = sorted(r for s, r in self._index if s == self.sentence)
            raise ConfigError(f"AttentionView: sentence {self.sentence} has no hypothesis {proposal.value}; "
                              f"have {ranks}")
        return proposal.value

    @traitlets.observe("sentence")
    def _sentence_changed(self, change) -> None:
        # a sentence with fewer hypotheses than the last one starts at its best
        if (change.new, self.hypothesis) not in self._index:
            self.hypothesis = 0

    def _sentences(self) -> list[int]:
        return sorted({s for s, _ in self._index})

    @traitlets.validate("step")
    def _valid_step(self, proposal):
        if proposal.value is not None and proposal.value < 0:
            raise ConfigError(f"AttentionView: step must be >= 0 or None, got {proposal.value}")
        return proposal.value

    @property
    def current(self) -> Alignment:
        """The alignment selected by ``sentence`` and ``hypothesis``."""
        return self.alignments[self._index[(self.sentence, self.hypothesis)]]

    def heatmap(self) -> Heatmap:
        a = self.current
        title = f"sentence {a.sentence + 1}, hypothesis {a.rank + 1}"
        if a.score is not None:
            title += f", score {a.score:.3f}"
        return Heatmap(values=a.weights, row_labels=list(a.target), col_labels=list(a.source), cmap="sequential",
                       vmin=0.0, vmax=1.0, title=title, rows_shown=self.step)


def _as_tensor_rows(attention: Any) -> np.ndarray:
    """A hypothesis' attention (Tensor or array) as a float64 array."""
    if hasattr(attention, "detach"):
        attention = attention.detach().float().cpu().numpy()
    return np.asarray(attention, dtype=np.float64)


def alignment_from_hypothesis(hyp: Any, source: Sequence[str] | None, *, sentence: int = 0, rank: int = 0,
                              source_eos: str | None = EOS, target_eos: str = EOS) -> Alignment:
    """An :class:`Alignment` from a search hypothesis (``tokens``, ``score``, ``attention``).

    ``source``: the source tokens (None: positions are labelled 1, 2, ...); ``source_eos`` is
    appended when the attention has a column for it (the model appends ``</s>`` to every
    source).  Columns past the source are the batch's padding and are dropped.  A target row
    past the tokens is the step that produced ``</s>`` and is labelled ``target_eos``.
    """
    if getattr(hyp, "attention", None) is None:
        raise ConfigError(
            f"sentence {sentence}, hypothesis {rank} carries no attention; translate with return_attention=True"
        )
    weights = _as_tensor_rows(hyp.attention)
    if weights.ndim != 2:
        raise DataError(f"sentence {sentence}, hypothesis {rank}: attention must be 2-d, got shape {weights.shape}")
    rows, cols = weights.shape
    target = [str(t) for t in hyp.tokens]
    if rows == len(target) + 1:
        target.append(target_eos)
    elif rows != len(target):
        raise DataError(f"sentence {sentence}, hypothesis {rank}: {len(target)} tokens but {rows} attention rows")
    if source is None:
        labels = [str(i + 1) for i in range(cols)]
    else:
        labels = [str(t) for t in source]
        if source_eos is not None and len(labels) < cols:
            labels.append(source_eos)
        if len(labels) > cols:
            raise DataError(
                f"sentence {sentence}: {len(labels)} source tokens but the attention has only {cols} columns"
            )
    score = getattr(hyp, "score", None)
    return Alignment(source=tuple(labels), target=tuple(target), weights=weights[:, : len(labels)],
                     sentence=sentence, rank=rank, score=None if score is None else float(score))


def _source_tokens(source: Any, tokenizer: Any) -> list[str] | None:
    if source is None:
        return None
    if isinstance(source, str):
        return get_tokenizer(tokenizer).tokenize(source)
    return [str(t) for t in source]


def show_attention(hypotheses: Any, sources: Any = None, *, tokenizer: Any = "whitespace",
                   source_eos: str | None = EOS, target_eos: str = EOS, **view_options: Any) -> AttentionView:
    """An :class:`AttentionView` of search hypotheses.

    ``hypotheses``: what ``model.translate(..., return_attention=True)`` returns (one list of
    hypotheses per input, best first), or one input's list, or a single hypothesis.
    ``sources``: with a nested list, one source per input; otherwise the one source.  A
    source is a string (split with ``tokenizer``, a registry name or object) or a token list;
    None labels the source positions by number (or uses ``hyp.source`` where a hypothesis
    carries its source tokens).
    """
    if hasattr(hypotheses, "tokens"):
        nested, sources = [[hypotheses]], [sources]
    elif hypotheses and all(hasattr(h, "tokens") for h in hypotheses):
        nested, sources = [list(hypotheses)], [sources]
    else:
        nested = [list(hs) for hs in hypotheses]
        sources = [None] * len(nested) if sources is None else list(sources)
    if len(sources) != len(nested):
        raise ConfigError(f"show_attention: {len(nested)} inputs' hypotheses but {len(sources)} sources")
    alignments = [
        alignment_from_hypothesis(
            hyp, _source_tokens(src if src is not None else getattr(hyp, "source", None), tokenizer),
            sentence=b, rank=r, source_eos=source_eos, target_eos=target_eos,
        )
        for b, (hyps, src) in enumerate(zip(nested, sources))
        for r, hyp in enumerate(hyps)
    ]
    return AttentionView(alignments, **view_options)


def show_model_attention(model: Any, inputs: Any, *, beam_size: int = 1, n_best: int = 1,
                         view_options: dict[str, Any] | None = None, **translate_options: Any) -> AttentionView:
    """Translate ``inputs`` with a :class:`~seqlearn.Seq2Seq` model and show the attention of
    every hypothesis (``n_best`` per input).

    ``inputs``: a sentence or a list of sentences (strings, split with the model's source
    tokenizer, or token lists).  ``translate_options`` go to ``model.translate``.  Source
    tokens are labelled as written, also those the model reads as ``<unk>``.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    sources = [model.src_tokenizer.tokenize(x) if isinstance(x, str) else [str(t) for t in x] for x in inputs]
    hypotheses = model.translate(sources, beam_size=beam_size, n_best=n_best, return_attention=True,
                                 **translate_options)
    eos = model.src_vocab.itos[model.src_vocab.eos_index]
    return show_attention(hypotheses, sources, source_eos=eos, target_eos=eos, **(view_options or {}))


def hypothesis_mimebundle(hyp: Any, **kwargs: Any) -> tuple[dict, dict] | dict:
    """The display of a hypothesis: its attention view, or plain text when it has no attention.

    For ``Hypothesis._repr_mimebundle_`` (``seqlearn.search``).
    """
    if getattr(hyp, "attention", None) is None:
        return {"text/plain": repr(hyp)}
    data, metadata = show_attention(hyp)._repr_mimebundle_(**kwargs)
    data["text/plain"] = repr(hyp)
    return data, metadata
