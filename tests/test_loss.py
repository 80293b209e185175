"""The fused output-layer loss against the unfused one (log_softmax over materialized logits)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqlearn import loss as loss_module
from seqlearn.loss import label_smoothed_nll, linear_label_smoothed_nll

N, H, V = 23, 6, 11


def _inputs(tied: bool = False, bias: bool = True):
    torch.manual_seed(0)
    hidden = torch.randn(N, H, dtype=torch.double, requires_grad=True)
    weight = torch.randn(V, H, dtype=torch.double, requires_grad=True)
    b = torch.randn(V, dtype=torch.double, requires_grad=True) if bias else None
    gold = torch.randint(2, V, (N,))
    return hidden, weight, b, gold


def _unfused(hidden, weight, bias, gold, smoothing, never):
    logits = F.linear(hidden, weight, bias).index_fill(1, never, float("-inf"))
    return label_smoothed_nll(logits, gold, smoothing)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("block", [4, 256])  # several blocks with a ragged last one, and one block
def test_fused_loss_and_gradients_equal_the_unfused_loss(monkeypatch, smoothing, bias, block):
    monkeypatch.setattr(loss_module, "BLOCK_ROWS", block)
    never = torch.tensor([0, 1, 1])  # a repeated index counts once
    hidden, weight, b, gold = _inputs(bias=bias)
    params = [t for t in (hidden, weight, b) if t is not None]
    expected_loss, expected_nll = _unfused(hidden, weight, b, gold, smoothing, never)
    expected_grads = torch.autograd.grad(3.0 * expected_loss, params)
    loss, nll = linear_label_smoothed_nll(hidden, weight, b, gold, smoothing, never)
    grads = torch.autograd.grad(3.0 * loss, params)  # backward scales by the incoming gradient
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(nll, expected_nll)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    assert not nll.requires_grad


def test_fused_loss_matches_torch_cross_entropy_when_every_token_is_possible():
    hidden, weight, b, gold = _inputs()
    loss, nll = linear_label_smoothed_nll(hidden, weight, b, gold, 0.2)
    logits = F.linear(hidden, weight, b)
    torch.testing.assert_close(loss, F.cross_entropy(logits, gold, label_smoothing=0.2, reduction="sum"))
    torch.testing.assert_close(nll, F.cross_entropy(logits, gold, reduction="sum"))


def test_tied_weights_accumulate_both_gradients():
    hidden, weight, b, gold = _inputs()
    emb_ids = torch.tensor([3, 4, 4])
    loss, _ = linear_label_smoothed_nll(hidden + F.embedding(emb_ids, weight).sum(), weight, b, gold, 0.1)
    (grad,) = torch.autograd.grad(loss, [weight])
    ref_loss, _ = _unfused(hidden + F.embedding(emb_ids, weight).sum(), weight, b, gold, 0.1, gold.new_empty(0))
    (expected,) = torch.autograd.grad(ref_loss, [weight])
    torch.testing.assert_close(grad, expected)


def test_without_gradients_only_the_values_are_computed():
    hidden, weight, b, gold = _inputs()
    with torch.no_grad():
        loss, nll = linear_label_smoothed_nll(hidden, weight, b, gold, 0.1)
        expected_loss, expected_nll = _unfused(hidden, weight, b, gold, 0.1, gold.new_empty(0))
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(nll, expected_nll)
    assert not loss.requires_grad


def test_a_second_backward_is_refused_rather_than_wrong():
    hidden, weight, b, gold = _inputs()
    loss, _ = linear_label_smoothed_nll(hidden, weight, b, gold, 0.1)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def test_bfloat16_autocast_keeps_the_softmax_in_float32():
    hidden, weight, b, gold = (t.detach().float() if t.is_floating_point() else t for t in _inputs())
    params = [p.requires_grad_(True) for p in (hidden, weight, b)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, nll = linear_label_smoothed_nll(hidden, weight, b, gold, 0.1)
    expected, _ = _unfused(hidden, weight, b, gold, 0.1, gold.new_empty(0))  # float32 throughout
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=0.0)
    grads = torch.autograd.grad(loss, params)
    for got, want, param in zip(grads, torch.autograd.grad(expected, params), params):
        assert got.dtype == param.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.05 * float(want.abs().max()))
