"""Attention variants against hand-written score formulas; masking and normalization."""
from __future__ import annotations

import pytest
import torch

from seqlearn import registry
from seqlearn.attention import Attention, dot_scores
from seqlearn.errors import ConfigError

torch.set_num_threads(1)

NAMES = ["bahdanau", "luong-dot", "luong-general", "luong-concat"]


def _inputs(query_size=6, memory_size=6):
    torch.manual_seed(0)
    memory = torch.randn(3, 5, memory_size, dtype=torch.double)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return torch.randn(3, query_size, dtype=torch.double), torch.randn(3, 4, query_size, dtype=torch.double), memory, mask


def _expected_scores(name, attention, q, memory):
    """Scores by the papers' formulas, one (query, source position) pair at a time."""
    batch, src_len = memory.shape[:2]
    out = torch.empty(batch, src_len, dtype=q.dtype)
    for b in range(batch):
        for j in range(src_len):
            k = memory[b, j]
            if name in ("bahdanau", "luong-concat"):
                hidden = attention.query_layer.weight @ q[b] + attention.key_layer.weight @ k + attention.key_layer.bias
                out[b, j] = attention.energy @ torch.tanh(hidden)
            elif name == "luong-dot":
                out[b, j] = q[b] @ k
            else:
                out[b, j] = q[b] @ (attention.key_layer.weight @ k)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_scores_weights_and_context_follow_the_formulas(name):
    q, _, memory, mask = _inputs()
    attention = registry.attentions.build(name, 6, 6).double()
    context, weights = attention(q, attention.project_keys(memory), memory, mask)
    scores = _expected_scores(name, attention, q, memory)
    expected = torch.zeros_like(scores)
    for b in range(3):
        n = int(mask[b].sum())
        expected[b, :n] = torch.softmax(scores[b, :n], 0)
    torch.testing.assert_close(weights, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(context, (expected.unsqueeze(-1) * memory).sum(1), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_rows_sum_to_one_and_padding_gets_exactly_zero(name):
    q, q_steps, memory, mask = _inputs()
    attention = registry.attentions.build(name, 6, 6).double()
    keys = attention.project_keys(memory)
    for query in (q, q_steps):
        _, weights = attention(query, keys, memory, mask)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=torch.double))
        m = mask if query.dim() == 2 else mask.unsqueeze(1).expand_as(weights)
        assert torch.all(weights[~m] == 0)
    assert torch.all(weights[2, :, 0] == 1)  # one real token takes all the weight


@pytest.mark.parametrize("name", NAMES)
def test_many_steps_at_once_equal_one_step_at_a_time(name):
    _, q_steps, memory, mask = _inputs()
    attention = registry.attentions.build(name, 6, 6).double()
    keys = attention.project_keys(memory)
    context, weights = attention(q_steps, keys, memory, mask)
    for t in range(q_steps.size(1)):
        c_t, w_t = attention(q_steps[:, t], keys, memory, mask)
        torch.testing.assert_close(context[:, t], c_t, atol=1e-12, rtol=0)
        torch.testing.assert_close(weights[:, t], w_t, atol=1e-12, rtol=0)


def test_keys_are_not_cached_on_the_module():
    q, _, memory, mask = _inputs()
    attention = registry.attentions.build("bahdanau", 6, 6).double()
    other = torch.randn_like(memory)
    attention(q, attention.project_keys(other), other, mask)
    alone = registry.attentions.build("bahdanau", 6, 6).double()
    alone.load_state_dict(attention.state_dict())
    torch.testing.assert_close(
        attention(q, attention.project_keys(memory), memory, mask), alone(q, alone.project_keys(memory), memory, mask)
    )
    assert not any(isinstance(v, torch.Tensor) for v in vars(attention).values())
    assert list(attention.buffers()) == []


def test_different_query_and_memory_sizes():
    q, q_steps, memory, mask = _inputs(query_size=4, memory_size=6)
    for name in ("bahdanau", "luong-general", "luong-concat"):
        attention = registry.attentions.build(name, 4, 6).double()
        context, weights = attention(q_steps, attention.project_keys(memory), memory, mask)
        assert context.shape == (3, 4, 6) and weights.shape == (3, 4, 5)
    with pytest.raises(ConfigError, match="luong-general"):
        registry.attentions.build("luong-dot", 4, 6)


class _ScaledDot(Attention):
    def score(self, query, keys):
        return dot_scores(query, keys) / self.query_size**0.5


registry.attentions.register("test-scaled-dot", _ScaledDot)


def test_plugin_attention_writes_only_a_score():
    q, _, memory, mask = _inputs()
    attention = registry.attentions.build("test-scaled-dot", 6, 6)
    _, weights = attention(q, attention.project_keys(memory), memory, mask)
    expected = torch.softmax((memory @ q.unsqueeze(-1)).squeeze(-1) / 6**0.5 - 1e9 * (~mask), -1)
    torch.testing.assert_close(weights, expected)
