"""Attention over encoder memory: a base class that masks and normalizes, and score functions.

An attention is built as ``Attention(query_size, memory_size, **options)`` and called as
``attention(query, keys, memory, mask) -> (context, weights)``:

* ``query`` ``(batch, query_size)`` for one decoder step, or ``(batch, steps, query_size)``
  for many steps at once (the fused Luong decoder attends for a whole target in one call);
* ``keys = attention.project_keys(memory)``, computed ONCE per batch by the caller and
  passed explicitly (the module caches nothing, so it can serve many batches, beams and
  threads);
* ``memory`` ``(batch, src_len, memory_size)``: the encoder outputs, averaged into the context;
* ``mask`` ``(batch, src_len)`` bool, True on real tokens: padding gets exactly zero weight.

It returns ``context`` ``(batch, [steps,] memory_size)`` and ``weights``
``(batch, [steps,] src_len)``, rows summing to 1.  The base class checks these shapes
(and what :meth:`Attention.score` returns): a mismatch raises
:class:`~seqlearn.errors.ShapeError` naming the attention (``attention 'scaled-dot'
(ScaledDotAttention)``), the argument and both shapes.

A variant writes only :meth:`Attention.score` (and :meth:`Attention.project_keys` if
the keys differ from the memory), so a plugin is a few lines::

    @registry.attentions.register("scaled-dot")
    class ScaledDotAttention(Attention):
        def score(self, query, keys):
            return dot_scores(query, keys) / self.query_size ** 0.5
"""
from __future__ import annotations

import torch
from torch import nn

from . import registry
from .errors import ConfigError, ShapeError


def dot_scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``query · key`` for every source position: ``(batch, [steps,] src_len)``."""
    if query.dim() == 2:
        return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)
    return torch.bmm(query, keys.transpose(1, 2))


class Attention(nn.Module):
    """Base class: owns masking, the softmax and the weighted sum; see the module docstring."""

    def __init__(self, query_size: int, memory_size: int):
        super().__init__()
        self.query_size = query_size
        self.memory_size = memory_size

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """Keys for :meth:`score`, computed once per batch: ``(batch, src_len, key_size)``."""
        return memory

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Unnormalized scores ``(batch, [steps,] src_len)``."""
        raise NotImplementedError

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_shapes(query, keys, memory, mask)
        scores = self.score(query, keys)
        expected = (*query.shape[:-1], memory.shape[1])
        if not isinstance(scores, torch.Tensor) or scores.shape != expected:
            raise self._shape_error("the scores score() returned", scores, str(expected))
        if scores.dim() == 3:
            mask = mask.unsqueeze(1)
        # the most negative finite value, not -inf: exp underflows to exactly 0 for padding,
        # and a row with no real token cannot turn into NaN
        weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)
        if query.dim() == 2:
            context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        else:
            context = torch.bmm(weights, memory)
        return context, weights


    def _check_shapes(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> None:
        if not isinstance(query, torch.Tensor) or query.dim() not in (2, 3) or query.shape[-1] != self.query_size:
            raise self._shape_error("query", query, f"(batch, {self.query_size}) or (batch, steps, {self.query_size})")
        batch = query.shape[0]
        if not isinstance(memory, torch.Tensor) or memory.dim() != 3 or memory.shape[0] != batch \
                or memory.shape[2] != self.memory_size:
            raise self._shape_error("memory", memory, f"({batch}, src_len, {self.memory_size})")
        if not isinstance(keys, torch.Tensor) or keys.dim() != 3 or keys.shape[:2] != memory.shape[:2]:
            raise self._shape_error("keys", keys, f"({batch}, {memory.shape[1]}, key_size) (from project_keys)")
        if not isinstance(mask, torch.Tensor) or mask.shape != memory.shape[:2] or mask.dtype != torch.bool:
            raise self._shape_error("mask", mask, f"a bool tensor {tuple(memory.shape[:2])}")

    def _shape_error(self, what: str, value: object, expected: str) -> ShapeError:
        return ShapeError.of(registry.describe(self, "attentions"), what, value, expected)


@registry.attentions.register("bahdanau")
class BahdanauAttention(Attention):
    """Additive attention (Bahdanau et al. 2014): ``v · tanh(W q + U k)``.

    ``U k`` does not depend on the decoder step, so :meth:`project_keys` computes it once
    per batch.  ``attention_size`` defaults to ``query_size``.  ``key_bias=False`` drops the
    bias of ``U`` (JoeyNMT's form: no bias anywhere in the score).
    """

    def __init__(self, query_size: int, memory_size: int, attention_size: int | None = None, key_bias: bool = True):
        super().__init__(query_size, memory_size)
        size = attention_size or query_size
        self.query_layer = nn.Linear(query_size, size, bias=False)
        self.key_layer = nn.Linear(memory_size, size, bias=key_bias)
        self.energy = nn.Parameter(torch.empty(size))
        nn.init.uniform_(self.energy, -size**-0.5, size**-0.5)

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_layer(memory)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if query.dim() == 3:
            keys = keys.unsqueeze(1)  # (batch, 1, src_len, size) against every step
        # tanh in place: one (batch, [steps,] src_len, size) tensor instead of two
        return (self.query_layer(query).unsqueeze(-2) + keys).tanh_() @ self.energy


@registry.attentions.register("luong-dot")
class LuongDotAttention(Attention):
    """Luong et al. 2015 ``dot``: ``q · k``; needs ``query_size == memory_size``."""

    def __init__(self, query_size: int, memory_size: int):
        super().__init__(query_size, memory_size)
        if type(self) is LuongDotAttention and query_size != memory_size:
            raise ConfigError(
                f"luong-dot attention needs equal query and memory sizes, got {query_size} and {memory_size}; "
                "use luong-general"
            )

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return dot_scores(query, keys)


@registry.attentions.register("luong-general")
class LuongGeneralAttention(LuongDotAttention):
    """Luong et al. 2015 ``general``: ``q · W k``, with ``W k`` projected once per batch."""

    def __init__(self, query_size: int, memory_size: int):
        super().__init__(query_size, memory_size)
        self.key_layer = nn.Linear(memory_size, query_size, bias=False)

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_layer(memory)


@registry.attentions.register("luong-concat")
class LuongConcatAttention(BahdanauAttention):
    """Luong et al. 2015 ``concat``: ``v · tanh(W_a [q; k])``.  Splitting ``W_a`` into its
    query and key columns makes it the additive score, so it shares that implementation;
    the decoders differ in *which* state queries it."""
