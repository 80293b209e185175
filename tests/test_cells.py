"""Cells and the encoder against PyTorch's own nn.GRU / nn.LSTM / nn.RNN."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlearn import registry
from seqlearn.cells import Cell, GRUCell, LSTMCell, RNNCell
from seqlearn.encoder import RNNEncoder, locked_dropout

torch.set_num_threads(1)

ORACLES = {
    "gru": (nn.GRU, {}, {}),
    "lstm": (nn.LSTM, {}, {}),
    "rnn": (nn.RNN, {"nonlinearity": "tanh"}, {}),
    "rnn-relu": (nn.RNN, {"nonlinearity": "relu"}, {"nonlinearity": "relu"}),
}


def _oracle_for(encoder: RNNEncoder, kind: str) -> nn.RNNBase:
    """An independent nn.GRU/LSTM/RNN holding copies of the encoder's weights."""
    module, options, _ = ORACLES[kind]
    first = encoder.layers[0].cells[0]
    oracle = module(
        first.input_size, first.hidden_size, num_layers=len(encoder.layers), batch_first=True,
        bidirectional=encoder.layers[0].bidirectional, **options,
    ).double()
    with torch.no_grad():
        for layer_index, layer in enumerate(encoder.layers):
            for suffix, cell in zip(("", "_reverse"), layer.cells):
                for name, param in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), cell.flat_weights()):
                    getattr(oracle, f"{name}_l{layer_index}{suffix}").copy_(param)
    return oracle


def _encoder(kind: str, bidirectional: bool, layers: int) -> RNNEncoder:
    cell = "rnn" if kind.startswith("rnn") else kind
    return RNNEncoder(5, 4, cell=cell, num_layers=layers, bidirectional=bidirectional, cell_options=ORACLES[kind][2]).double()


@pytest.mark.parametrize("kind", list(ORACLES))
@pytest.mark.parametrize("bidirectional,layers", [(True, 2), (False, 1)])
def test_step_loop_and_fused_equal_pytorch_rnn(kind, bidirectional, layers):
    torch.manual_seed(0)
    encoder = _encoder(kind, bidirectional, layers)
    oracle = _oracle_for(encoder, kind)
    x = torch.randn(3, 6, 5, dtype=torch.double)
    lengths = torch.tensor([6, 2, 4])
    probe = torch.randn(3, 6, encoder.output_size, dtype=torch.double)

    x_ref = x.clone().requires_grad_()
    out_ref, final_ref = oracle(pack_padded_sequence(x_ref, lengths, batch_first=True, enforce_sorted=False))
    out_ref, _ = pad_packed_sequence(out_ref, batch_first=True, total_length=6)
    h_ref = final_ref[0] if kind == "lstm" else final_ref
    # (layers * dirs, batch, hidden) -> top layer, directions concatenated
    h_top_ref = torch.cat(list(h_ref[-(2 if bidirectional else 1):]), -1)
    (out_ref * probe).sum().add(h_top_ref.pow(2).sum()).backward()
    oracle_grads = {name: p.grad for name, p in oracle.named_parameters()}

    for fused in (False, True):
        encoder.zero_grad()
        encoder.use_fused = fused
        x_ours = x.clone().requires_grad_()
        out, finals = encoder(x_ours, lengths)
        h_top = encoder.final_output(finals)
        torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(h_top, h_top_ref, atol=1e-5, rtol=0)
        assert out[1, 2:].abs().max() == 0  # padding gives zero outputs
        (out * probe).sum().add(h_top.pow(2).sum()).backward()
        torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=0)
        for layer_index, layer in enumerate(encoder.layers):
            for suffix, cell in zip(("", "_reverse"), layer.cells):
                for name, param in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), cell.flat_weights()):
                    torch.testing.assert_close(
                        param.grad, oracle_grads[f"{name}_l{layer_index}{suffix}"], atol=1e-5, rtol=0,
                        msg=lambda m: f"fused={fused} {name}_l{layer_index}{suffix}: {m}",
                    )


