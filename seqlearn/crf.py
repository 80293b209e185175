"""A linear-chain conditional random field over per-token tag scores.

Shapes: ``emissions (batch, time, num_tags)``, ``tags (batch, time)`` long,
``mask (batch, time)`` bool, True on real tokens.  Batches are always batch-first.
The mask must be a prefix mask (each row ``True...True False...False``) whose first
column is all True; anything else raises :class:`~seqlearn.errors.ConfigError`.
``mask=None`` means every position is real.

Parameters are named like pytorch-crf's, so state dicts load both ways:
``transitions[from, to]``, ``start_transitions``, ``end_transitions``.

How it is fast: the log-partition runs the forward recursion in probability space,
rescaled at each step, so a step is one small ``(batch, K) @ (K, K)`` matrix product
instead of a logsumexp over a ``(batch, K, K)`` tensor; the recursion runs in float64
(whatever the emissions' dtype), which leaves ~700 nats of headroom per step.  The
backward pass is written by hand: the gradient of log Z is the forward-backward
marginals (per-token for the emissions, pairwise summed over positions for the
transitions), obtained with one backward recursion and one ``(K, N) @ (N, K)`` product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .errors import ConfigError, DataError
from .tag_schemes import allowed_transitions, canonical_scheme

_REDUCTIONS = ("none", "sum", "mean")
_WORK_DTYPE = torch.float64  # the scaled recursions run in float64 (see the module docstring)


class ViterbiResult(NamedTuple):
    """The ``k`` best tag paths of each sequence, best first.

    tags: ``(batch, k, time)`` long; -1 past a sequence's length and in rows of paths that
    do not exist (a sequence has fewer than ``k`` allowed paths).
    scores: ``(batch, k)`` unnormalized path scores; ``-inf`` for paths that do not exist.
    Subtract :meth:`CRF.log_partition` to get log-probabilities.
    """

    tags: Tensor
    scores: Tensor


def _check_mask(emissions: Tensor, mask: Tensor | None) -> Tensor:
    """Validate shapes and the prefix mask; return the mask as bool ``(batch, time)``."""
    if emissions.dim() != 3:
        raise ConfigError(f"CRF emissions must be (batch, time, num_tags), got shape {tuple(emissions.shape)}")
    batch, time, _ = emissions.shape
    if time == 0:
        raise ConfigError("CRF emissions have no time steps")
    if mask is None:
        return torch.ones(batch, time, dtype=torch.bool, device=emissions.device)
    if mask.shape != (batch, time):
        raise ConfigError(f"CRF mask must have shape {(batch, time)}, got {tuple(mask.shape)}")
    mask = mask.bool()
    # one host sync for both checks; a prefix mask never goes from False back to True
    bad = ~mask[:, 0].all() | (mask[:, 1:] & ~mask[:, :-1]).any()
    if bool(bad):
        raise ConfigError("CRF mask must be a prefix mask (True on the first `length` positions of each "
                          "row, then False) with the first column all True (no empty sequences)")
    return mask


# -- log Z and the negative log-likelihood, with a hand-written backward ---------------------


def _work_copies(emissions: Tensor, mask: Tensor, *potentials: Tensor) -> tuple[Tensor, ...]:
    """Time-major float64 emissions with 0 at padding (a copy: the recursions work in place;
    per-step slices of it are contiguous), and float64 potentials."""
    batch, time, num_tags = emissions.shape
    em = torch.empty(time, batch, num_tags, dtype=_WORK_DTYPE, device=emissions.device)
    em.copy_(emissions.detach().transpose(0, 1)).masked_fill_(~mask.t().unsqueeze(-1), 0.0)
    return (em, *(p.detach().to(_WORK_DTYPE) for p in potentials))


def _batch_major(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``(time, batch, K)`` -> a contiguous ``(batch, time, K)`` of ``dtype``, in one copy."""
    time, batch, num_tags = x.shape
    return torch.empty(batch, time, num_tags, dtype=dtype, device=x.device).copy_(x.transpose(0, 1))


