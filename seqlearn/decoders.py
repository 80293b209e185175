"""Recurrent decoders: Bahdanau, Luong and plain (no attention), over any registered cell.

The decoder contract
--------------------
A decoder is registered in :data:`seqlearn.registry.decoders` and built with keywords::

    Decoder(embedding_dim=, hidden_size=, memory_size=, encoder_state_size=, output_size=,
            cell="gru", num_layers=1, attention="bahdanau", dropout=0.0,
            cell_options=None, attention_options=None, bridge=True, initial_state="layers", **options)

``memory_size`` is the size of the encoder outputs, ``encoder_state_size`` that of each
tensor of an encoder layer's final state (see :class:`~seqlearn.encoder.RNNEncoder`),
``output_size`` that of the vectors the model's output layer reads.  It provides

* ``init_state(memory, mask, encoder_finals) -> state``: ``memory`` ``(batch, src_len,
  memory_size)``, ``mask`` ``(batch, src_len)`` bool, ``encoder_finals`` one final state per
  encoder layer.  ``state`` is a ``dict[str, Tensor]``, every tensor batch-first -- the
  encoder memory and projected attention keys included -- so beam search reorders it with
  ``index_select(0, ...)`` without knowing what is inside (except that the entries named in
  ``per_sentence`` are shared by a sentence's beams, so it need not copy them when it only
  reorders beams);
* ``step(emb, state) -> (output, state, attn)``: one step; ``emb`` ``(batch, embedding_dim)``
  is the embedded previous token, ``output`` ``(batch, output_size)``, ``attn``
  ``(batch, src_len)`` or None;
* ``forward(emb, state) -> (outputs, attn)``: a whole teacher-forced target ``(batch,
  tgt_len, embedding_dim)`` -> ``(batch, tgt_len, output_size)`` and ``(batch, tgt_len,
  src_len)`` or None; the same numbers as :meth:`step` repeated, possibly computed faster.

Subclasses of :class:`Decoder` get the stacked cells, the bridge, the attention (built from
``attention`` unless the class sets ``attends = False``; its keys projected into the state by
:meth:`Decoder.init_state`) and the helpers that step or run the cells.

The recurrent state starts from the encoder's final states through the *bridge*,
``tanh(W s + b)`` for each tensor of a cell state (``bridge=False`` copies them; the sizes
must then agree).  Decoder layer ``i`` of ``n`` starts from encoder layer ``m - n + i`` of
``m`` (top-aligned; the bottom encoder layer when the decoder is deeper).  Two options shape
the bridge: ``bridge_activation`` (``"tanh"`` or ``"relu"``) and ``bridge_layers``:
``"each"`` (one ``W`` shared by the layers, each layer's state on its own) or ``"joint"``
(one ``W`` over the states of all ``n`` layers concatenated, its output split back into
``n`` layers: the layers mix, as in OpenNMT-py's bridge).  Other ``initial_state`` rules
(JoeyNMT's ``init_hidden``): ``"top"`` starts every layer from the top encoder layer's final
output ``s`` alone -- ``act(W s + b)`` with the bridge, else ``s`` copied (only its first,
forward half when it is twice the hidden size) -- and an LSTM's cell state equal to it;
``"zero"`` starts from zeros.  Between stacked layers variational dropout is applied with
one mask per sequence, kept in the state.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import registry
from .cells import State, cell_output, state_tensors
from .encoder import RNNLayer
from .errors import ConfigError

DecoderState = dict[str, torch.Tensor]

#: where the recurrent state starts (see the module docstring)
INITIAL_STATES = ("layers", "top", "zero")


class Decoder(nn.Module):
    """Base class: the stacked cells, the bridge, the attention (for decoders that
    ``attends``) and the layout of the state dict."""

    #: whether the decoder builds ``attention`` and keeps its projected keys in the state
    attends = True
    #: state entries that every beam of a sentence shares and no step changes; beam search
    #: leaves them in place when it reorders beams (a subclass that updates one drops it here)
    per_sentence: tuple[str, ...] = ("memory", "mask", "keys")

    def __init__(
        self,
        *,
        rnn_input_size: int,
        hidden_size: int,
        memory_size: int,
        encoder_state_size: int,
        output_size: int,
        cell: str = "gru",
        num_layers: int = 1,
        attention: str | None = "bahdanau",
        dropout: float = 0.0,
        cell_options: dict[str, Any] | None = None,
        attention_options: dict[str, Any] | None = None,
        bridge: bool = True,
        bridge_activation: str = "tanh",
        bridge_layers: str = "each",
        initial_state: str = "layers",
    ):
        super().__init__()
        if initial_state not in INITIAL_STATES:
            raise ConfigError(f"decoder: initial_state must be one of {', '.join(INITIAL_STATES)}; got {initial_state!r}")
        self.initial_state = initial_state
        if bridge_activation not in ("tanh", "relu") or bridge_layers not in ("each", "joint"):
            raise ConfigError(
                f"decoder: bridge_activation must be tanh or relu and bridge_layers each or joint; got "
                f"{bridge_activation!r} and {bridge_layers!r}"
            )
        self.bridge_activation, self.bridge_layers = bridge_activation, bridge_layers
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.dropout = dropout
        self.layers = nn.ModuleList(
            RNNLayer(cell, rnn_input_size if i == 0 else hidden_size, hidden_size, False, cell_options)
            for i in range(num_layers)
        )
        probe = self.layers[0].cells[0].init_state(1)
        self._tuple_state = not isinstance(probe, torch.Tensor)
        self._state_arity = len(state_tensors(probe))
        # "top" bridges the top layer's output alone: one linear layer whatever the cell
        bridges = self._state_arity if initial_state == "layers" else 1
        copies_half = initial_state == "top" and encoder_state_size == 2 * hidden_size
        if bridge and initial_state != "zero":
            joint = num_layers if bridge_layers == "joint" and initial_state == "layers" else 1
            self.bridge = nn.ModuleList(nn.Linear(joint * encoder_state_size, joint * hidden_size)
                                        for _ in range(bridges))
        elif encoder_state_size != hidden_size and initial_state != "zero" and not copies_half:
            raise ConfigError(
                f"decoder: bridge=False copies the encoder's final state, which has size {encoder_state_size}, "
                f"into a decoder of hidden size {hidden_size}; make them equal or use the bridge"
            )
        else:
            self.bridge = None
        if self.attends:
            if attention is None:
                raise ConfigError(f"the {type(self).__name__} needs an attention")
            self.attention = registry.attentions.build(attention, hidden_size, memory_size, **(attention_options or {}))

    @property
    def cell_provenance(self) -> Any:
        return getattr(self.layers[0].cells[0], "provenance", None)

    # state ------------------------------------------------------------------------
    def init_state(self, memory: torch.Tensor, mask: torch.Tensor, encoder_finals: list[State]) -> DecoderState:
        """The state before the first step (see the module docstring)."""
        n, m = len(self.layers), len(encoder_finals)
        if self.initial_state == "layers":
            hidden = self._bridge([encoder_finals[max(0, m - n + i)] for i in range(n)])
        else:
            hidden = [self._top_state(memory, encoder_finals[-1])] * n
        state = {"memory": memory, "mask": mask, **self._pack(hidden)}
        if self.attends:
            state["keys"] = self.attention.project_keys(memory)
        if self.training and self.dropout > 0:
            for i in range(1, n):  # time-locked masks on the inputs of layers above the first
                keep = memory.new_empty(memory.size(0), self.hidden_size).bernoulli_(1.0 - self.dropout)
                state[f"dropout.{i}"] = keep / (1.0 - self.dropout)
        return state

    def _bridge(self, finals: list[State]) -> list[State]:
        """The initial state of each decoder layer from the encoder final state it starts from."""
        if self.bridge is None:
            return finals
        act, n = torch.relu if self.bridge_activation == "relu" else torch.tanh, len(finals)
        if self.bridge_layers == "each":
            layers = [tuple(act(lin(t)) for lin, t in zip(self.bridge, state_tensors(f))) for f in finals]
        else:  # per state tensor: all layers at once, split back per layer
            joint = [act(lin(torch.cat(ts, -1))).chunk(n, -1)
                     for lin, ts in zip(self.bridge, zip(*(state_tensors(f) for f in finals)))]
            layers = [tuple(part[i] for part in joint) for i in range(n)]
        return [parts if self._tuple_state else parts[0] for parts in layers]

    def _top_state(self, memory: torch.Tensor, top_final: State) -> State:
        """The state of every layer under the ``"top"`` and ``"zero"`` rules: from the top
        encoder layer's final output ``(batch, encoder_state_size)``, each tensor of it the same."""
        if self.initial_state == "zero":
            h = memory.new_zeros(memory.size(0), self.hidden_size)
        elif self.bridge is None:
            h = cell_output(self.layers[0].cells[0], top_final)[:, : self.hidden_size]
        else:
            act = torch.relu if self.bridge_activation == "relu" else torch.tanh
            h = act(self.bridge[0](cell_output(self.layers[0].cells[0], top_final)))
        return tuple(h for _ in range(self._state_arity)) if self._tuple_state else h

    def _pack(self, hidden: list[State]) -> DecoderState:
        return {f"hidden.{i}.{k}": t for i, s in enumerate(hidden) for k, t in enumerate(state_tensors(s))}

    def _unpack(self, state: DecoderState) -> list[State]:
        hidden: list[State] = []
        for i in range(len(self.layers)):
            parts = tuple(state[f"hidden.{i}.{k}"] for k in range(self._state_arity))
            hidden.append(parts if self._tuple_state else parts[0])
        return hidden

    def _top_output(self, state: DecoderState) -> torch.Tensor:
        """The top layer's output in ``state`` ``(batch, hidden)``."""
        return cell_output(self.layers[-1].cells[0], self._unpack(state)[-1])

    # recurrence --------------------------------------------------------------------
    def _step_cells(self, x: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One step of the stacked cells: the top output ``(batch, hidden)`` and the new state."""
        hidden = self._unpack(state)
        for i, layer in enumerate(self.layers):
            if f"dropout.{i}" in state:
                x = x * state[f"dropout.{i}"]
            x, hidden[i] = layer.cells[0](x, hidden[i])
        return x, {**state, **self._pack(hidden)}

    def _run_cells(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """The stacked cells over a whole input ``(batch, len, input)`` known in advance,
        layer by layer (fused kernels for built-in cells): ``(batch, len, hidden)``."""
        hidden = self._unpack(state)
        for i, layer in enumerate(self.layers):
            if f"dropout.{i}" in state:
                x = x * state[f"dropout.{i}"].unsqueeze(1)
            x, _ = layer(x, None, [hidden[i]])
        return x

    # contract ------------------------------------------------------------------------
    def step(
        self, emb: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        raise NotImplementedError

    def forward(self, emb: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced decoding of a whole target, one :meth:`step` at a time."""
        outputs, attns = [], []
        for emb_t in emb.unbind(1):  # not emb[:, t]: its backward would fill a full-size zero tensor per step
            out, state, attn = self.step(emb_t, state)
            outputs.append(out)
            attns.append(attn)
        return torch.stack(outputs, 1), None if attns[0] is None else torch.stack(attns, 1)


class _ContextDecoder(Decoder):
    """A context vector enters the RNN input ``[y_{t-1}; c_t]`` and the deep output
    ``tanh(W [s_t; c_t; y_{t-1}])`` (Bahdanau et al. 2014, without the maxout);
    subclasses say where ``c_t`` comes from."""

    def __init__(self, *, embedding_dim: int, memory_size: int, encoder_state_size: int, **kwargs: Any):
        context_size = memory_size if self.attends else encoder_state_size
        super().__init__(
            rnn_input_size=embedding_dim + context_size, memory_size=memory_size,
            encoder_state_size=encoder_state_size, **kwargs,
        )
        self.readout = nn.Linear(self.hidden_size + context_size + embedding_dim, self.output_size)

    def _context(self, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _readout(self, h: torch.Tensor, context: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.readout(torch.cat([h, context, emb], -1)))

    def step(
        self, emb: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        context, attn = self._context(state)
        h, state = self._step_cells(torch.cat([emb, context], -1), state)
        return self._readout(h, context, emb), state, attn


@registry.decoders.register("bahdanau")
class BahdanauDecoder(_ContextDecoder):
    """Bahdanau et al. (2014): the *previous* decoder state queries the attention, and the
    context is fed into the RNN input and the deep output.

    Teacher-forced :meth:`forward` runs only attention and cells in its time loop; the
    deep output of all steps is one matrix product afterwards.
    """

    def _context(self, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attention(self._top_output(state), state["keys"], state["memory"], state["mask"])

    def forward(self, emb: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        hs, contexts, attns = [], [], []
        for emb_t in emb.unbind(1):
            context, attn = self._context(state)
            h, state = self._step_cells(torch.cat([emb_t, context], -1), state)
            hs.append(h)
            contexts.append(context)
            attns.append(attn)
        return self._readout(torch.stack(hs, 1), torch.stack(contexts, 1), emb), torch.stack(attns, 1)


@registry.decoders.register("plain")
class PlainDecoder(_ContextDecoder):
    """No attention (Sutskever et al. 2014; Cho et al. 2014): the encoder's final top-layer
    output is the only context, fed at every step; the ``attention`` options are ignored.
    Teacher-forced :meth:`forward` runs the cells over the whole target at once."""

    attends = False
    per_sentence = (*Decoder.per_sentence, "context")

    def init_state(self, memory: torch.Tensor, mask: torch.Tensor, encoder_finals: list[State]) -> DecoderState:
        state = super().init_state(memory, mask, encoder_finals)
        state["context"] = cell_output(self.layers[-1].cells[0], encoder_finals[-1])
        return state

    def _context(self, state: DecoderState) -> tuple[torch.Tensor, None]:
        return state["context"], None

    def forward(self, emb: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, None]:
        context = state["context"].unsqueeze(1).expand(-1, emb.size(1), -1)
        h = self._run_cells(torch.cat([emb, context], -1), state)
        return self._readout(h, context, emb), None


@registry.decoders.register("luong")
class LuongDecoder(Decoder):
    """Luong et al. (2015): the *current* state ``s_t`` queries the attention and the
    attentional hidden state ``h~_t = tanh(W_c [c_t; s_t])`` is the output.

    With ``input_feeding`` (default) ``h~_{t-1}`` joins the next RNN input, which forces a
    step loop.  Without it, teacher-forced :meth:`forward` runs the cells over the whole
    target in one fused call per layer and attends for all steps at once.

    ``combine_bias`` adds a bias to ``W_c`` and ``combine_activation="identity"`` drops the
    tanh (OpenNMT-py's output after its ``mlp`` attention is ``W_c [c_t; s_t] + b``).
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        memory_size: int,
        output_size: int,
        attention: str = "luong-general",
        input_feeding: bool = True,
        combine_bias: bool = False,
        combine_activation: str = "tanh",
        **kwargs: Any,
    ):
        if combine_activation not in ("tanh", "identity"):
            raise ConfigError(f"luong decoder: combine_activation must be tanh or identity, got {combine_activation!r}")
        super().__init__(
            rnn_input_size=embedding_dim + (output_size if input_feeding else 0), memory_size=memory_size,
            output_size=output_size, attention=attention, **kwargs,
        )
        self.input_feeding = input_feeding
        self.combine = nn.Linear(memory_size + self.hidden_size, output_size, bias=combine_bias)
        self.combine_tanh = combine_activation == "tanh"

    def init_state(self, memory: torch.Tensor, mask: torch.Tensor, encoder_finals: list[State]) -> DecoderState:
        state = super().init_state(memory, mask, encoder_finals)
        if self.input_feeding:
            state["feed"] = memory.new_zeros(memory.size(0), self.output_size)
        return state

    def _attend(self, h: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        """``h~ = tanh(W_c [c; h])`` and the attention weights, for one step or many."""
        context, attn = self.attention(h, state["keys"], state["memory"], state["mask"])
        out = self.combine(torch.cat([context, h], -1))
        return torch.tanh(out) if self.combine_tanh else out, attn

    def step(self, emb: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        x = torch.cat([emb, state["feed"]], -1) if self.input_feeding else emb
        h, state = self._step_cells(x, state)
        out, attn = self._attend(h, state)
        if self.input_feeding:
            state["feed"] = out
        return out, state, attn

    def forward(self, emb: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_feeding:
            return super().forward(emb, state)
        return self._attend(self._run_cells(emb, state), state)
