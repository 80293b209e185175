"""A linear-chain conditional random field over per-token tag scores.

Shapes: ``emissions (batch, time, num_tags)``, ``tags (batch, time)`` long,
``mask (batch, time)`` bool, True on real tokens.  Batches are always batch-first.
The mask must be a prefix mask (each row ``True...True False...False``) whose first
column is all True; anything else raises :class:`~seqlearn.errors.ConfigError`.
``mask=None`` means every position is real.

Parameters are named like pytorch-crf's, so state dicts load both ways:
``transitions[from, to]``, ``start_transitions``, ``end_transitions``.

The log-partition, the negative log-likelihood and the marginals (the forward-backward
algorithm, with a hand-written backward) live in :mod:`seqlearn.crf_forward_backward`;
the Viterbi search here.  :class:`CRF` compiles with ``torch.jit.script``, as
pytorch-crf's does: the compiled module gives the same negative log-likelihood,
decoding, marginals and log-partition (without gradients: the backward is Python)::

    scripted = torch.jit.script(CRF(5))
    scripted.decode(emissions, mask)
"""
# no `from __future__ import annotations`: TorchScript resolves ViterbiResult's field types at run time
from typing import List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .crf_forward_backward import log_partition, marginals, neg_log_likelihood
from .errors import ConfigError, DataError
from .tag_schemes import allowed_transitions, canonical_scheme

__all__ = ["CRF", "ViterbiResult", "viterbi", "log_partition", "marginals", "neg_log_likelihood"]


class ViterbiResult(NamedTuple):
    """The ``k`` best tag paths of each sequence, best first.

    tags: ``(batch, k, time)`` long; -1 past a sequence's length and in rows of paths that
    do not exist (a sequence has fewer than ``k`` allowed paths).
    scores: ``(batch, k)`` unnormalized path scores; ``-inf`` for paths that do not exist.
    Subtract :meth:`CRF.log_partition` to get log-probabilities.
    """

    tags: Tensor
    scores: Tensor