@dataclass
class _Lattice:
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
    shifts = [p.amax() for p in (start, trans, end)]
    s, E, e = (torch.exp(p - c) for p, c in zip((start, trans, end), shifts))

    alpha = torch.empty_like(f)
    z = torch.empty(time, batch, 1, dtype=_WORK_DTYPE, device=f.device)
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
    log_z = steps + torch.log(z_end) + shifts[0] + shifts[2] + last.to(_WORK_DTYPE) * shifts[1]
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


class _NegLogLikelihood(torch.autograd.Function):
    """log Z - score(gold) per sequence, or log Z alone when there are no gold tags.

    The backward is the classic identity: d/d(score of a part) = marginal - gold count, so
    the emissions get ``gamma - one_hot(gold)`` and the transitions the summed pairwise
    marginals minus the gold transition counts.
    """

    @staticmethod
    def forward(ctx, emissions, tags, mask, start, trans, end):
        em, start64, trans64, end64 = _work_copies(emissions, mask, start, trans, end)
        gold = None
        if tags is not None:
            gold_t = tags.masked_fill(~mask, 0).t()
            gold = _Gold(gold_t, gold_t.gather(0, (mask.sum(1) - 1).unsqueeze(0)).squeeze(0))
            steps = em.gather(2, gold_t.unsqueeze(-1)).sum((0, 2))  # padding holds 0
            moves = trans64[gold_t[:-1], gold_t[1:]].masked_fill_(~mask.t()[1:], 0.0).sum(0)
            gold_score = steps + moves + start64[gold_t[0]] + end64[gold.last]
        lat = _scaled_forward(em, mask, start64, trans64, end64)
        ctx.lattice, ctx.gold = lat, gold
        ctx.dtypes = (emissions.dtype, start.dtype, trans.dtype, end.dtype)
        nll = lat.log_z if gold is None else lat.log_z - gold_score
        return nll.to(emissions.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        lat, gold = ctx.lattice, ctx.gold
        w = grad.to(_WORK_DTYPE)  # d loss / d nll of each sequence
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
    return _NegLogLikelihood.apply(emissions, None, mask, start, transitions, end)


def neg_log_likelihood(emissions: Tensor, tags: Tensor, mask: Tensor, start: Tensor, transitions: Tensor,
                       end: Tensor) -> Tensor:
    """``log Z - score(tags)`` of each sequence, ``(batch,)``, differentiable (first order) in
    the emissions and potentials; tags at padded positions are ignored.  The gold paths
    must have finite scores (no forbidden transition)."""
    return _NegLogLikelihood.apply(emissions, tags, mask, start, transitions, end)


def marginals(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """P(tag k at position t) ``(batch, time, K)``, 0 at padding; not differentiable."""
    em, start, transitions, end = _work_copies(emissions, mask, start, transitions, end)
    lat = _scaled_forward(em, mask, start, transitions, end)
    gamma, _ = _scaled_backward(lat, torch.ones_like(lat.z_end))
    return _batch_major(gamma, emissions.dtype)


# -- Viterbi ------------------------------------------------------------------------------


def viterbi(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor,
            top_k: int = 1) -> ViterbiResult:
    """The ``top_k`` best paths of each sequence (see :class:`ViterbiResult`).

    Runs batched in log space.  Each step keeps, for every tag, the scores of the ``k``
    best partial paths ending there, ``(batch, K, k)``.  The steps run on past each
    sequence's end (cheaper than masking every step); the final score is then read at each
    sequence's last position, and the backtrace stands still on padded steps.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    batch, time, num_tags = emissions.shape
    k = top_k
    # float64: sums of float32 scores without rounding trouble, and on CPU its small
    # max-reductions are several times faster than float32's
    em, start, transitions, end = _work_copies(emissions, mask, start, transitions, end)
    em = em.unsqueeze(-1)  # (time, batch, K, 1)
    trans_t = transitions.t().contiguous()  # [to, from]
    scores = torch.empty(time, batch, num_tags, k, dtype=em.dtype, device=em.device)
    scores[0, :, :, 1:] = float("-inf")
    scores[0, :, :, 0] = start + em[0, :, :, 0]
    # candidates (batch, K_to, K_from * k): each kept path extended by each next tag
    cand = torch.empty(batch, num_tags, num_tags, k, dtype=em.dtype, device=em.device)
    flat_cand = cand.view(batch, num_tags, num_tags * k)
    backptr = torch.empty(time, batch, num_tags, k, dtype=torch.long, device=em.device) if k > 1 else None
    # per-step views made once: indexing inside the loop costs as much as the arithmetic
    step_scores, step_em = scores.unbind(0), em.unbind(0)
    step_prev = scores.unsqueeze(2).unbind(0)  # (batch, 1, K_from, k), broadcast over K_to
    trans_b = trans_t.view(1, num_tags, num_tags, 1)
    for t in range(1, time):
        torch.add(step_prev[t - 1], trans_b, out=cand)
        if k == 1:  # the max alone is cheaper than max with indices; the backtrace redoes it for one tag
            torch.amax(flat_cand, -1, keepdim=True, out=step_scores[t])
        else:
            torch.topk(flat_cand, k, -1, out=(step_scores[t], backptr[t]))
        step_scores[t].add_(step_em[t])

    last = mask.sum(1) - 1
    final = scores[last, torch.arange(batch, device=em.device)] + end.view(1, num_tags, 1)
    best, state = final.view(batch, num_tags * k).topk(k, dim=1)  # flat states tag * k + rank, (batch, k)
    step_mask = mask.t().unsqueeze(-1).unbind(0)
    # k == 1 kept no backpointers: the backtrace redoes the max for the one tag it is at
    step_from = scores.squeeze(-1).unbind(0) if k == 1 else backptr.view(time, batch, num_tags * k).unbind(0)
    states = [state]
    for t in range(time - 1, 0, -1):
        if k == 1:
            from_scores = torch.index_select(trans_t, 0, state.view(-1)).add_(step_from[t - 1])
            prev = torch.argmax(from_scores, -1, keepdim=True)
        else:
            prev = step_from[t].gather(1, state)
        state = torch.where(step_mask[t], prev, state)
        states.append(state)
    paths = torch.stack(states[::-1], -1).view(batch, -1, time)
    paths = torch.div(paths, k, rounding_mode="floor")
    keep = mask.unsqueeze(1) & torch.isfinite(best).unsqueeze(-1)
    return ViterbiResult(paths.masked_fill(~keep, -1), best.to(emissions.dtype))


# -- the module ---------------------------------------------------------------------------


def _tag_names(tag_names: Sequence[str] | object) -> tuple[str, ...]:
    """Accept a list of tag strings or a Vocab (anything with ``itos``)."""
    return tuple(getattr(tag_names, "itos", tag_names))


class CRF(nn.Module):
    """Linear-chain CRF, ``batch_first`` always.

    ``CRF(num_tags)`` is unconstrained.  ``CRF(num_tags, scheme="BIO", tag_names=tag_vocab)``
    forbids the transitions the scheme forbids (see
    :func:`seqlearn.tag_schemes.allowed_transitions`; ``tag_names`` is the list of tag
    strings in index order, or a Vocab): decoding and marginals always obey them, and with
    ``constrain_training=True`` (the default) so does the partition function, so that
    training and decoding see the same distribution.  Specials such as ``<pad>`` in
    ``tag_names`` are never predicted.

    Calls:

    * ``crf(emissions, tags, mask=None, reduction="mean")`` -> negative log-likelihood;
      ``"none"`` gives ``(batch,)``, ``"sum"`` their sum, ``"mean"`` their mean over the
      sequences of the batch (not over tokens).
    * ``crf.decode(emissions, mask=None, top_k=1)`` -> Python lists (see :meth:`decode`);
      :meth:`viterbi` gives the same as tensors with path scores.
    * ``crf.marginals(emissions, mask=None)`` -> ``(batch, time, num_tags)`` probabilities.
    * ``crf.log_partition(emissions, mask=None)`` -> ``(batch,)`` log Z.

    A gold path that breaks the scheme has probability 0 under a constrained CRF, so the
    forward call raises :class:`~seqlearn.errors.DataError` naming the batch row, position
    and tags; repair such data with :func:`seqlearn.tag_schemes.convert_tags` or train with
    ``constrain_training=False``.

    The log-partition's backward is hand-written (first order only: no double backward).
    """

    def __init__(self, num_tags: int, scheme: str | None = None, tag_names: Sequence[str] | object = None,
                 constrain_training: bool = True) -> None:
        super().__init__()
        if num_tags < 1:
            raise ConfigError(f"CRF needs at least one tag, got num_tags={num_tags}")
        self.num_tags = num_tags
        self.scheme = None if scheme is None else canonical_scheme(scheme)
        self.tag_names = None if tag_names is None else _tag_names(tag_names)
        self.constrain_training = constrain_training
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()

        if self.tag_names is not None and len(self.tag_names) != num_tags:
            raise ConfigError(f"CRF got {len(self.tag_names)} tag names for num_tags={num_tags}")
        if self.scheme is not None and self.tag_names is None:
            raise ConfigError(f"CRF(scheme={scheme!r}) needs tag_names (the tag strings in index order) "
                              "to derive its transition constraints")
        # (K + 2, K + 2): rows/columns K and K + 1 are the sentence start and end
        allowed = torch.ones(num_tags + 2, num_tags + 2, dtype=torch.bool)
        if self.scheme is not None:
            allowed.zero_()
            pairs = torch.tensor(allowed_transitions(self.scheme, self.tag_names), dtype=torch.long)
            if len(pairs):
                allowed[pairs[:, 0], pairs[:, 1]] = True
        # rebuilt from (scheme, tag_names), so not in the state dict: it stays pytorch-crf's
        self.register_buffer("allowed_transitions", allowed[:num_tags, :num_tags].clone(), persistent=False)
        self.register_buffer("allowed_start", allowed[num_tags, :num_tags].clone(), persistent=False)
        self.register_buffer("allowed_end", allowed[:num_tags, num_tags + 1].clone(), persistent=False)

    def reset_parameters(self) -> None:
        """Uniform in [-0.1, 0.1], as pytorch-crf."""
        for p in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(p, -0.1, 0.1)

    def extra_repr(self) -> str:
        extra = f", scheme={self.scheme!r}, constrain_training={self.constrain_training}" if self.scheme else ""
        return f"num_tags={self.num_tags}{extra}"

    def potentials(self, constrained: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """``(start (K,), transitions (K, K), end (K,))`` with forbidden entries ``-inf`` when
        ``constrained`` and the CRF has a scheme."""
        if not constrained or self.scheme is None:
            return self.start_transitions, self.transitions, self.end_transitions
        ninf = float("-inf")
        return (self.start_transitions.masked_fill(~self.allowed_start, ninf),
                self.transitions.masked_fill(~self.allowed_transitions, ninf),
                self.end_transitions.masked_fill(~self.allowed_end, ninf))

    def _check(self, emissions: Tensor, mask: Tensor | None) -> Tensor:
        mask = _check_mask(emissions, mask)
        if emissions.shape[-1] != self.num_tags:
            raise ConfigError(f"CRF has {self.num_tags} tags but emissions have {emissions.shape[-1]}")
        return mask

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None,
                reduction: str = "mean") -> Tensor:
        """Negative log-likelihood of the gold ``tags`` ``(batch, time)``.

        reduction: ``"none"`` -> ``(batch,)``; ``"sum"``; ``"mean"`` (default) -> mean over the
        sequences in the batch.  Tags at padded positions are ignored (any value).
        """
        if reduction not in _REDUCTIONS:
            raise ConfigError(f"CRF reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        mask = self._check(emissions, mask)
        if tags.shape != mask.shape:
            raise ConfigError(f"CRF tags must have shape {tuple(mask.shape)}, got {tuple(tags.shape)}")
        tags = tags.masked_fill(~mask, 0)
        if bool(((tags < 0) | (tags >= self.num_tags)).any()):
            raise ConfigError(f"CRF tags must be in 0..{self.num_tags - 1} at unpadded positions")
        constrained = self.constrain_training and self.scheme is not None
        if constrained:
            self._check_gold(tags, mask)
        nll = neg_log_likelihood(emissions, tags, mask, *self.potentials(constrained))
        if reduction == "none":
            return nll
        return nll.sum() if reduction == "sum" else nll.mean()

    def _check_gold(self, tags: Tensor, mask: Tensor) -> None:
        """Raise DataError if a gold path uses a transition the scheme forbids."""
        last = tags.gather(1, mask.sum(1, keepdim=True) - 1).squeeze(1)
        ok_moves = self.allowed_transitions[tags[:, :-1], tags[:, 1:]] | ~mask[:, 1:]
        ok = torch.cat([self.allowed_start[tags[:, :1]], ok_moves, self.allowed_end[last].unsqueeze(1)], 1)
        if bool(ok.all()):
            return
        row, pos = (int(i) for i in (~ok).nonzero()[0])
        seq = [self.tag_names[i] for i in tags[row, : int(mask[row].sum())].tolist()]
        pos = min(pos, len(seq))  # the last column is the move to <end>
        prev = "<start>" if pos == 0 else seq[pos - 1]
        cur = "<end>" if pos == len(seq) else seq[pos]
        raise DataError(f"gold tags of batch row {row} break the {self.scheme} scheme at position {pos} "
                        f"({prev} -> {cur}); repair them with seqlearn.tag_schemes.convert_tags(tags, "
                        f"{self.scheme!r}, {self.scheme!r}) or use CRF(..., constrain_training=False)")

    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log Z ``(batch,)`` of the constrained model (as used for decoding)."""
        return log_partition(emissions, self._check(emissions, mask), *self.potentials())

    def marginals(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """P(tag k at position t) ``(batch, time, num_tags)``: each real token's row sums to 1,
        padded positions are 0.  Constrained like decoding; not differentiable."""
        return marginals(emissions, self._check(emissions, mask), *self.potentials())

    def viterbi(self, emissions: Tensor, mask: Tensor | None = None, top_k: int = 1) -> ViterbiResult:
        """The ``top_k`` best paths and their scores as tensors (see :class:`ViterbiResult`)."""
        return viterbi(emissions, self._check(emissions, mask), *self.potentials(), top_k=top_k)

    def decode(self, emissions: Tensor, mask: Tensor | None = None,
               top_k: int = 1) -> list[list[int]] | list[list[list[int]]]:
        """Best tag paths as Python lists, each as long as its sequence.

        ``top_k == 1``: one path per sequence, ``list[list[int]]`` (like pytorch-crf).
        ``top_k > 1``: per sequence, up to ``top_k`` paths best first, ``list[list[list[int]]]``
        (fewer when the sequence has fewer allowed paths; none, or an empty path for
        ``top_k == 1``, only when the scheme allows no path at all).  Scores: :meth:`viterbi`.
        """
        mask = self._check(emissions, mask)
        result = viterbi(emissions, mask, *self.potentials(), top_k=top_k)
        lengths = mask.sum(1).tolist()
        exists = torch.isfinite(result.scores).tolist()
        rows = result.tags.tolist()
        found = [[p[:n] for p, ok in zip(paths, oks) if ok] for paths, oks, n in zip(rows, exists, lengths)]
        return [paths[0] if paths else [] for paths in found] if top_k == 1 else found
