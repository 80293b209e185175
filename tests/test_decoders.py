"""Decoders: fused / hoisted whole-target paths against the step path, and who queries the attention."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlearn import registry
from seqlearn.cells import Cell
from seqlearn.decoders import Decoder

torch.set_num_threads(1)

EMB, HIDDEN, MEMORY, OUT = 5, 6, 8, 7


class _TanhPlugin(Cell):
    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(self.linear(torch.cat([x, h], -1)))
        return h, h


registry.cells.register("test-decoder-tanh", _TanhPlugin)


def _setup(name, cell="gru", layers=1, dropout=0.0, encoder_layers=1, **options):
    torch.manual_seed(0)
    decoder = registry.decoders.build(
        name, embedding_dim=EMB, hidden_size=HIDDEN, memory_size=MEMORY, encoder_state_size=MEMORY,
        output_size=OUT, cell=cell, num_layers=layers, dropout=dropout,
        attention=options.pop("attention", "luong-general" if name == "luong" else "bahdanau"), **options,
    ).double()
    memory = torch.randn(3, 4, MEMORY, dtype=torch.double)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    arity = 2 if cell == "lstm" else 1
    finals = []
    for _ in range(encoder_layers):
        parts = tuple(torch.randn(3, MEMORY, dtype=torch.double) for _ in range(arity))
        finals.append(parts if arity == 2 else parts[0])
    emb = torch.randn(3, 5, EMB, dtype=torch.double)
    return decoder, memory, mask, finals, emb


def _fast_and_stepwise(decoder, memory, mask, finals, emb):
    """(outputs, attn, grads) of the decoder's own forward and of the plain step loop,
    with the same dropout masks."""
    results = []
    torch.manual_seed(3)
    state = decoder.init_state(memory, mask, finals)
    for forward in (decoder.forward, lambda e, s: Decoder.forward(decoder, e, s)):
        decoder.zero_grad()
        out, attn = forward(emb, dict(state))
        out.pow(2).sum().backward(retain_graph=True)
        grads = {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}
        results.append((out, attn, grads))
    return results


@pytest.mark.parametrize(
    "name,cell,layers,options",
    [
        ("luong", "gru", 1, {"input_feeding": False}),
        ("luong", "lstm", 2, {"input_feeding": False}),
        ("luong", "rnn", 2, {"input_feeding": False, "attention": "luong-concat"}),
        ("luong", "test-decoder-tanh", 2, {"input_feeding": False}),
        ("luong", "gru", 2, {"input_feeding": True}),
        ("bahdanau", "gru", 2, {}),
        ("bahdanau", "lstm", 1, {}),
        ("plain", "lstm", 2, {}),
        ("plain", "test-decoder-tanh", 1, {}),
    ],
)
def test_whole_target_forward_equals_the_step_path(name, cell, layers, options):
    decoder, memory, mask, finals, emb = _setup(name, cell, layers, dropout=0.3, encoder_layers=2, **options)
    decoder.train()  # dropout masks between layers must be the same on both paths
    (fast, fast_attn, fast_grads), (slow, slow_attn, slow_grads) = _fast_and_stepwise(decoder, memory, mask, finals, emb)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    if name == "plain":
        assert fast_attn is None and slow_attn is None
    else:
        torch.testing.assert_close(fast_attn, slow_attn, atol=1e-5, rtol=0)
    assert fast_grads.keys() == slow_grads.keys()
    for key in fast_grads:
        torch.testing.assert_close(fast_grads[key], slow_grads[key], atol=1e-5, rtol=0, msg=key)


def test_fused_luong_path_makes_one_recurrent_call_per_layer():
    decoder, memory, mask, finals, emb = _setup("luong", "gru", 2, input_feeding=False)
    calls = []
    for layer in decoder.layers:
        layer.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    attention_calls = []
    decoder.attention.register_forward_hook(lambda module, args, out: attention_calls.append(args[0].shape))
    decoder(emb, decoder.init_state(memory, mask, finals))
    assert calls == [(3, 5, EMB), (3, 5, HIDDEN)]
    assert attention_calls == [(3, 5, HIDDEN)]  # all steps at once
    assert all(layer.use_fused for layer in decoder.layers)


def _queries(decoder, state, emb):
    """The attention queries of three steps, and the top hidden state before/after each step."""
    queries = []
    handle = decoder.attention.register_forward_hook(lambda module, args, out: queries.append(args[0]))
    before, after = [], []
    for t in range(3):
        before.append(decoder._top_output(state))
        _, state, _ = decoder.step(emb[:, t], state)
        after.append(decoder._top_output(state))
    handle.remove()
    return queries, before, after


def test_bahdanau_queries_with_the_previous_state_and_luong_with_the_current():
    decoder, memory, mask, finals, emb = _setup("bahdanau", "gru", 1)
    decoder.eval()
    queries, before, _ = _queries(decoder, decoder.init_state(memory, mask, finals), emb)
    for q, h in zip(queries, before):
        torch.testing.assert_close(q, h, atol=0, rtol=0)
    decoder, memory, mask, finals, emb = _setup("luong", "gru", 1)
    decoder.eval()
    queries, _, after = _queries(decoder, decoder.init_state(memory, mask, finals), emb)
    for q, h in zip(queries, after):
        torch.testing.assert_close(q, h, atol=0, rtol=0)


def test_luong_input_feeding_feeds_the_attentional_state():
    decoder, memory, mask, finals, emb = _setup("luong", "gru", 1, input_feeding=True)
    decoder.eval()
    fed = []
    decoder.layers[0].cells[0].register_forward_hook(lambda module, args, out: fed.append(args[0]))
    state = decoder.init_state(memory, mask, finals)
    out0, state, _ = decoder.step(emb[:, 0], state)
    decoder.step(emb[:, 1], state)
    assert fed[0][:, EMB:].abs().max() == 0  # nothing to feed before the first step
    torch.testing.assert_close(fed[1], torch.cat([emb[:, 1], out0], -1), atol=0, rtol=0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bridge_starts_from_top_aligned_encoder_layers(cell):
    decoder, memory, mask, finals, _ = _setup("bahdanau", cell, layers=2, encoder_layers=3)
    state = decoder.init_state(memory, mask, finals)
    for i, source in ((0, finals[1]), (1, finals[2])):
        parts = source if cell == "lstm" else (source,)
        for k, (bridge, part) in enumerate(zip(decoder.bridge, parts)):
            expected = torch.tanh(part @ bridge.weight.T + bridge.bias)
            torch.testing.assert_close(state[f"hidden.{i}.{k}"], expected)
    assert len(decoder.bridge) == (2 if cell == "lstm" else 1)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_joint_relu_bridge_mixes_the_layers(cell):
    """bridge_layers="joint": relu(W [s_0; s_1] + b) over both layers' states, split back."""
    decoder, memory, mask, finals, _ = _setup("luong", cell, layers=2, encoder_layers=3, bridge_layers="joint",
                                              bridge_activation="relu")
    state = decoder.init_state(memory, mask, finals)
    parts = [f if cell == "lstm" else (f,) for f in finals[1:]]
    for k, bridge in enumerate(decoder.bridge):
        assert bridge.weight.shape == (2 * HIDDEN, 2 * MEMORY)
        joint = torch.relu(torch.cat([parts[0][k], parts[1][k]], -1) @ bridge.weight.T + bridge.bias)
        torch.testing.assert_close(state[f"hidden.0.{k}"], joint[:, :HIDDEN])
        torch.testing.assert_close(state[f"hidden.1.{k}"], joint[:, HIDDEN:])
    with pytest.raises(Exception, match="bridge_activation"):
        _setup("luong", cell, bridge_activation="sigmoid")


