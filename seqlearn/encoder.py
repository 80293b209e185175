"""Recurrent layers over whole sequences, and the stacked (bi)directional encoder.

:class:`RNNLayer` runs one layer of any registered cell (see :mod:`seqlearn.cells`)
over padded sequences in one or both directions.  Built-in cells run through PyTorch's
fused ``nn.GRU``/``nn.LSTM``/``nn.RNN`` kernels (packed sequences, cuDNN on a GPU) whose
parameters *are* the cells' parameters; any other cell runs through a step loop that
masks padded steps, so both give the same outputs, final states and gradients.

:class:`RNNEncoder` stacks such layers with variational dropout between them.  It is
the encoder of :class:`~seqlearn.seq2seq.Seq2Seq` and of the tagger, language model
and classifier.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import registry
from .cells import State, cell_output, map_state, state_tensors
from .errors import ConfigError, DataError


# fused_mode of a built-in cell -> the PyTorch module that runs it over whole sequences
_FUSED_MODULES: dict[str, tuple[type[nn.RNNBase], dict[str, Any]]] = {
    "GRU": (nn.GRU, {}),
    "LSTM": (nn.LSTM, {}),
    "RNN_TANH": (nn.RNN, {"nonlinearity": "tanh"}),
    "RNN_RELU": (nn.RNN, {"nonlinearity": "relu"}),
}


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, the same at
    every time step.  ``x`` is ``(batch, len, features)``."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)
    return x * mask


class RNNLayer(nn.Module):
    """One recurrent layer of a registered cell, forward or bidirectional.

    ``cells`` holds one cell per direction (``cells[1]`` reads right to left); a decoder
    steps ``cells[0]`` itself and uses :meth:`forward` for whole teacher-forced targets.
    Set ``use_fused = False`` to force the step loop even for built-in cells.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        bidirectional: bool = False,
        cell_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.cells = nn.ModuleList(
            registry.cells.build(cell, input_size, hidden_size, **(cell_options or {}))
            for _ in range(2 if bidirectional else 1)
        )
        modes = {getattr(c, "fused_mode", None) for c in self.cells}
        self.fused_mode = modes.pop() if len(modes) == 1 else None
        self.use_fused = self.fused_mode is not None
        self._fused: nn.RNNBase | None = None  # built on first use; holds no parameters of its own

    @property
    def bidirectional(self) -> bool:
        return len(self.cells) == 2

    @property
    def output_size(self) -> int:
        return len(self.cells) * self.hidden_size

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state: Sequence[State] | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Run the layer over ``x`` ``(batch, len, input)``.

        ``lengths`` ``(batch,)``: true lengths (None: every sequence is full length).
        ``state``: the initial state of each direction (None: each cell's ``init_state``).
        Returns the outputs ``(batch, len, dirs * hidden)`` -- zero at padded positions --
        and the final state, its tensors ``(batch, dirs * hidden)`` (directions concatenated,
        the backward direction's final state being the one at position 0).
        """
        if self.use_fused and self.fused_mode is not None:
            return self._run_fused(x, lengths, state)
        return self._run_loop(x, lengths, state)

    # fused kernels ----------------------------------------------------------------
    def _fused_module(self) -> nn.RNNBase:
        """PyTorch's fused RNN, pointed at the cells' own parameters (again, should a
        load with ``assign=True`` have replaced them)."""
        if self._fused is None:
            module, options = _FUSED_MODULES[self.fused_mode]
            # on the meta device: its own initialization would draw from the global RNG, so
            # that the first forward pass shifted the random stream (a resumed run would then
            # draw other dropout masks than the uninterrupted one)
            fused = module(
                self.cells[0].input_size, self.hidden_size, batch_first=True, bidirectional=self.bidirectional,
                device="meta", **options,
            )  # fmt: skip
            self.__dict__["_fused"] = fused  # not a submodule: no second copy in state_dict()
        fused = self._fused
        for suffix, cell in zip(("", "_reverse"), self.cells):
            for name, param in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), cell.flat_weights()):
                if getattr(fused, f"{name}_l0{suffix}") is not param:
                    setattr(fused, f"{name}_l0{suffix}", param)  # nn.RNNBase re-flattens on its next call
        return fused

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        # After .to(device) the parameters live elsewhere; let cuDNN pack them into one
        # contiguous buffer once, instead of copying them at every call.
        result = super()._apply(fn, recurse)
        if self._fused is not None:
            self._fused_module().flatten_parameters()
        return result

    def _run_fused(
        self, x: torch.Tensor, lengths: torch.Tensor | None, state: Sequence[State] | None
    ) -> tuple[torch.Tensor, State]:
        fused = self._fused_module()
        hx = None if state is None else map_state(lambda *parts: torch.stack(parts, 0), *state)
        if lengths is None:
            out, final = fused(x, hx)
        else:
            lengths_cpu = lengths.cpu()
            if len(lengths_cpu) and int(lengths_cpu.min()) < 1:
                raise DataError("a batch holds an empty sequence; every sequence needs at least one token")
            packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            out, final = fused(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return out, map_state(lambda t: torch.cat(t.unbind(0), -1), final)

    # generic step loop --------------------------------------------------------------
    def _run_loop(
        self, x: torch.Tensor, lengths: torch.Tensor | None, state: Sequence[State] | None
    ) -> tuple[torch.Tensor, State]:
        batch, length = x.shape[:2]
        mask = None
        if lengths is not None:
            mask = (torch.arange(length, device=x.device)[None, :] < lengths.to(x.device)[:, None]).unsqueeze(-1)
        outputs, finals = [], []
        steps_in = x.unbind(1)  # not x[:, t]: its backward would fill a full-size zero tensor per step
        for direction, cell in enumerate(self.cells):
            s = cell.init_state(batch, x.device, x.dtype) if state is None else state[direction]
            steps = range(length - 1, -1, -1) if direction == 1 else range(length)
            out: list[torch.Tensor] = [x.new_empty(0)] * length
            for t in steps:
                h, new = cell(steps_in[t], s)
                if mask is None:
                    s = new
                else:
                    # a padded step leaves the state alone: the backward direction thus
                    # starts at each sequence's own last token
                    m = mask[:, t]
                    s = map_state(lambda n, o: torch.where(m, n, o), new, s)
                    h = h.masked_fill(~m, 0.0)
                out[t] = h
            outputs.append(torch.stack(out, 1))
            finals.append(s)
        return torch.cat(outputs, -1), map_state(lambda *parts: torch.cat(parts, -1), *finals)


class RNNEncoder(nn.Module):
    """Stacked, optionally bidirectional recurrent encoder of any registered cell.

    Between layers (not after the top one) variational dropout ``dropout`` is applied.

    A unidirectional encoder also runs one token at a time for streaming inference:
    ``state = encoder.init_state(batch)`` then ``out, state = encoder.step(x_t, state)``
    gives the outputs of :meth:`forward` (in eval mode) with memory that does not grow
    with the stream.  Its state is a ``dict[str, Tensor]``, every tensor batch-first, as
    the search strategies of :mod:`seqlearn.search` expect.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        cell: str = "gru",
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        cell_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.dropout = dropout
        dirs = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            RNNLayer(cell, input_size if i == 0 else dirs * hidden_size, hidden_size, bidirectional, cell_options)
            for i in range(num_layers)
        )
        probe = self.layers[0].cells[0].init_state(1)
        self._tuple_state = not isinstance(probe, torch.Tensor)
        self._state_arity = len(state_tensors(probe))

    @property
    def output_size(self) -> int:
        """Size of the outputs and of each final-state tensor: ``dirs * hidden_size``."""
        return self.layers[0].output_size

    @property
    def use_fused(self) -> bool:
        return all(layer.use_fused for layer in self.layers)

    @use_fused.setter
    def use_fused(self, value: bool) -> None:
        for layer in self.layers:
            layer.use_fused = value and layer.fused_mode is not None

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: Sequence[State] | None = None
    ) -> tuple[torch.Tensor, list[State]]:
        """Encode ``x`` ``(batch, len, input_size)`` with true ``lengths`` ``(batch,)`` (None:
        every sequence is full length).

        ``state``: the initial state of every layer, bottom first, laid out like the final
        states returned (None: the cells' zero states) -- a language model passes the
        final states of one window as the initial states of the next.
        Returns the top layer's outputs ``(batch, len, dirs * hidden)`` (zero at padding)
        and the final state of every layer, bottom first, each tensor of it
        ``(batch, dirs * hidden)`` with the directions concatenated ``[forward; backward]``.
        """
        finals = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = locked_dropout(x, self.dropout, self.training)
            initial = None if state is None else self._directions(state[i], len(layer.cells))
            x, final = layer(x, lengths, initial)
            finals.append(final)
        return x, finals

    @staticmethod
    def _directions(state: State, dirs: int) -> list[State]:
        """A layer state with the directions concatenated, as one state per direction."""
        return [map_state(lambda t: t.chunk(dirs, -1)[d], state) for d in range(dirs)]

    # streaming ------------------------------------------------------------------------
    def pack_state(self, states: Sequence[State]) -> dict[str, torch.Tensor]:
        """Per-layer states (bottom first) as one flat dict ``hidden.<layer>.<part>``."""
        return {f"hidden.{i}.{k}": t for i, s in enumerate(states) for k, t in enumerate(state_tensors(s))}

    def unpack_state(self, state: dict[str, torch.Tensor]) -> list[State]:
        """The inverse of :meth:`pack_state` (other keys of ``state`` are ignored)."""
        layers: list[State] = []
        for i in range(len(self.layers)):
            parts = tuple(state[f"hidden.{i}.{k}"] for k in range(self._state_arity))
            layers.append(parts if self._tuple_state else parts[0])
        return layers

    def _check_streamable(self) -> None:
        if self.layers[0].bidirectional:
            raise ConfigError("streaming needs a unidirectional encoder: a backward direction reads the future")

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> dict[str, torch.Tensor]:
        """The streaming state before the first token: each cell's zero state ``(batch_size, hidden)``."""
        self._check_streamable()
        return self.pack_state([layer.cells[0].init_state(batch_size, device, dtype) for layer in self.layers])

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One time step: ``x`` ``(batch, input_size)`` -> the top layer's output
        ``(batch, hidden)`` and the new state.  No dropout: this is inference."""
        self._check_streamable()
        states = self.unpack_state(state)
        for i, layer in enumerate(self.layers):
            x, states[i] = layer.cells[0](x, states[i])
        return x, {**state, **self.pack_state(states)}

    def final_output(self, finals: list[State]) -> torch.Tensor:
        """The top layer's final output ``(batch, dirs * hidden)`` (an LSTM's ``h``, not ``c``)."""
        return cell_output(self.layers[-1].cells[0], finals[-1])
