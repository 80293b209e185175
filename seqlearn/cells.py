"""Recurrent cells behind one step interface, for built-ins and plugins alike.

The cell contract
-----------------
A cell is an ``nn.Module`` registered in :data:`seqlearn.registry.cells` and built as
``Cell(input_size, hidden_size, **options)``.  It has two attributes and one method
to write, and two with defaults in :class:`Cell`:

* ``input_size``, ``hidden_size``: ints.
* ``forward(x, state) -> (h, state)``: one time step.  ``x`` is ``(batch, input_size)``,
  ``h`` the step's output ``(batch, hidden_size)``, ``state`` the recurrent state.
* ``init_state(batch_size, device, dtype) -> state``: zeros by default.  A state is a
  ``Tensor`` or a tuple of Tensors, each ``(batch, hidden_size)``: seqlearn masks
  padded steps and reorders beams by indexing dim 0 without knowing what is inside.
* ``output(state) -> h``: which part of a state is the cell's output -- the state itself,
  or its first element (an LSTM's ``(h, c)``).

Calling a :class:`Cell` checks these shapes on the way in and out, so a tensor of the
wrong shape raises :class:`~seqlearn.errors.ShapeError` naming the cell (``cell 'mgu'
(MGUCell)``), the argument and both shapes -- not a size mismatch deep in a decoder.

So a plugin cell is a subclass of :class:`Cell` with a ``forward``::

    @registry.cells.register("mgu")
    class MGUCell(Cell):
        def __init__(self, input_size, hidden_size):
            super().__init__(input_size, hidden_size)
            self.f = nn.Linear(input_size + hidden_size, hidden_size)
            self.n = nn.Linear(input_size + hidden_size, hidden_size)

        def forward(self, x, h):
            f = torch.sigmoid(self.f(torch.cat([x, h], -1)))
            n = torch.tanh(self.n(torch.cat([x, f * h], -1)))
            h = (1 - f) * h + f * n
            return h, h

The encoder and the decoders run such a cell through a step loop.  The built-in cells
(:class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`) additionally name a ``fused_mode``
and hold their parameters laid out like one direction of one layer of ``nn.RNN``,
``nn.LSTM`` and ``nn.GRU`` (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``), so
whole sequences run through PyTorch's fused kernels (cuDNN on a GPU) with these very
parameters; the step loop gives the same results.

Initialization of the built-ins: each gate's block of ``weight_hh`` orthogonal, each
gate's block of ``weight_ih`` Xavier-uniform, biases zero except the LSTM forget gate
(``forget_bias``, default 1).
"""
from __future__ import annotations

from typing import Any, Callable, Union

import torch
from torch import nn

from . import registry
from .errors import ConfigError, ShapeError

State = Union[torch.Tensor, tuple[torch.Tensor, ...]]


def map_state(fn: Callable[..., torch.Tensor], *states: State) -> State:
    """Apply ``fn`` to the tensors of one or more states of the same structure."""
    if isinstance(states[0], torch.Tensor):
        return fn(*states)
    return tuple(fn(*parts) for parts in zip(*states))


def state_tensors(state: State) -> tuple[torch.Tensor, ...]:
    """The tensors of a state, as a tuple."""
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


class Cell(nn.Module):
    """Base class of recurrent cells; see the module docstring for the contract."""

    #: ``mode`` of PyTorch's fused RNN kernels ("GRU", "LSTM", "RNN_TANH", "RNN_RELU"),
    #: or None for a cell that only runs step by step.
    fused_mode: str | None = None

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    def init_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """The state before the first step: zeros ``(batch_size, hidden_size)``."""
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    def output(self, state: State) -> torch.Tensor:
        """The part of ``state`` that is the cell's output ``(batch, hidden_size)``."""
        return state if isinstance(state, torch.Tensor) else state[0]

    def __call__(self, x: torch.Tensor, state: State, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, State]:
        """``forward(x, state)`` with the contract's shapes checked before and after."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.input_size:
            raise self._shape_error("input x", x, f"(batch, {self.input_size})")
        batch = x.shape[0]
        self._check_state("state", state, batch)
        h, new_state = super().__call__(x, state, *args, **kwargs)
        if not isinstance(h, torch.Tensor) or h.shape != (batch, self.hidden_size):
            raise self._shape_error("the output h it returned", h, f"({batch}, {self.hidden_size})")
        self._check_state("the state it returned", new_state, batch)
        return h, new_state

    def _check_state(self, what: str, state: Any, batch: int) -> None:
        parts = (state,) if isinstance(state, torch.Tensor) else state if isinstance(state, (tuple, list)) else (state,)
        for part in parts:
            if not isinstance(part, torch.Tensor) or part.shape != (batch, self.hidden_size):
                raise self._shape_error(what, part, f"({batch}, {self.hidden_size}) (each tensor of it)")

    def _shape_error(self, what: str, value: Any, expected: str) -> ShapeError:
        return ShapeError.of(registry.describe(self, "cells"), what, value, expected + " (the cell contract: seqlearn.cells)")


def cell_output(cell: nn.Module, state: State) -> torch.Tensor:
    """``cell.output(state)``, with the documented default for cells not derived from :class:`Cell`."""
    if hasattr(cell, "output"):
        return cell.output(state)
    return state if isinstance(state, torch.Tensor) else state[0]


class _FusableCell(Cell):
    """A built-in cell: ``gates`` blocks of parameters laid out like PyTorch's fused RNNs."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        rows = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal recurrent and Xavier input weights, one gate block at a time
        (a block is what multiplies one gate's input), zero biases."""
        with torch.no_grad():
            for w_ih, w_hh in zip(self.weight_ih.chunk(self.gates), self.weight_hh.chunk(self.gates)):
                nn.init.xavier_uniform_(w_ih)
                nn.init.orthogonal_(w_hh)
            self.bias_ih.zero_()
            self.bias_hh.zero_()

    def flat_weights(self) -> list[torch.Tensor]:
        """The parameters in the order of one direction of one layer of ``nn.RNNBase``."""
        return [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


@registry.cells.register("rnn")
class RNNCell(_FusableCell):
    """Elman cell ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, ``f`` tanh or relu."""

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"rnn cell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size)
        self.nonlinearity = nonlinearity
        self.fused_mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = torch.rnn_tanh_cell if self.nonlinearity == "tanh" else torch.rnn_relu_cell
        h = step(x, state, *self.flat_weights())
        return h, h

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"


@registry.cells.register("gru")
class GRUCell(_FusableCell):
    """Gated recurrent unit (Cho et al. 2014), gates in PyTorch's order ``r, z, n``."""

    gates = 3
    fused_mode = "GRU"

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.gru_cell(x, state, *self.flat_weights())
        return h, h


@registry.cells.register("lstm")
class LSTMCell(_FusableCell):
    """Long short-term memory; gates in PyTorch's order ``i, f, g, o``; state ``(h, c)``.

    ``forget_bias`` is the forget gate's total bias at initialization (Jozefowicz et
    al. 2015 recommend 1): it is put in ``bias_ih``, ``bias_hh`` stays zero.
    """

    gates = 4
    fused_mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0):
        self.forget_bias = forget_bias
        super().__init__(input_size, hidden_size)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.bias_ih[self.hidden_size : 2 * self.hidden_size].fill_(self.forget_bias)

    def init_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, c = torch.lstm_cell(x, state, *self.flat_weights())
        return h, (h, c)