def test_luong_combine_bias_and_identity_activation():
    """combine_bias, combine_activation="identity": the output is W_c [c; s] + b, no tanh."""
    decoder, memory, mask, finals, emb = _setup("luong", "gru", combine_bias=True, combine_activation="identity")
    state = decoder.init_state(memory, mask, finals)
    out, new_state, attn = decoder.step(emb[:, 0], dict(state))
    h = new_state["hidden.0.0"]
    context = torch.einsum("bs,bsm->bm", attn, memory)
    torch.testing.assert_close(out, torch.cat([context, h], -1) @ decoder.combine.weight.T + decoder.combine.bias)
    assert decoder.combine.bias is not None
    with pytest.raises(Exception, match="combine_activation"):
        _setup("luong", "gru", combine_activation="relu")


def test_without_bridge_the_final_state_is_copied_and_sizes_are_checked():
    torch.manual_seed(0)
    decoder = registry.decoders.build(
        "luong", embedding_dim=EMB, hidden_size=MEMORY, memory_size=MEMORY, encoder_state_size=MEMORY,
        output_size=OUT, bridge=False,
    )
    final = torch.randn(2, MEMORY)
    state = decoder.init_state(torch.randn(2, 3, MEMORY), torch.ones(2, 3, dtype=torch.bool), [final])
    assert torch.equal(state["hidden.0.0"], final)
    with pytest.raises(Exception, match="bridge"):
        registry.decoders.build(
            "luong", embedding_dim=EMB, hidden_size=HIDDEN, memory_size=MEMORY, encoder_state_size=MEMORY,
            output_size=OUT, bridge=False,
        )


@pytest.mark.parametrize("name", ["bahdanau", "luong", "plain"])
def test_state_is_batch_first_so_reordering_rows_reorders_results(name):
    decoder, memory, mask, finals, emb = _setup(name, "lstm", 2)
    decoder.eval()
    state = decoder.init_state(memory, mask, finals)
    assert all(t.size(0) == 3 for t in state.values())
    assert {"memory", "mask"} <= state.keys() and (name == "plain" or "keys" in state)
    order = torch.tensor([2, 0, 2, 1])
    out, new_state, attn = decoder.step(emb[:, 0], state)
    out_r, new_state_r, attn_r = decoder.step(emb[order, 0], {k: v.index_select(0, order) for k, v in state.items()})
    torch.testing.assert_close(out_r, out[order], atol=1e-12, rtol=0)
    for key in new_state:
        torch.testing.assert_close(new_state_r[key], new_state[key][order], atol=1e-12, rtol=0)
    if attn is not None:
        torch.testing.assert_close(attn_r, attn[order], atol=1e-12, rtol=0)
        assert torch.all(attn[~mask] == 0)
