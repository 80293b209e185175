"""The two ways a seqlearn model is driven one token at a time, as ``typing.Protocol``\\ s.

:class:`SearchModel` -- what the decoding strategies of :mod:`seqlearn.search` need
(:class:`~seqlearn.Seq2Seq`, :class:`~seqlearn.language_model.LanguageModel`, and any
object with these two methods, a plugin's or a test's)::

    state = model.start(source)                                  # dict of batch-first tensors
    log_probs, state, attn = model.search_step(prev_tokens, state)
    #  prev_tokens (N,) long -> log_probs (N, V) float32, the new state, attn (N, src_len) or None

:func:`decode` runs a strategy through it.  The state's tensors all have the N rows in dim 0
(strategies reorder them with ``index_select(0, ...)``; see :mod:`seqlearn.search`).

:class:`StreamingModel` -- reading a stream a token at a time with constant memory
(:class:`~seqlearn.language_model.LanguageModel`, a causal
:class:`~seqlearn.Tagger`, a forward :class:`~seqlearn.classifier.SequenceClassifier`)::

    state = model.init_state(batch_size)       # before the first token of batch_size streams
    out, state = model.step(token, state)      # the model's output after this token, the new state

``out`` is what the model predicts from the prefix read so far: the next token's
log-probabilities (language model), the token's tag probabilities (tagger), the label
probabilities (classifier).

Both protocols are ``runtime_checkable``: ``isinstance(model, SearchModel)`` checks that the
methods exist (not their signatures).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch

from .search import Hypothesis

__all__ = ["SearchModel", "StreamingModel", "decode"]

SearchState = dict[str, Any]


@runtime_checkable
class SearchModel(Protocol):
    """A model the strategies of :mod:`seqlearn.search` can decode (see the module docstring)."""

    def start(self, source: Any) -> SearchState:
        """The state before the first decoding step for a batch of ``source``\\ s."""
        ...

    def search_step(
        self, prev_tokens: torch.Tensor, state: SearchState
    ) -> tuple[torch.Tensor, SearchState, torch.Tensor | None]:
        """Log-probabilities ``(N, V)`` of the token after ``prev_tokens`` ``(N,)``, the new
        state and the attention ``(N, src_len)`` (None without attention)."""
        ...


@runtime_checkable
class StreamingModel(Protocol):
    """A model that reads streams one token at a time (see the module docstring)."""

    def init_state(self, batch_size: int = 1) -> Any:
        """The state before the first token of ``batch_size`` parallel streams."""
        ...

    def step(self, token: Any, state: Any) -> tuple[torch.Tensor, Any]:
        """The output after reading ``token`` (one per stream) and the new state."""
        ...


def decode(model: SearchModel, strategy: Callable[..., list[list[Hypothesis]]], source: Any,
           **options: Any) -> list[list[Hypothesis]]:  # fmt: skip
    """``strategy`` (:func:`~seqlearn.search.greedy_search`, :func:`~seqlearn.search.beam_search`,
    :func:`~seqlearn.search.sample`, :func:`~seqlearn.search.most_probable`) run over
    ``model.search_step`` from ``model.start(source)``; ``options`` (``bos_index``,
    ``eos_index``, ``max_length``, ``beam_size``...) go to the strategy.  Hypotheses hold
    token ids::

        decode(model, search.beam_search, src, bos_index=2, eos_index=3, max_length=20, beam_size=5)
    """
    return strategy(model.search_step, model.start(source), **options)