def _check_mask(emissions: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Validate shapes and the prefix mask; return the mask as bool ``(batch, time)``."""
    if emissions.dim() != 3:
        raise ConfigError(f"CRF emissions must be (batch, time, num_tags), got shape {list(emissions.shape)}")
    batch, time, num_tags = emissions.shape
    if time == 0:
        raise ConfigError("CRF emissions have no time steps")
    if mask is None:
        return torch.ones(batch, time, dtype=torch.bool, device=emissions.device)
    if list(mask.shape) != [batch, time]:
        raise ConfigError(f"CRF mask must have shape {[batch, time]}, got {list(mask.shape)}")
    mask = mask.to(torch.bool)
    # one host sync for both checks; a prefix mask never goes from False back to True
    bad = ~mask[:, 0].all() | (mask[:, 1:] & ~mask[:, :-1]).any()
    if bool(bad):
        raise ConfigError("CRF mask must be a prefix mask (True on the first `length` positions of each "
                          "row, then False) with the first column all True (no empty sequences)")
    return mask


def viterbi(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor,
            top_k: int = 1) -> ViterbiResult:
    """The ``top_k`` best paths of each sequence (see :class:`ViterbiResult`) under the
    potentials ``start (K,)``, ``transitions (K, K)`` and ``end (K,)`` (forbidden entries
    ``-inf``); ``mask`` must already be a valid bool prefix mask.

    Runs batched in float64 log space (sums of float32 scores without rounding trouble;
    on CPU its small max-reductions are faster than float32's).  Each step keeps, for every
    tag, the scores of the ``k`` best partial paths ending there, ``(batch, K, k)``.
    Compiles with ``torch.jit.script`` (the exported ``viterbi`` graph is this function).
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    batch, time, num_tags = emissions.shape
    k = top_k
    # time-major, so each step reads a contiguous (batch, K, 1) slice
    step_em = emissions.transpose(0, 1).contiguous().to(torch.float64).unsqueeze(-1).unbind(0)
    trans = transitions.to(torch.float64)
    trans_b = trans.t().reshape(1, num_tags, num_tags, 1)  # [_, to, from, _]
    score = start.to(torch.float64).reshape(1, num_tags, 1) + step_em[0]  # (batch, K, k)
    if k > 1:
        score = torch.cat([score, torch.full((batch, num_tags, k - 1), float("-inf"), dtype=score.dtype,
                                             device=score.device)], -1)
    scores: List[Tensor] = [score]
    backpointers: List[Tensor] = []
    # the steps run on past each sequence's end (cheaper than masking every step); the final
    # scores are read at each one's last position, and the backtrace stands still on padding
    for t in range(1, time):
        # candidates (batch, K_to, K_from * k): each kept path extended by each next tag
        cand = (score.unsqueeze(1) + trans_b).reshape(batch, num_tags, num_tags * k)
        if k == 1:  # the max alone is cheaper than max with indices; the backtrace redoes it for one tag
            score = cand.amax(-1, keepdim=True).add_(step_em[t])
        else:
            best, pointer = cand.topk(k, -1)
            score = best.add_(step_em[t])
            backpointers.append(pointer)
        scores.append(score)

    last = (mask.sum(1) - 1).reshape(1, batch, 1, 1).expand(1, batch, num_tags, k)
    final = torch.stack(scores).gather(0, last).reshape(batch, num_tags, k)
    final = (final + end.to(torch.float64).reshape(1, num_tags, 1)).reshape(batch, num_tags * k)
    best_scores, state = final.topk(k, 1)  # flat states tag * k + rank, (batch, k)
    states: List[Tensor] = [state]
    trans_to = trans.t().contiguous()  # [to, from]
    real = mask.t().unsqueeze(-1).unbind(0)  # (batch, 1) per step
    for t in range(time - 1, 0, -1):
        if k == 1:
            from_scores = trans_to.index_select(0, state.reshape(-1)).add_(scores[t - 1].reshape(batch, num_tags))
            prev = from_scores.argmax(-1, keepdim=True)
        else:
            prev = backpointers[t - 1].reshape(batch, num_tags * k).gather(1, state)
        state = torch.where(real[t], prev, state)
        states.append(state)
    # stacked backwards, then flipped (ONNX has no in-place list reversal)
    paths = torch.div(torch.stack(states, -1).flip(-1), k, rounding_mode="floor")
    keep = mask.unsqueeze(1) & torch.isfinite(best_scores).unsqueeze(-1)
    return ViterbiResult(paths.masked_fill(~keep, -1), best_scores.to(emissions.dtype))


def _tag_names(tag_names: Union[Sequence[str], object]) -> tuple[str, ...]:
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
      sequences of the batch (not over tokens), ``"token_mean"`` their sum divided by the
      number of real tokens (as pytorch-crf's).
    * ``crf.decode(emissions, mask=None, top_k=1)`` -> Python lists (see :meth:`decode`);
      :meth:`viterbi` gives the same as tensors with path scores.
    * ``crf.marginals(emissions, mask=None)`` -> ``(batch, time, num_tags)`` probabilities.
    * ``crf.log_partition(emissions, mask=None)`` -> ``(batch,)`` log Z.

    A gold path that breaks the scheme has probability 0 under a constrained CRF, so the
    forward call raises :class:`~seqlearn.errors.DataError` naming the batch row, position
    and tags; repair such data with :func:`seqlearn.tag_schemes.convert_tags` or train with
    ``constrain_training=False``.

    The log-partition's backward is hand-written (first order only: no double backward).
    ``torch.jit.script(crf)`` compiles all of the above (see the module docstring).
    """

    scheme: Optional[str]

    def __init__(self, num_tags: int, scheme: Optional[str] = None,
                 tag_names: Union[Sequence[str], object] = None, constrain_training: bool = True) -> None:
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

    @torch.jit.export
    def potentials(self, constrained: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """``(start (K,), transitions (K, K), end (K,))`` with forbidden entries ``-inf`` when
        ``constrained`` and the CRF has a scheme."""
        if not constrained or self.scheme is None:
            return self.start_transitions, self.transitions, self.end_transitions
        ninf = float("-inf")
        return (self.start_transitions.masked_fill(~self.allowed_start, ninf),
                self.transitions.masked_fill(~self.allowed_transitions, ninf),
                self.end_transitions.masked_fill(~self.allowed_end, ninf))

    def _check(self, emissions: Tensor, mask: Optional[Tensor]) -> Tensor:
        mask = _check_mask(emissions, mask)
        if emissions.shape[-1] != self.num_tags:
            raise ConfigError(f"CRF has {self.num_tags} tags but emissions have {emissions.shape[-1]}")
        return mask

    def forward(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None,
                reduction: str = "mean") -> Tensor:
        """Negative log-likelihood of the gold ``tags`` ``(batch, time)``.

        reduction: ``"none"`` -> ``(batch,)``; ``"sum"``; ``"mean"`` (default) -> mean over the
        sequences in the batch; ``"token_mean"`` -> the sum divided by the number of real
        tokens.  Tags at padded positions are ignored (any value).
        """
        reductions = ["none", "sum", "mean", "token_mean"]
        if reduction not in reductions:
            raise ConfigError(f"CRF reduction must be one of {reductions}, got '{reduction}'")
        mask = self._check(emissions, mask)
        if tags.shape != mask.shape:
            raise ConfigError(f"CRF tags must have shape {list(mask.shape)}, got {list(tags.shape)}")
        tags = tags.masked_fill(~mask, 0)
        if bool(((tags < 0) | (tags >= self.num_tags)).any()):
            raise ConfigError(f"CRF tags must be in 0..{self.num_tags - 1} at unpadded positions")
        constrained = self.constrain_training and self.scheme is not None
        if constrained:
            self._check_gold(tags, mask)
        start, transitions, end = self.potentials(constrained)
        nll = neg_log_likelihood(emissions, tags, mask, start, transitions, end)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        return nll.sum() / mask.sum().to(nll.dtype)

    def _check_gold(self, tags: Tensor, mask: Tensor) -> None:
        """Raise DataError if a gold path uses a transition the scheme forbids."""
        last = tags.gather(1, mask.sum(1, keepdim=True) - 1).squeeze(1)
        ok_moves = self.allowed_transitions[tags[:, :-1], tags[:, 1:]] | ~mask[:, 1:]
        ok = torch.cat([self.allowed_start[tags[:, :1]], ok_moves, self.allowed_end[last].unsqueeze(1)], 1)
        if bool(ok.all()):
            return
        first = (~ok).nonzero()[0]
        row, pos = int(first[0]), int(first[1])
        if not torch.jit.is_scripting():  # names the tags; compiled, the CRF keeps no tag names
            raise DataError(self._broken_gold(tags, mask, row, pos))
        raise DataError(f"gold tags of batch row {row} break the {self.scheme} scheme at position {pos}")

    def _broken_gold(self, tags: Tensor, mask: Tensor, row: int, pos: int) -> str:
        seq = [self.tag_names[i] for i in tags[row, : int(mask[row].sum())].tolist()]
        pos = min(pos, len(seq))  # the last column is the move to <end>
        prev = "<start>" if pos == 0 else seq[pos - 1]
        cur = "<end>" if pos == len(seq) else seq[pos]
        return (f"gold tags of batch row {row} break the {self.scheme} scheme at position {pos} "
                f"({prev} -> {cur}); repair them with seqlearn.tag_schemes.convert_tags(tags, "
                f"{self.scheme!r}, {self.scheme!r}) or use CRF(..., constrain_training=False)")

    @torch.jit.export
    def log_partition(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """log Z ``(batch,)`` of the constrained model (as used for decoding)."""
        start, transitions, end = self.potentials(True)
        return log_partition(emissions, self._check(emissions, mask), start, transitions, end)

    @torch.jit.export
    def marginals(self, emissions: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """P(tag k at position t) ``(batch, time, num_tags)``: each real token's row sums to 1,
        padded positions are 0.  Constrained like decoding; not differentiable."""
        start, transitions, end = self.potentials(True)
        return marginals(emissions, self._check(emissions, mask), start, transitions, end)

    @torch.jit.export
    def viterbi(self, emissions: Tensor, mask: Optional[Tensor] = None, top_k: int = 1) -> ViterbiResult:
        """The ``top_k`` best paths and their scores as tensors (see :class:`ViterbiResult`)."""
        start, transitions, end = self.potentials(True)
        return viterbi(emissions, self._check(emissions, mask), start, transitions, end, top_k)

    @torch.jit.export
    def decode(self, emissions: Tensor, mask: Optional[Tensor] = None,
               top_k: int = 1) -> Union[List[List[int]], List[List[List[int]]]]:
        """Best tag paths as Python lists, each as long as its sequence.

        ``top_k == 1``: one path per sequence, ``list[list[int]]`` (like pytorch-crf).
        ``top_k > 1``: per sequence, up to ``top_k`` paths best first, ``list[list[list[int]]]``
        (fewer when the sequence has fewer allowed paths; none, or an empty path for
        ``top_k == 1``, only when the scheme allows no path at all).  Scores: :meth:`viterbi`.
        """
        mask = self._check(emissions, mask)
        start, transitions, end = self.potentials(True)
        result = viterbi(emissions, mask, start, transitions, end, top_k)
        lengths: List[int] = mask.sum(1).tolist()
        exists: List[List[bool]] = torch.isfinite(result.scores).tolist()
        rows: List[List[List[int]]] = result.tags.tolist()
        found: List[List[List[int]]] = []
        for paths, oks, n in zip(rows, exists, lengths):
            kept: List[List[int]] = []
            for path, ok in zip(paths, oks):
                if ok:
                    kept.append(path[:n])
            found.append(kept)
        if top_k > 1:
            return found
        empty: List[int] = []
        return [paths[0] if len(paths) > 0 else empty for paths in found]
