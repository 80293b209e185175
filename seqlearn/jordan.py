"""Step-wise recurrence: the Jordan network, and one time step through a stack of cells.

A Jordan network (Jordan 1986) feeds the network's previous *output* back as context,
where an Elman network feeds back its hidden state.  With any registered cell::

    s_t = decay * s_{t-1} + y_{t-1}                 (s_1 = 0, y_0 = 0)
    h_t = cell([x_t ; s_t], h_{t-1})                 (the bottom layer; layers above as usual)
    y_t = readout(h_t)

``y_t`` is what the output units emit: their activation after the output nonlinearity
(the seed texts' ``y_t = sigma_y(W_y h_t + b_y)``) -- for a classifier, the class
distribution (softmax) or the per-label probabilities (sigmoid) of the prefix read so far.
``decay`` is Jordan's self-connection of the state units (his ``mu``): 0 feeds back just
the previous output, as in the seed texts' formula; ``0 < decay < 1`` keeps an
exponentially decaying trace of all past outputs.

The readout belongs to the model that uses the encoder (the classifier's output layer),
so it is passed to each call rather than owned here.  The output depends on the previous
step, so a Jordan network runs step by step, in one direction only.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import nn

from . import registry
from .cells import State, map_state
from .errors import ConfigError

Readout = Callable[[torch.Tensor], torch.Tensor]


def step_cells(
    cells: Sequence[nn.Module], x: torch.Tensor, states: Sequence[State], dropout_masks: Sequence[torch.Tensor] = ()
) -> tuple[torch.Tensor, list[State]]:
    """One time step up a stack of unidirectional cells.

    ``x`` ``(batch, input)`` enters the bottom cell; each cell's output is the next one's
    input, multiplied by ``dropout_masks[i - 1]`` ``(batch, hidden)`` before cell ``i`` when
    masks are given (variational dropout: the same mask at every step).  Returns the top
    cell's output ``(batch, hidden)`` and the new state of every cell.
    """
    new_states = []
    for i, (cell, state) in enumerate(zip(cells, states)):
        if i > 0 and dropout_masks:
            x = x * dropout_masks[i - 1]
        x, state = cell(x, state)
        new_states.append(state)
    return x, new_states


class JordanState(NamedTuple):
    """The state of a :class:`JordanEncoder`: each layer's cell state, and the context
    ``s_t`` ``(batch, feedback_size)`` that enters the bottom layer at the next step."""

    layers: list[State]
    context: torch.Tensor


class JordanEncoder(nn.Module):
    """Forward Jordan network over ``num_layers`` stacked cells of the registered ``cell``.

    The bottom cell reads ``[x_t ; s_t]`` (``input_size + feedback_size`` wide); the
    readout given to :meth:`step` and :meth:`forward` maps the top layer's output
    ``(batch, hidden_size)`` to ``y_t`` ``(batch, feedback_size)``.  ``dropout``: variational,
    between layers.  See the module docstring for the recurrence.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        feedback_size: int,
        cell: str = "rnn",
        num_layers: int = 1,
        dropout: float = 0.0,
        decay: float = 0.0,
        cell_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"Jordan decay must be in [0, 1), got {decay}")
        self.hidden_size = hidden_size
        self.feedback_size = feedback_size
        self.dropout = dropout
        self.decay = decay
        self.cells = nn.ModuleList(
            registry.cells.build(cell, input_size + feedback_size if i == 0 else hidden_size, hidden_size,
                                 **(cell_options or {}))
            for i in range(num_layers)
        )  # fmt: skip

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> JordanState:
        """Zero cell states and zero context (no output yet)."""
        layers = [cell.init_state(batch_size, device, dtype) for cell in self.cells]
        return JordanState(layers, torch.zeros(batch_size, self.feedback_size, device=device, dtype=dtype))

    def step(
        self, x: torch.Tensor, state: JordanState, readout: Readout, dropout_masks: Sequence[torch.Tensor] = ()
    ) -> tuple[torch.Tensor, JordanState]:
        """One step: ``x`` ``(batch, input_size)`` to the top output ``h_t`` ``(batch, hidden)``
        and the state with the context for step ``t + 1``."""
        h, layers = step_cells(self.cells, torch.cat([x, state.context], -1), state.layers, dropout_masks)
        return h, JordanState(layers, self.decay * state.context + readout(h))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, readout: Readout) -> tuple[torch.Tensor, JordanState]:
        """Run over ``x`` ``(batch, len, input_size)`` with true ``lengths`` ``(batch,)``.

        Returns the top layer's outputs ``(batch, len, hidden)`` (zero at padding) and the
        state after each sequence's last real token (a padded step changes nothing).
        """
        batch, length = x.shape[:2]
        state = self.init_state(batch, x.device, x.dtype)
        masks = []
        if self.training and self.dropout > 0:
            masks = [x.new_empty(batch, self.hidden_size).bernoulli_(1.0 - self.dropout) / (1.0 - self.dropout)
                     for _ in self.cells[1:]]  # fmt: skip
        real = (torch.arange(length, device=x.device)[None, :] < lengths.to(x.device)[:, None]).unsqueeze(-1)
        outputs = []
        for t, x_t in enumerate(x.unbind(1)):
            h, new = self.step(x_t, state, readout, masks)
            m = real[:, t]
            keep = lambda n, o: torch.where(m, n, o)  # noqa: E731 -- padded steps leave the state alone
            state = JordanState([map_state(keep, n, o) for n, o in zip(new.layers, state.layers)],
                                keep(new.context, state.context))  # fmt: skip
            outputs.append(h.masked_fill(~m, 0.0))
        return torch.stack(outputs, 1), state
