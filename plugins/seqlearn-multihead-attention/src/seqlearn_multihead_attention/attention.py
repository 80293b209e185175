"""Multi-head additive attention: ``heads`` Bahdanau attentions side by side.

Head ``h`` scores source position ``j`` as in Bahdanau et al. (2014), in its own
``attention_size / heads``-dimensional subspace, and normalizes over the source on its own::

    e_hj = v_h · tanh(W_h q + U_h k_j)        a_h = softmax_j(e_hj)   (padding excluded)
    c_h  = Σ_j a_hj m_j                        c   = W_o [c_1; ...; c_H]

so heads can look at different source words at one step (say, the units and the tens of
a number); the output projection ``W_o`` mixes their contexts back to ``memory_size``
(per-head value projections folded into ``W_o``: ``Σ_j a_hj V_h m_j = V_h c_h``).  The
weights it reports are the heads' average -- rows still sum to 1 and give padding 0 --
which is what beam search's coverage penalty and the attention views read.
"""
from __future__ import annotations

import torch
from seqlearn import registry
from seqlearn.attention import Attention
from seqlearn.errors import ConfigError
from torch import nn


@registry.attentions.register("multihead")
class MultiHeadAdditiveAttention(Attention):
    """``heads`` additive heads (default 4) of ``attention_size // heads`` units each
    (``attention_size`` defaults to ``query_size`` and must divide by ``heads``).

    ``W_o`` starts as ``[I/H, ..., I/H]``: the context then is the memory averaged by the
    reported (head-averaged) weights, as in single-head attention, until training moves it.
    """

    def __init__(self, query_size: int, memory_size: int, heads: int = 4, attention_size: int | None = None):
        super().__init__(query_size, memory_size)
        size = attention_size or query_size
        if heads < 1 or size % heads:
            raise ConfigError(f"multihead attention: attention_size {size} must split into heads={heads} equal parts")
        self.heads = heads
        self.head_size = size // heads
        self.query_layer = nn.Linear(query_size, size, bias=False)
        self.key_layer = nn.Linear(memory_size, size)
        self.energy = nn.Parameter(torch.empty(heads, self.head_size))
        nn.init.uniform_(self.energy, -self.head_size**-0.5, self.head_size**-0.5)
        self.output = nn.Linear(heads * memory_size, memory_size, bias=False)
        with torch.no_grad():
            self.output.weight.copy_(torch.eye(memory_size).repeat(1, heads) / heads)

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """``U k`` for every head at once, once per batch: ``(batch, src_len, attention_size)``."""
        return self.key_layer(memory)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Scores of every head: ``(batch, [steps,] heads, src_len)``."""
        q = self.query_layer(query).unflatten(-1, (self.heads, self.head_size)).unsqueeze(-3)  # (b, [T,] 1, H, d)
        k = keys.unflatten(-1, (self.heads, self.head_size))  # (b, S, H, d)
        if query.dim() == 3:
            k = k.unsqueeze(1)  # against every step
        return (torch.tanh(q + k) * self.energy).sum(-1).transpose(-1, -2)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``context`` ``(batch, [steps,] memory_size)`` and the head-averaged ``weights``
        ``(batch, [steps,] src_len)``; see the module docstring."""
        scores = self.score(query, keys)  # (b, [T,] H, S)
        real = mask.view(mask.size(0), *[1] * (scores.dim() - 2), mask.size(1))
        # the most negative finite value, not -inf, as seqlearn's Attention does: padding gets
        # exactly 0 and a row without real tokens cannot turn into NaN
        weights = torch.softmax(scores.masked_fill(~real, torch.finfo(scores.dtype).min), dim=-1)
        # every head's context in one batched product: (b, [T *] H, S) @ (b, S, M)
        contexts = torch.bmm(weights.flatten(1, -2), memory).unflatten(1, weights.shape[1:-1])
        return self.output(contexts.flatten(-2)), weights.mean(-2)

    def extra_repr(self) -> str:
        return f"{self.query_size}, {self.memory_size}, heads={self.heads}, head_size={self.head_size}"
