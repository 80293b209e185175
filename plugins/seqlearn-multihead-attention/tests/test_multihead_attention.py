"""Multi-head additive attention: masking, a case computed by hand, one step vs many, learning."""
from __future__ import annotations

import importlib.metadata as md
import math

import pytest
import torch
from seqlearn import Seq2Seq, Vocab, registry
from seqlearn.batching import pad
from seqlearn.errors import ConfigError
from seqlearn.testing import train_on_default_task
from seqlearn_multihead_attention import MultiHeadAdditiveAttention


def _attention(query_size: int = 6, memory_size: int = 5, heads: int = 3) -> MultiHeadAdditiveAttention:
    torch.manual_seed(0)
    attention = MultiHeadAdditiveAttention(query_size, memory_size, heads=heads)
    with torch.no_grad():
        attention.output.weight.normal_()  # built as the heads' average: make the mixing count
    return attention


def test_the_entry_point_provides_the_attention():
    assert registry.attentions.get("multihead") is MultiHeadAdditiveAttention
    prov = registry.attentions.provenance("multihead")
    assert (prov.distribution, prov.version) == ("seqlearn-multihead-attention", md.version("seqlearn-multihead-attention"))
    attention = registry.attentions.build("multihead", 8, 6, heads=2)
    assert (attention.heads, attention.head_size) == (2, 4)
    with pytest.raises(ConfigError, match="heads=3"):
        MultiHeadAdditiveAttention(8, 6, heads=3)


def test_padding_gets_zero_weight_from_every_head():
    attention = _attention()
    memory = torch.randn(2, 4, 5)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    query = torch.randn(2, 6)
    keys = attention.project_keys(memory)
    context, weights = attention(query, keys, memory, mask)
    assert context.shape == (2, 5) and weights.shape == (2, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    assert bool((weights[1, 2:] == 0).all()) and bool((weights[1, :2] > 0).all())
    per_head = torch.softmax(attention.score(query, keys).masked_fill(~mask[:, None], -torch.inf), -1)
    assert bool((per_head[1, :, 2:] == 0).all())
    # the padded sentence alone (without its padding) attends and reads exactly the same
    alone_context, alone_weights = attention(query[1:], keys[1:, :2], memory[1:, :2], mask[1:, :2])
    torch.testing.assert_close(alone_weights[0], weights[1, :2])
    torch.testing.assert_close(alone_context[0], context[1])


def test_a_small_case_by_hand():
    """Two heads of one unit each over three source positions, one of them padding,
    computed with scalars: e_hj = v_h tanh(q_h + k_hj), softmax per head, then W_o."""
    attention = MultiHeadAdditiveAttention(1, 2, heads=2, attention_size=2)
    with torch.no_grad():
        attention.query_layer.weight.copy_(torch.tensor([[1.0], [-2.0]]))  # W q: per head
        attention.key_layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # U k: identity ...
        attention.key_layer.bias.copy_(torch.tensor([0.5, 0.0]))  # ... plus a bias
        attention.energy.copy_(torch.tensor([[2.0], [-1.0]]))  # v_h
    memory = torch.tensor([[[0.2, -0.4], [1.0, 0.3], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    q = 0.7
    memory_rows = memory[0].tolist()
    expected_heads = []
    for head, (w_q, v) in enumerate(((1.0, 2.0), (-2.0, -1.0))):
        scores = [v * math.tanh(w_q * q + row[head] + (0.5 if head == 0 else 0.0)) for row in memory_rows[:2]]
        z = sum(math.exp(s) for s in scores)
        expected_heads.append([math.exp(s) / z for s in scores] + [0.0])
    context, weights = attention(torch.tensor([[q]]), attention.project_keys(memory), memory, mask)
    mean = [(a + b) / 2 for a, b in zip(*expected_heads)]
    assert weights[0].tolist() == pytest.approx(mean, abs=1e-6)
    # W_o starts as [I/2, I/2]: the context is the memory averaged by the mean weights
    expected_context = [sum(w * row[d] for w, row in zip(mean, memory_rows)) for d in range(2)]
    assert context[0].tolist() == pytest.approx(expected_context, abs=1e-6)
    # with another W_o, each head's own context is mixed by it
    with torch.no_grad():
        attention.output.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))
    context, _ = attention(torch.tensor([[q]]), attention.project_keys(memory), memory, mask)
    head_contexts = [[sum(w * row[d] for w, row in zip(a, memory_rows)) for d in range(2)] for a in expected_heads]
    assert context[0].tolist() == pytest.approx([head_contexts[0][0], head_contexts[1][1]], abs=1e-6)


def test_many_steps_at_once_equal_one_at_a_time():
    """The fused Luong decoder attends for a whole target in one call."""
    attention = _attention()
    memory, query = torch.randn(2, 4, 5), torch.randn(2, 3, 6)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    keys = attention.project_keys(memory)
    context, weights = attention(query, keys, memory, mask)
    assert context.shape == (2, 3, 5) and weights.shape == (2, 3, 4)
    for t in range(3):
        c, w = attention(query[:, t], keys, memory, mask)
        torch.testing.assert_close(context[:, t], c)
        torch.testing.assert_close(weights[:, t], w)


@torch.no_grad()
def test_the_fused_luong_decoder_attends_for_all_steps_at_once_through_it():
    """Without input feeding the Luong decoder attends for a whole target in one call:
    its teacher-forced logits equal those of the step function, one token at a time."""
    torch.manual_seed(0)
    words = "a b c d e".split()
    model = Seq2Seq(Vocab.build([words]), Vocab.build([words]), decoder="luong", attention="multihead",
                    attention_options={"heads": 2}, decoder_options={"input_feeding": False},
                    embedding_dim=8, hidden_size=12, dropout=0.0).eval()
    src = pad([model.src_vocab.encode(s.split(), add_eos=True) for s in ("a b c", "d")], model.src_vocab.pad_index)
    tgt = pad([model.tgt_vocab.encode(t.split(), add_bos=True) for t in ("e d c b", "a b")], model.tgt_vocab.pad_index)
    logits = torch.log_softmax(model(src, tgt.ids), -1)
    state = model.start(src)
    for t in range(tgt.ids.size(1)):
        log_probs, state, attn = model.search_step(tgt.ids[:, t], state)
        torch.testing.assert_close(log_probs, logits[:, t])
        assert bool((attn[1, 2:] == 0).all())  # padding after "d </s>"


@pytest.mark.slow
def test_a_seq2seq_with_multihead_attention_learns_the_default_task():
    # 200 updates of 512 tokens (seqlearn.testing.SMALL_MODEL): this run gives a validation loss
    # of 0.64, single-head "bahdanau" 0.48, and a model without attention (decoder="plain")
    # 0.98: below 0.8 means the heads find the source words
    model, loss = train_on_default_task(steps=200, attention="multihead", attention_options={"heads": 4})
    assert type(model.decoder.attention) is MultiHeadAdditiveAttention
    assert loss < 0.8
