"""Per-token activations of recurrent cells and encoders, gates included.

Fused kernels return only the outputs, so the gates are recomputed here from the cells'
own parameters, laid out as in ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (and seqlearn's built-in
cells, which share that layout)::

    LSTM  rows i, f, g, o:  i = σ(.), f = σ(.), g = tanh(.), o = σ(.)
          c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
    GRU   rows r, z, n:     r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r * h_n)
          h_t = (1 - z) * n + z * h_{t-1}
    RNN   h_t = tanh or relu(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

Any other cell (a plugin) is stepped: it contributes its outputs, and the named values of
its optional ``activations(x, state) -> {name: (batch, hidden_size)}`` method -- the state
before the step in, say ``{"forget gate": f, "candidate": n}`` out (a name ending in
``gate`` is drawn on the (0, 1) scale).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: names of the series each cell kind yields, in order
SERIES: dict[str, tuple[str, ...]] = {
    "LSTM": ("hidden", "cell", "input gate", "forget gate", "output gate", "candidate"),
    "GRU": ("hidden", "reset gate", "update gate", "candidate"),
    "RNN_TANH": ("hidden",),
    "RNN_RELU": ("hidden",),
}

_TORCH_CELLS = {nn.LSTMCell: "LSTM", nn.GRUCell: "GRU"}


def cell_kind(cell: nn.Module) -> str | None:
    """``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"`` for cells with the fused
    parameter layout (seqlearn's built-ins, ``torch.nn.*Cell``), None for any other cell."""
    mode = getattr(cell, "fused_mode", None)
    if mode in SERIES:
        return mode
    if isinstance(cell, nn.RNNCell):
        return "RNN_TANH" if cell.nonlinearity == "tanh" else "RNN_RELU"
    return next((kind for cls, kind in _TORCH_CELLS.items() if isinstance(cell, cls)), None)


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x @ weight.t() if bias is None else x @ weight.t() + bias


@torch.no_grad()
def cell_activations(cell: nn.Module, inputs: torch.Tensor, state: Any = None) -> dict[str, torch.Tensor]:
    """Step ``cell`` over one sequence ``inputs`` ``(len, input_size)`` from ``state``
    (None: zeros, or the cell's ``init_state``) and record every step.

    Returns ``{series name: (len, hidden_size)}`` with the names of :data:`SERIES` for the
    built-in kinds (gates after their nonlinearity); for other cells ``"hidden"`` and the
    names their ``activations`` method gives (see the module docstring).
    """
    kind = cell_kind(cell)
    length, hidden = inputs.size(0), cell.hidden_size
    if kind is None:
        s = cell.init_state(1, inputs.device, inputs.dtype) if state is None else state
        steps: dict[str, list[torch.Tensor]] = {"hidden": []}
        named = getattr(cell, "activations", None)
        for t in range(length):
            x = inputs[t : t + 1]
            for name, value in (named(x, s) if named is not None else {}).items():
                steps.setdefault(name, []).append(value)
            out, s = cell(x, s)
            steps["hidden"].append(out)
        return {name: torch.cat(values, 0) for name, values in steps.items()}

    # every input projection at once; only the recurrent part is a loop
    x_proj = _affine(inputs, cell.weight_ih, cell.bias_ih)
    zeros = inputs.new_zeros(hidden)
    if kind == "LSTM":
        h, c = (zeros, zeros) if state is None else (state[0].reshape(-1), state[1].reshape(-1))
    else:
        h = zeros if state is None else state.reshape(-1)
    record: dict[str, list[torch.Tensor]] = {name: [] for name in SERIES[kind]}
    for t in range(length):
        h_proj = _affine(h, cell.weight_hh, cell.bias_hh)
        if kind == "LSTM":
            i, f, g, o = (x_proj[t] + h_proj).chunk(4)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            steps = (h, c, i, f, o, g)
        elif kind == "GRU":
            x_r, x_z, x_n = x_proj[t].chunk(3)
            h_r, h_z, h_n = h_proj.chunk(3)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = (1 - z) * n + z * h
            steps = (h, r, z, n)
        else:
            pre = x_proj[t] + h_proj
            h = torch.tanh(pre) if kind == "RNN_TANH" else torch.relu(pre)
            steps = (h,)
        for name, value in zip(SERIES[kind], steps):
            record[name].append(value)
    return {name: torch.stack(values, 0) for name, values in record.items()}


@torch.no_grad()
def encoder_activations(encoder: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Activations of every layer and direction of an :class:`~seqlearn.encoder.RNNEncoder`
    over one sequence ``inputs`` ``(len, input_size)`` (embedded tokens, no padding).

    Names read ``"layer 2 ← forget gate"`` (layer shown when there are several, arrow when
    bidirectional); each value is ``(len, hidden_size)``.  The backward direction reads the
    sequence right to left, but its rows are in token order like the forward ones.
    Dropout is not applied (inference view).
    """
    layers = encoder.layers
    series: dict[str, torch.Tensor] = {}
    x = inputs
    for number, layer in enumerate(layers, start=1):
        outputs = []
        for direction, cell in enumerate(layer.cells):
            backward = direction == 1
            acts = cell_activations(cell, x.flip(0) if backward else x)
            if backward:
                acts = {name: value.flip(0) for name, value in acts.items()}
            prefix = " ".join(
                part for part in (f"layer {number}" if len(layers) > 1 else "",
                                  ("←" if backward else "→") if len(layer.cells) > 1 else "") if part
            )
            series.update({f"{prefix} {name}".strip(): value for name, value in acts.items()})
            outputs.append(acts["hidden"])
        x = torch.cat(outputs, -1)
    return series
