"""A Bahdanau decoder with a coverage vector (Tu et al. 2016, "Modeling Coverage for Neural
Machine Translation"; See et al. 2017, "Get To The Point").

The coverage of source position ``j`` before step ``t`` is the attention it has received
so far, ``cov_tj = Σ_{t' < t} a_t'j``.  It enters the attention scores through the keys::

    e_tj = score(s_{t-1}, U m_j + cov_tj w)          a_t = softmax_j(e_tj)

which for additive attention (``bahdanau``, ``multihead``) is See et al.'s
``v · tanh(W s + U m_j + w cov_tj)``: the decoder can learn to turn away from words it has
translated already and towards those it has not, against repeated and dropped words.
Any registered attention works; for a dot-product one the term becomes ``cov_tj (q · w)``.

The coverage lives in the decoder state as ``state["coverage"]`` ``(batch, src_len)``,
batch-first like every other state tensor, so beam search reorders it with the beams.
(See et al.'s coverage *loss* is not included: seqlearn's decoder contract has no place
for extra loss terms.)
"""
from __future__ import annotations

from typing import Any

import torch
from seqlearn import registry
from seqlearn.cells import State
from seqlearn.decoders import BahdanauDecoder, Decoder, DecoderState
from torch import nn


@registry.decoders.register("coverage")
class CoverageDecoder(BahdanauDecoder):
    """:class:`~seqlearn.decoders.BahdanauDecoder` (previous state queries the attention,
    context into the RNN input and the deep output) whose attention also reads the coverage.

    Built with the keywords of the decoder contract (see :mod:`seqlearn.decoders`);
    ``attention`` defaults to ``bahdanau``.  ``w`` (``coverage_weight``, one entry per key
    unit) starts uniform in ``±1/sqrt(key_size)``, like the additive attention's ``v``.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # the keys' width depends on the attention chosen: ask it
        with torch.no_grad():
            key_size = self.attention.project_keys(torch.zeros(1, 1, kwargs["memory_size"])).size(-1)
        self.coverage_weight = nn.Parameter(torch.empty(key_size))
        nn.init.uniform_(self.coverage_weight, -key_size**-0.5, key_size**-0.5)

    def init_state(self, memory: torch.Tensor, mask: torch.Tensor, encoder_finals: list[State]) -> DecoderState:
        """The Bahdanau state plus ``coverage`` ``(batch, src_len)``, zero before the first step."""
        state = super().init_state(memory, mask, encoder_finals)
        state["coverage"] = memory.new_zeros(memory.shape[:2])
        return state

    def _attend(self, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor, DecoderState]:
        """Context ``(batch, memory)``, attention ``(batch, src_len)`` and the state with the
        attention added to the coverage."""
        keys = state["keys"] + state["coverage"].unsqueeze(-1) * self.coverage_weight
        context, attn = self.attention(self._top_output(state), keys, state["memory"], state["mask"])
        return context, attn, {**state, "coverage": state["coverage"] + attn}

    def step(self, emb: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        context, attn, state = self._attend(state)
        h, state = self._step_cells(torch.cat([emb, context], -1), state)
        return self._readout(h, context, emb), state, attn

    #: teacher forcing runs :meth:`step` once per target token (the base class's loop): the
    #: coverage after each step feeds the next, so the Bahdanau decoder's own loop cannot serve
    forward = Decoder.forward
