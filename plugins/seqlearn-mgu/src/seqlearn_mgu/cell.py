"""The minimal gated unit (Zhou, Wu, Zhang & Zhou 2016, "Minimal Gated Unit for Recurrent
Neural Networks"): a GRU with its reset and update gates merged into one forget gate::

    f_t = σ(W_f x_t + b_f + U_f h_{t-1})                   forget gate
    n_t = tanh(W_n x_t + b_n + U_n (f_t ⊙ h_{t-1}))        candidate
    h_t = (1 - f_t) ⊙ h_{t-1} + f_t ⊙ n_t

Two gate blocks instead of the GRU's three: a third fewer parameters per unit.
"""
from __future__ import annotations

import torch
from seqlearn import registry
from seqlearn.cells import Cell
from torch import nn


@registry.cells.register("mgu")
class MGUCell(Cell):
    """One MGU step; the state is ``h`` ``(batch, hidden_size)`` and is also the output.

    Parameters in gate blocks, as in ``nn.GRUCell``: ``weight_ih`` ``(2 * hidden,
    input)`` and ``weight_hh`` ``(2 * hidden, hidden)`` hold the rows of ``f`` then ``n``;
    ``bias`` ``(2 * hidden)`` likewise.  Initialization as seqlearn's built-in cells:
    Xavier-uniform input blocks, orthogonal recurrent blocks, zero biases.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(2 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(2 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for w_ih, w_hh in zip(self.weight_ih.chunk(2), self.weight_hh.chunk(2)):
                nn.init.xavier_uniform_(w_ih)
                nn.init.orthogonal_(w_hh)
            self.bias.zero_()

    def gates(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forget gate ``f`` and the candidate ``n`` of one step, each ``(batch, hidden)``."""
        x_f, x_n = nn.functional.linear(x, self.weight_ih, self.bias).chunk(2, -1)
        u_f, u_n = self.weight_hh.chunk(2)
        f = torch.sigmoid(x_f + h @ u_f.t())
        # the candidate reads the gated state, so its recurrent product waits for f
        n = torch.tanh(x_n + (f * h) @ u_n.t())
        return f, n

    def activations(self, x: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """The gates of one step by name, for seqlearn's hidden-state explorer
        (``Seq2Seq.show_hidden_states``), which shows them beside the hidden state."""
        f, n = self.gates(x, h)
        return {"forget gate": f, "candidate": n}

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x`` ``(batch, input_size)``, ``h`` ``(batch, hidden_size)`` -> ``(h', h')``."""
        f, n = self.gates(x, h)
        h = torch.lerp(h, n, f)  # (1 - f) * h + f * n
        return h, h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
