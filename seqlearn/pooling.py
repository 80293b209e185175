"""Poolings: the per-token states of a sequence to one vector, for sequence classifiers.

The pooling contract
--------------------
A pooling is an ``nn.Module`` registered in :data:`seqlearn.registry.poolings` and built
as ``Pooling(input_size, directions=1, **options)``:

* ``input_size``: width of the states; ``directions``: 1 for a forward RNN, 2 for a
  BiRNN whose states are ``[forward; backward]`` halves (as :class:`~seqlearn.encoder.RNNEncoder`
  concatenates them);
* ``output_size``: width of the pooled vector;
* ``forward(states, mask) -> pooled``: ``states`` ``(batch, len, input_size)``, ``mask``
  ``(batch, len)`` bool, True on real tokens -- contiguous from position 0, at least one
  per row.  Returns ``(batch, output_size)``.  Padding never reaches the result:
  whatever the padded positions hold, the output is the same.

Built-ins (all with ``output_size == input_size``):

* ``last``: the state after reading the whole sequence.  For the forward direction that
  is the state at the last real token; for the backward direction of a BiRNN it is the
  state at the *first* token (the backward RNN reads right to left and ends there).  So
  for a BiRNN this is ``[h_fwd(last token); h_bwd(first token)]``, the encoder's final
  state -- not the state at the last position of both halves, where the backward RNN has
  read a single token.
* ``mean``: the average of the states of the real tokens.
* ``max``: the element-wise maximum over the real tokens.
* ``attention``: a weighted sum with weights ``softmax_t(v . tanh(W h_t + b))`` over the
  real tokens (Yang et al. 2016's word attention); ``attention_size`` (default
  ``input_size``) is the width of ``W``.  :meth:`AttentionPooling.weights` gives the
  weights, to look at what the classifier attends to.

A plugin pooling::

    @registry.poolings.register("first")
    class FirstPooling(Pooling):
        def forward(self, states, mask):
            return states[:, 0]
"""
from __future__ import annotations

import torch
from torch import nn

from . import registry
from .errors import ConfigError


class Pooling(nn.Module):
    """Base class of poolings; see the module docstring for the contract."""

    def __init__(self, input_size: int, directions: int = 1):
        super().__init__()
        if directions not in (1, 2):
            raise ConfigError(f"pooling: directions must be 1 or 2, got {directions}")
        if input_size % directions:
            raise ConfigError(f"pooling: input_size {input_size} does not split into {directions} directions")
        self.input_size = input_size
        self.directions = directions
        self.output_size = input_size

    def extra_repr(self) -> str:
        return f"{self.input_size}, directions={self.directions}"


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """Position ``(batch,)`` of the last True of each row of ``mask`` ``(batch, len)``."""
    positions = torch.arange(1, mask.size(1) + 1, device=mask.device)
    return (positions * mask).argmax(1)


@registry.poolings.register("last")
class LastPooling(Pooling):
    """Forward state at the last real token; backward state (BiRNN) at the first token."""

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # gather, not states[rows, index]: the ONNX exporter cannot translate that advanced indexing
        index = _last_index(mask).view(-1, 1, 1).expand(-1, 1, states.size(2))
        forward = states.gather(1, index).squeeze(1)
        if self.directions == 1:
            return forward
        half = self.input_size // 2
        return torch.cat([forward[:, :half], states[:, 0, half:]], -1)


@registry.poolings.register("mean")
class MeanPooling(Pooling):
    """Average of the states of the real tokens."""

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(states.dtype).unsqueeze(-1)
        # where, not a product: padding holding inf or nan must not leak in
        total = torch.where(mask.unsqueeze(-1), states, 0.0).sum(1)
        return total / weights.sum(1).clamp(min=1.0)


@registry.poolings.register("max")
class MaxPooling(Pooling):
    """Element-wise maximum over the real tokens."""

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)


@registry.poolings.register("attention")
class AttentionPooling(Pooling):
    """Additive self-attention: ``sum_t a_t h_t`` with ``a = softmax_t(v . tanh(W h_t + b))``
    over the real tokens."""

    def __init__(self, input_size: int, directions: int = 1, attention_size: int | None = None):
        super().__init__(input_size, directions)
        self.attention_size = attention_size or input_size
        self.project = nn.Linear(input_size, self.attention_size)
        self.score = nn.Linear(self.attention_size, 1, bias=False)

    def weights(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(batch, len)``: zero on padding, each row sums to 1."""
        scores = self.score(torch.tanh(self.project(states))).squeeze(-1)
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = self.weights(states, mask)
        return torch.where(mask.unsqueeze(-1), states, 0.0).mul(weights.unsqueeze(-1)).sum(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, attention_size={self.attention_size}"

