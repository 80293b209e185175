"""Poolings against hand-computed oracles on ragged batches; BiRNN ``last`` against the
encoder's own final state; registry behaviour."""
from __future__ import annotations

import pytest
import torch

from seqlearn import registry
from seqlearn.encoder import RNNEncoder
from seqlearn.errors import ConfigError, UnknownComponentError
from seqlearn.pooling import AttentionPooling, LastPooling, MaxPooling, MeanPooling, Pooling

torch.set_num_threads(1)

LENGTHS = [5, 2, 1, 4]
WIDTH = 6


def _ragged(fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """States ``(4, 5, WIDTH)`` with random real positions and ``fill`` on padding, and the mask."""
    torch.manual_seed(1)
    states = torch.randn(len(LENGTHS), max(LENGTHS), WIDTH, dtype=torch.float64)
    mask = torch.arange(max(LENGTHS))[None, :] < torch.tensor(LENGTHS)[:, None]
    return states.masked_fill(~mask.unsqueeze(-1), fill), mask


def _oracle(name: str, pooling: torch.nn.Module, seq: torch.Tensor, directions: int) -> torch.Tensor:
    """The pooled vector of one unpadded sequence ``(n, WIDTH)``, written out by hand."""
    n = seq.size(0)
    if name == "last":
        if directions == 1:
            return seq[n - 1]
        return torch.cat([seq[n - 1, : WIDTH // 2], seq[0, WIDTH // 2 :]])
    if name == "mean":
        return sum(seq[t] for t in range(n)) / n
    if name == "max":
        return torch.stack([max(seq[t, j] for t in range(n)) for j in range(WIDTH)])
    # attention: a_t = exp(e_t) / sum exp(e), e_t = v . tanh(W h_t + b)
    w, b, v = pooling.project.weight, pooling.project.bias, pooling.score.weight[0]
    e = torch.stack([v @ torch.tanh(w @ seq[t] + b) for t in range(n)])
    a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
    return sum(a[t] * seq[t] for t in range(n))


@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("name", ["last", "mean", "max", "attention"])
def test_pooling_matches_hand_computation_and_ignores_padding(name, directions):
    torch.manual_seed(0)
    pooling = registry.poolings.build(name, WIDTH, directions=directions).double()
    outputs = []
    for fill in (0.0, 1e6, float("nan")):
        states, mask = _ragged(fill)
        out = pooling(states, mask)
        assert out.shape == (len(LENGTHS), WIDTH)
        outputs.append(out)
        for b, n in enumerate(LENGTHS):
            torch.testing.assert_close(out[b], _oracle(name, pooling, states[b, :n], directions))
    # whatever the padding holds, nothing changes (bit for bit)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_directions_matter_only_to_last():
    states, mask = _ragged(0.0)
    forward, both = LastPooling(WIDTH, 1)(states, mask), LastPooling(WIDTH, 2)(states, mask)
    half = WIDTH // 2
    assert torch.equal(forward[:, :half], both[:, :half])
    assert torch.equal(both[:, half:], states[:, 0, half:])  # the backward RNN ends at the first token
    assert not torch.equal(forward[0, half:], both[0, half:])
    for cls in (MeanPooling, MaxPooling):
        assert torch.equal(cls(WIDTH, 1)(states, mask), cls(WIDTH, 2)(states, mask))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_last_pooling_is_the_encoder_final_state(cell, bidirectional):
    """``last`` over a real (Bi)RNN's outputs equals the final state the encoder reports,
    and each sequence's result equals encoding it alone, without padding."""
    torch.manual_seed(0)
    encoder = RNNEncoder(3, 4, cell=cell, num_layers=2, bidirectional=bidirectional).double().eval()
    lengths = torch.tensor(LENGTHS)
    x = torch.randn(len(LENGTHS), max(LENGTHS), 3, dtype=torch.float64)
    mask = torch.arange(max(LENGTHS))[None, :] < lengths[:, None]
    outputs, finals = encoder(x, lengths)
    pooling = LastPooling(encoder.output_size, 2 if bidirectional else 1)
    pooled = pooling(outputs, mask)
    torch.testing.assert_close(pooled, encoder.final_output(finals))
    for b, n in enumerate(LENGTHS):
        alone, _ = encoder(x[b : b + 1, :n], lengths[b : b + 1])
        torch.testing.assert_close(pooled[b], pooling(alone, mask[b : b + 1, :n])[0])


def test_attention_weights_are_a_distribution_over_real_tokens():
    torch.manual_seed(0)
    pooling = AttentionPooling(WIDTH, attention_size=3).double()
    states, mask = _ragged(5.0)
    weights = pooling.weights(states, mask)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(LENGTHS), dtype=torch.float64))
    assert weights[2, 0] == 1.0  # a one-token sequence attends to its token
    assert pooling.project.out_features == 3


def test_gradients_never_reach_padding():
    torch.manual_seed(0)
    for name in ("last", "mean", "max", "attention"):
        states, mask = _ragged(0.5)
        states.requires_grad_(True)
        registry.poolings.build(name, WIDTH, directions=2).double()(states, mask).sum().backward()
        assert torch.equal(states.grad[~mask], torch.zeros_like(states.grad[~mask])), name


def test_registry_holds_the_builtins_and_plugins():
    for name, cls in (("last", LastPooling), ("mean", MeanPooling), ("max", MaxPooling), ("attention", AttentionPooling)):
        assert registry.poolings.get(name) is cls
        assert registry.poolings.provenance(name).builtin
        assert registry.poolings.build(name, 4).provenance.name == name
    with pytest.raises(UnknownComponentError, match="Did you mean 'mean'"):
        registry.poolings.build("meen", 4)
    with pytest.raises(ConfigError, match="directions"):
        LastPooling(5, directions=2)

    @registry.poolings.register("test-first")
    class FirstPooling(Pooling):
        def forward(self, states, mask):
            return states[:, 0]

    states, mask = _ragged(0.0)
    assert torch.equal(registry.poolings.build("test-first", WIDTH)(states, mask), states[:, 0])
    assert registry.poolings.provenance("test-first").distribution is None  # local, not seqlearn's
