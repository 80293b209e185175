"""The CRF's forward-backward algorithm: log Z, the negative log-likelihood with a
hand-written backward, and the marginals.

Shapes as in :mod:`seqlearn.crf`: ``emissions (batch, time, K)``, ``tags (batch, time)``,
``mask (batch, time)`` a valid bool prefix mask; potentials ``start (K,)``,
``transitions (K, K)`` (``[from, to]``), ``end (K,)``, forbidden entries ``-inf``.

How it is fast: the log-partition runs the forward recursion in probability space,
rescaled at each step, so a step is one small ``(batch, K) @ (K, K)`` matrix product
instead of a logsumexp over a ``(batch, K, K)`` tensor; the recursion runs in float64
(whatever the emissions' dtype), which leaves ~700 nats of headroom per step.  The
backward pass is written by hand: the gradient of log Z is the forward-backward
marginals (per-token for the emissions, pairwise summed over positions for the
transitions), obtained with one backward recursion and one ``(K, N) @ (N, K)`` product.

Everything but the autograd Function compiles with ``torch.jit.script``: compiled, the
functions compute the same values (the backward is Python, so they carry no gradient).
"""
# no `from __future__ import annotations`: TorchScript resolves the NamedTuples' field types at run time
from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _work_copies(emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor,
                 end: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Time-major float64 emissions with 0 at padding (a copy: the recursions work in place;
    per-step slices of it are contiguous), and float64 potentials."""
    batch, time, num_tags = emissions.shape
    em = torch.empty(time, batch, num_tags, dtype=torch.float64, device=emissions.device)
    em.copy_(emissions.detach().transpose(0, 1)).masked_fill_(~mask.t().unsqueeze(-1), 0.0)
    return em, start.detach().to(torch.float64), trans.detach().to(torch.float64), end.detach().to(torch.float64)


def _batch_major(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``(time, batch, K)`` -> a contiguous ``(batch, time, K)`` of ``dtype``, in one copy."""
    time, batch, num_tags = x.shape
    return torch.empty(batch, time, num_tags, dtype=dtype, device=x.device).copy_(x.transpose(0, 1))


class _Lattice(NamedTuple):
    """The scaled forward pass of one batch (time-major, float64).

    alpha[t] are forward scores normalized to sum 1; scaled[t] = exp(emissions[t] - max) / z[t]
    with z[t] the normalizer of step t; E = exp(transitions - max).
    """

    alpha: Tensor  # (time, batch, K)
    scaled: Tensor  # (time, batch, K), 0 at padding
    mask: Tensor  # (time, batch) bool
    last: Tensor  # (batch,) index of each sequence's last position
    E: Tensor  # (K, K)
    end: Tensor  # (K,) exp(end_transitions - max)
    z_end: Tensor  # (batch,)
    log_z: Tensor  # (batch,)


def _scaled_forward(em: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor) -> _Lattice:
    """The forward recursion on ``em``, a time-major float64 copy of the emissions with 0 at
    padding, which it overwrites; the potentials are float64."""
    mask_t = mask.t()
    time, batch, _ = em.shape
    # per-row shifts keep every exp() in range; they are added back to log Z at the end
    em_max = em.amax(-1, keepdim=True)
    f = em.sub_(em_max).exp_()
    start_shift, trans_shift, end_shift = start.amax(), trans.amax(), end.amax()
    s, E, e = torch.exp(start - start_shift), torch.exp(trans - trans_shift), torch.exp(end - end_shift)

    alpha = torch.empty_like(f)
    z = torch.empty(time, batch, 1, dtype=torch.float64, device=f.device)
    u = s * f[0]
    torch.sum(u, -1, keepdim=True, out=z[0])
    torch.div(u, z[0], out=alpha[0])
    # padded steps run on (zeroed emissions) and are ignored: cheaper than masking every step
    # per-step views made once: indexing inside the loop costs as much as the arithmetic
    step_alpha, step_f, step_z = alpha.unbind(0), f.unbind(0), z.unbind(0)
    for t in range(1, time):
        torch.mm(step_alpha[t - 1], E, out=u)
        u.mul_(step_f[t])
        torch.sum(u, -1, keepdim=True, out=step_z[t])
        torch.div(u, step_z[t], out=step_alpha[t])

    last = mask.sum(1) - 1
    batch_idx = torch.arange(batch, device=f.device)
    z_end = (alpha[last, batch_idx] * e).sum(-1)
    steps = (em_max.squeeze(-1) + torch.log(z.squeeze(-1))).masked_fill(~mask_t, 0.0).sum(0)
    log_z = steps + torch.log(z_end) + start_shift + end_shift + last.to(torch.float64) * trans_shift
    # z = inf at padding makes `scaled`, hence the backward's pairwise terms, 0 there
    scaled = f.div_(z.masked_fill_(~mask_t.unsqueeze(-1), float("inf")))
    return _Lattice(alpha, scaled, mask_t, last, E, e, z_end, log_z)


def _scaled_backward(lat: _Lattice, weight: Tensor) -> tuple[Tensor, Tensor]:
    """The backward recursion, every sequence's terms multiplied by ``weight (batch,)``.

    Returns ``gamma (time, batch, K)``, the marginals P(tag k at t), and ``g (time, batch, K)``
    with ``alpha[t-1, b, i] * E[i, j] * g[t, b, j]`` = P(tag i at t-1, tag j at t); both 0 at
    padding.  Weighting the start of the recursion (it is linear) applies the upstream
    gradient without extra passes over the big tensors.
    """
    time = lat.alpha.shape[0]
    beta_last = lat.end * (weight / lat.z_end).unsqueeze(-1)  # beta at each sequence's last position
    beta = torch.empty_like(lat.alpha)
    g = torch.empty_like(lat.alpha)  # g[0] is never used
    beta[time - 1] = beta_last
    E_t = lat.E.t()
    step_beta, step_g, step_scaled = beta.unbind(0), g.unbind(0), lat.scaled.unbind(0)
    step_mask = lat.mask.unsqueeze(-1).unbind(0)
    for t in range(time - 2, -1, -1):
        torch.mul(step_scaled[t + 1], step_beta[t + 1], out=step_g[t + 1])
        torch.where(step_mask[t + 1], step_g[t + 1] @ E_t, beta_last, out=step_beta[t])
    return beta.mul_(lat.alpha).masked_fill_(~lat.mask.unsqueeze(-1), 0.0), g


class _Gold(NamedTuple):
    """Gold paths, time-major: tags ``(time, batch)`` (0 at padding) and each one's last tag."""

    tags: Tensor
    last: Tensor


def _forward(emissions: Tensor, tags: Optional[Tensor], mask: Tensor, start: Tensor, trans: Tensor,
             end: Tensor) -> tuple[Tensor, _Lattice, Optional[_Gold]]:
    """``log Z - score(tags)`` (or log Z without tags) of each sequence ``(batch,)`` in the
    emissions' dtype, with the lattice and gold paths the backward needs."""
    em, start64, trans64, end64 = _work_copies(emissions, mask, start, trans, end)
    gold: Optional[_Gold] = None
    gold_score = torch.zeros(1, dtype=torch.float64, device=em.device)  # TorchScript: bound on every path
    if tags is not None:
        gold_t = tags.masked_fill(~mask, 0).t()
        gold = _Gold(gold_t, gold_t.gather(0, (mask.sum(1) - 1).unsqueeze(0)).squeeze(0))
        steps = em.gather(2, gold_t.unsqueeze(-1)).sum((0, 2))  # padding holds 0
        moves = trans64[gold_t[:-1], gold_t[1:]].masked_fill_(~mask.t()[1:], 0.0).sum(0)
        gold_score = steps + moves + start64[gold_t[0]] + end64[gold.last]
    lat = _scaled_forward(em, mask, start64, trans64, end64)
    nll = lat.log_z if gold is None else lat.log_z - gold_score
    return nll.to(emissions.dtype), lat, gold


class _NegLogLikelihood(torch.autograd.Function):
    """log Z - score(gold) per sequence, or log Z alone when there are no gold tags.

    The backward is the classic identity: d/d(score of a part) = marginal - gold count, so
    the emissions get ``gamma - one_hot(gold)`` and the transitions the summed pairwise
    marginals minus the gold transition counts.
    """

    @staticmethod
    def forward(ctx, emissions, tags, mask, start, trans, end):
        nll, ctx.lattice, ctx.gold = _forward(emissions, tags, mask, start, trans, end)
        ctx.dtypes = (emissions.dtype, start.dtype, trans.dtype, end.dtype)
        return nll
    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        lat, gold = ctx.lattice, ctx.gold
        w = grad.to(torch.float64)  # d loss / d nll of each sequence
        gamma, g = _scaled_backward(lat, w)  # weighted by w
        num_tags = lat.E.shape[0]
        batch_idx = torch.arange(gamma.shape[1], device=gamma.device)
        if gold is not None:  # subtract the gold path's (weighted) counts
            w_steps = (w * lat.mask).unsqueeze(-1)  # (time, batch, 1)
            gamma.scatter_add_(2, gold.tags.unsqueeze(-1), -w_steps)
        d_em = d_start = d_trans = d_end = None
        if ctx.needs_input_grad[0]:
            d_em = _batch_major(gamma, ctx.dtypes[0])
        if ctx.needs_input_grad[3]:
            d_start = gamma[0].sum(0).to(ctx.dtypes[1])
        if ctx.needs_input_grad[4]:
            pair = lat.alpha[:-1].reshape(-1, num_tags).t() @ g[1:].reshape(-1, num_tags)
            d_trans = lat.E * pair
            if gold is not None:
                moves = gold.tags[:-1] * num_tags + gold.tags[1:]
                d_trans.view(-1).index_add_(0, moves.flatten(), -w_steps[1:].flatten())
            d_trans = d_trans.to(ctx.dtypes[2])
        if ctx.needs_input_grad[5]:
            # gamma at each last position already has the gold one-hot taken off
            d_end = gamma[lat.last, batch_idx].sum(0).to(ctx.dtypes[3])
        return d_em, None, None, d_start, d_trans, d_end


def log_partition(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """log Z of each sequence, ``(batch,)``, differentiable (first order) in all tensors but
    the mask.  ``mask`` must already be a valid bool prefix mask.  Forbidden transitions
    are ``-inf`` entries in the potentials."""
    if torch.jit.is_scripting():  # compiled: the same values, without the Python backward
        return _forward(emissions, None, mask, start, transitions, end)[0]
    return _NegLogLikelihood.apply(emissions, None, mask, start, transitions, end)


def neg_log_likelihood(emissions: Tensor, tags: Tensor, mask: Tensor, start: Tensor, transitions: Tensor,
                       end: Tensor) -> Tensor:
    """``log Z - score(tags)`` of each sequence, ``(batch,)``, differentiable (first order) in
    the emissions and potentials; tags at padded positions are ignored.  The gold paths
    must have finite scores (no forbidden transition)."""
    if torch.jit.is_scripting():
        return _forward(emissions, tags, mask, start, transitions, end)[0]
    return _NegLogLikelihood.apply(emissions, tags, mask, start, transitions, end)


def marginals(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """P(tag k at position t) ``(batch, time, K)``, 0 at padding; not differentiable."""
    em, start, transitions, end = _work_copies(emissions, mask, start, transitions, end)
    lat = _scaled_forward(em, mask, start, transitions, end)
    gamma, _ = _scaled_backward(lat, torch.ones_like(lat.z_end))
    return _batch_major(gamma, emissions.dtype)