def test_lstm_final_cell_state_matches_pytorch():
    torch.manual_seed(1)
    encoder = _encoder("lstm", True, 1)
    oracle = _oracle_for(encoder, "lstm")
    x, lengths = torch.randn(2, 5, 5, dtype=torch.double), torch.tensor([3, 5])
    _, (h_ref, c_ref) = oracle(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    for fused in (False, True):
        encoder.use_fused = fused
        _, finals = encoder(x, lengths)
        h, c = finals[0]
        torch.testing.assert_close(h, torch.cat(list(h_ref), -1), atol=1e-5, rtol=0)
        torch.testing.assert_close(c, torch.cat(list(c_ref), -1), atol=1e-5, rtol=0)


def test_fused_module_uses_the_cells_parameters():
    encoder = RNNEncoder(3, 4, cell="gru", bidirectional=True)
    encoder(torch.randn(2, 3, 3), torch.tensor([3, 1]))
    layer = encoder.layers[0]
    fused = layer._fused_module()
    assert fused.weight_hh_l0 is layer.cells[0].weight_hh
    assert fused.weight_ih_l0_reverse is layer.cells[1].weight_ih
    assert set(encoder.state_dict()) == {f"layers.0.cells.{d}.{n}" for d in (0, 1) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    # a load that replaces the Parameter objects is picked up, not shadowed by stale copies
    new_state = {k: torch.zeros_like(v) for k, v in encoder.state_dict().items()}
    encoder.load_state_dict(new_state, assign=True)
    out, _ = encoder(torch.randn(2, 3, 3), torch.tensor([3, 1]))
    assert out.abs().max() == 0


@pytest.mark.parametrize("cls,gates", [(GRUCell, 3), (LSTMCell, 4), (RNNCell, 1)])
def test_initialization_orthogonal_blocks_xavier_inputs(cls, gates):
    torch.manual_seed(0)
    cell = cls(6, 5)
    for block in cell.weight_hh.detach().chunk(gates):
        torch.testing.assert_close(block @ block.T, torch.eye(5), atol=1e-5, rtol=0)
    bound = math.sqrt(6.0 / (6 + 5))  # Xavier-uniform bound of one (5, 6) gate block
    w_ih = cell.weight_ih.detach()
    assert w_ih.abs().max() <= bound and w_ih.abs().max() > 0.8 * bound
    assert cell.bias_hh.abs().max() == 0


def test_lstm_forget_gate_bias():
    cell = LSTMCell(3, 4)
    total = (cell.bias_ih + cell.bias_hh).detach()
    assert total[4:8].tolist() == [1.0] * 4
    assert total[:4].abs().max() == 0 and total[8:].abs().max() == 0
    assert LSTMCell(3, 4, forget_bias=2.5).bias_ih.detach()[4:8].tolist() == [2.5] * 4


def test_builtins_are_registered_under_their_names():
    assert registry.cells.get("gru") is GRUCell
    assert registry.cells.get("lstm") is LSTMCell
    assert registry.cells.get("rnn") is RNNCell
    assert registry.cells.build("gru", 2, 3).provenance.name == "gru"


class _ElmanPlugin(Cell):
    """A plugin cell written against the documented contract only (no fused path)."""

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.inp = nn.Linear(input_size, hidden_size)
        self.rec = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(self.inp(x) + self.rec(h))
        return h, h


registry.cells.register("test-elman", _ElmanPlugin)


def test_plugin_cell_runs_through_the_step_loop():
    torch.manual_seed(0)
    encoder = RNNEncoder(3, 4, cell="test-elman", bidirectional=True).double()
    assert not encoder.use_fused
    oracle = nn.RNN(3, 4, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for suffix, cell in zip(("", "_reverse"), encoder.layers[0].cells):
            getattr(oracle, f"weight_ih_l0{suffix}").copy_(cell.inp.weight)
            getattr(oracle, f"bias_ih_l0{suffix}").copy_(cell.inp.bias)
            getattr(oracle, f"weight_hh_l0{suffix}").copy_(cell.rec.weight)
            getattr(oracle, f"bias_hh_l0{suffix}").copy_(cell.rec.bias)
    x, lengths = torch.randn(3, 4, 3, dtype=torch.double), torch.tensor([2, 4, 1])
    ref, h_ref = oracle(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    ref, _ = pad_packed_sequence(ref, batch_first=True, total_length=4)
    out, finals = encoder(x, lengths)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(finals[0], torch.cat(list(h_ref), -1), atol=1e-6, rtol=0)


def test_locked_dropout_uses_one_mask_for_all_time_steps():
    torch.manual_seed(0)
    x = torch.ones(8, 7, 50)
    out = locked_dropout(x, 0.5, training=True)
    assert torch.equal(out, out[:, :1].expand_as(out))
    zero_fraction = (out[:, 0] == 0).float().mean().item()
    assert 0.35 < zero_fraction < 0.65
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_encoder_dropout_between_layers_is_time_locked():
    torch.manual_seed(0)
    encoder = RNNEncoder(3, 4, cell="gru", num_layers=2, bidirectional=False, dropout=0.5).train()
    seen = []
    encoder.layers[1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    encoder(torch.randn(2, 6, 3), torch.tensor([6, 6]))
    dropped = seen[0] == 0
    assert dropped.any()
    # a unit dropped at one time step is dropped at all of them
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
