"""Label-smoothed cross-entropy: from logits, and fused with the output layer.

:func:`label_smoothed_nll` takes logits ``(n, V)``.  :func:`linear_label_smoothed_nll`
takes the hidden vectors ``(n, H)`` the output layer reads and computes the same loss with
the output layer, softmax and gradient fused, a block of rows at a time: the ``(n, V)``
logits, probabilities and their gradient are never held whole.  On a CPU each of those is
tens of megabytes that the allocator maps fresh from the kernel (page faults) and that
spill the caches, which cost more than the matrix products around them.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["label_smoothed_nll", "linear_label_smoothed_nll"]

#: rows of logits held at once by :func:`linear_label_smoothed_nll`
BLOCK_ROWS = 256


def label_smoothed_nll(
    logits: torch.Tensor, gold: torch.Tensor, smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross-entropy and summed NLL of ``logits`` ``(n, V)`` against
    ``gold`` ``(n,)`` (padding already removed).

    The target distribution puts ``1 - smoothing`` on the gold token and spreads
    ``smoothing`` uniformly over the tokens that can be predicted at all -- every token whose
    logit is finite (as ``F.cross_entropy(label_smoothing=)`` does when all are).
    """
    log_probs = torch.log_softmax(logits, -1, dtype=torch.promote_types(logits.dtype, torch.float32))
    nll = -log_probs.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
    if smoothing == 0.0:
        total = nll.sum()
        return total, total
    possible = torch.isfinite(log_probs)
    uniform = -log_probs.masked_fill(~possible, 0.0).sum(-1) / possible.sum(-1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).sum(), nll.sum()


def linear_label_smoothed_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    gold: torch.Tensor,
    smoothing: float,
    never: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`label_smoothed_nll` of the logits ``hidden @ weight.T + bias`` with the
    columns ``never`` set to ``-inf``, without materializing them.

    hidden: ``(n, H)``; weight: ``(V, H)``; bias: ``(V,)`` or None; gold: ``(n,)`` long;
    never: ``(k,)`` long, tokens that can never be predicted (``<pad>``, ``<s>``).
    Returns the summed loss (differentiable in ``hidden``, ``weight`` and ``bias``) and the
    summed NLL (not differentiable; for logging and perplexity).

    The gradient is computed with the loss, block by block, whenever one of the inputs
    requires it; backward only scales it.  Under autocast the matrix products run in the
    autocast dtype and the softmax in float32.
    """
    if never is None:
        never = gold.new_empty(0)
    return _LinearLabelSmoothedNLL.apply(hidden, weight, bias, gold, never, float(smoothing))


class _LinearLabelSmoothedNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                gold: torch.Tensor, never: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        wants = ctx.needs_input_grad[:3]
        autocast = torch.is_autocast_enabled(hidden.device.type)
        never = never.unique()
        possible = weight.size(0) - never.numel()
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # of the softmax: float32 at least
        loss, nll = hidden.new_zeros((), dtype=dtype), hidden.new_zeros((), dtype=dtype)
        grad_hidden = torch.empty_like(hidden) if wants[0] else None
        grad_weight = grad_bias = None  # the first block's products, then accumulated into
        for start in range(0, hidden.size(0), BLOCK_ROWS):
            rows = slice(start, start + BLOCK_ROWS)
            h, g = hidden[rows], gold[rows, None]
            z = (h @ weight.t()).to(dtype)  # logits (rows, V), then reused in place
            if bias is not None:
                z += bias
            if smoothing:
                predictable = z.sum(1) - z.index_select(1, never).sum(1)
            z.index_fill_(1, never, float("-inf"))
            top = z.amax(1, keepdim=True)
            z -= top
            gold_shifted = z.gather(1, g).squeeze(1)
            z.exp_()
            mass = z.sum(1, keepdim=True)
            log_mass = mass.log().squeeze(1)
            block_nll = log_mass - gold_shifted
            nll += block_nll.sum()
            if smoothing:
                # -mean log-probability over the predictable tokens
                block_uniform = log_mass + top.squeeze(1) - predictable / possible
                loss += ((1.0 - smoothing) * block_nll + smoothing * block_uniform).sum()
            if any(wants):
                z /= mass  # softmax; the gradient is softmax minus the target distribution
                z.scatter_add_(1, g, z.new_full(g.shape, smoothing - 1.0))
                if smoothing:
                    z -= smoothing / possible
                    z.index_fill_(1, never, 0.0)
                if wants[0]:
                    grad_hidden[rows] = z.to(weight.dtype) @ weight
                if wants[1] and autocast:  # an in-place product would skip autocast
                    block = (z.t() @ h).to(dtype)
                    grad_weight = block if grad_weight is None else grad_weight.add_(block)
                elif wants[1] and grad_weight is None:
                    grad_weight = z.t() @ h.to(dtype)
                elif wants[1]:
                    grad_weight.addmm_(z.t(), h.to(dtype))
                if wants[2]:
                    grad_bias = z.sum(0) if grad_bias is None else grad_bias.add_(z.sum(0))
        if not smoothing:
            loss = nll.clone()
        ctx.mark_non_differentiable(nll)
        ctx.grads = [grad_hidden, grad_weight, grad_bias]
        ctx.dtypes = [t.dtype if t is not None else None for t in (hidden, weight, bias)]
        return loss, nll

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_nll: torch.Tensor) -> tuple[Any, ...]:
        if ctx.grads is None:
            raise RuntimeError("linear_label_smoothed_nll computes its gradient once; "
                               "backward through it a second time is not supported")
        # scaled in place: the gradients belong to this call alone, and the parameters' .grad can take them over
        grads = [None if g is None else g.mul_(grad_loss).to(dtype) for g, dtype in zip(ctx.grads, ctx.dtypes)]
        ctx.grads = None
        return (*grads, None, None, None)
