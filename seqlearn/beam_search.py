"""Beam search over the step-function protocol of :mod:`seqlearn.search`, with length
and coverage penalties, n-gram blocking and early stopping; :func:`most_probable` picks
greedy search or beam search for the options given.  Import them from
:mod:`seqlearn.search`, which holds the protocol and its conventions.
"""
from __future__ import annotations

from typing import Callable, Collection

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .search import (
    NEG_INF, Hypothesis, State, StepFn, check_lengths, first_tokens, forbid_eos, greedy_search, select_rows,
    state_batch_size, to_hypotheses,
)

#: when beam search lets a sentence go (see :func:`beam_search`)
STOPPINGS = ("exact", "heuristic", "first", "slots")


def _gnmt(length: float, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def _average(length: float, alpha: float) -> float:
    return float(length) ** alpha


LENGTH_PENALTIES: dict[str, Callable[[float, float], float]] = {"gnmt": _gnmt, "average": _average}


def length_penalty_divisor(name: str | None, length: int, alpha: float = 1.0) -> float:
    """``lp(|y|)``: a finished hypothesis scores ``sum(log p) / lp(|y|)``.

    ``"gnmt"``: ``((5 + |y|) / 6) ** alpha`` (Wu et al. 2016); ``"average"``: ``|y| ** alpha``;
    ``None``: 1.  ``|y|`` counts ``</s>`` (it is the number of scored steps).
    """
    if name is None:
        return 1.0
    if name not in LENGTH_PENALTIES:
        raise ConfigError(f"unknown length penalty {name!r}; choose one of {sorted(LENGTH_PENALTIES)} or None")
    return LENGTH_PENALTIES[name](length, alpha)


def gnmt_coverage_penalty(coverage: torch.Tensor, beta: float, src_mask: torch.Tensor | None = None) -> torch.Tensor:
    """GNMT coverage penalty ``beta * sum_i log(min(sum_j a_ji, 1))`` (<= 0, added to the score).

    coverage: ``(..., src_len)`` attention summed over target steps.
    src_mask: ``(..., src_len)`` bool, True on real source positions; padding is left out.
    Returns ``(...)``.  Coverage is floored at 1e-10 so an unattended word costs a finite amount.
    """
    logs = coverage.clamp(min=1e-10, max=1.0).log()
    if src_mask is not None:
        logs = logs.masked_fill(~src_mask, 0.0)
    return beta * logs.sum(-1)


def _block_ngrams(log_probs: torch.Tensor, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid every token that would repeat an n-gram already in the hypothesis.

    log_probs: ``(N, V)``; tokens: ``(N, t)`` the tokens produced so far.
    """
    num_rows, steps = tokens.shape
    if steps < n:
        return log_probs
    vocab = log_probs.size(1)
    grams = tokens.unfold(1, n, 1)  # (N, steps - n + 1, n)
    prefix = tokens[:, steps - n + 1:]  # the n-1 newest tokens: (N, n - 1)
    repeats = (grams[:, :, : n - 1] == prefix[:, None, :]).all(-1)
    # Non-matching n-grams point at a spare column V that is cut off again.
    banned = grams[:, :, -1].masked_fill(~repeats, vocab)
    mask = torch.zeros(num_rows, vocab + 1, dtype=torch.bool, device=log_probs.device)
    mask.scatter_(1, banned, True)
    return log_probs.masked_fill(mask[:, :vocab], NEG_INF)


class _Finished:
    """The best ``n`` finished hypotheses of each live sentence, as tensors.

    scores ``(B, n)`` final (penalized) scores, best first, -inf in empty slots;
    tokens ``(B, n, L)``; lengths ``(B, n)`` tokens kept; steps ``(B, n)`` scored steps;
    attention ``(B, n, L, S)`` or None.
    """

    _FIELDS = ("scores", "tokens", "lengths", "steps", "attention")

    def __init__(self, batch: int, n: int, max_length: int, dtype: torch.dtype, device: torch.device,
                 eos_index: int, src_len: int | None):
        self.eos_index = eos_index
        self.scores = torch.full((batch, n), NEG_INF, dtype=dtype, device=device)
        self.tokens = torch.full((batch, n, max_length), eos_index, dtype=torch.long, device=device)
        self.lengths = torch.zeros(batch, n, dtype=torch.long, device=device)
        self.steps = torch.zeros(batch, n, dtype=torch.long, device=device)
        self.attention = (None if src_len is None
                          else torch.zeros(batch, n, max_length, src_len, dtype=dtype, device=device))

    def worst(self) -> torch.Tensor:
        return self.scores[:, -1]

    def add(self, scores: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, steps: int,
            attention: torch.Tensor | None) -> None:
        """Merge candidates ``scores (B, K)``, ``tokens (B, K, steps)``, ``lengths (B, K)``,
        ``attention (B, K, steps, S)`` and keep the best ``n``."""
        n, max_length = self.tokens.shape[1:]
        pad = max_length - steps
        merged = torch.cat([self.scores, scores], 1)
        self.scores, best = merged.topk(n, dim=1)
        rows = torch.arange(best.size(0), device=best.device)[:, None]

        def pick(held: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([held, new], 1)[rows, best]

        self.tokens = pick(self.tokens, F.pad(tokens, (0, pad), value=self.eos_index))
        self.lengths = pick(self.lengths, lengths)
        self.steps = pick(self.steps, torch.full_like(lengths, steps))
        if self.attention is not None:
            self.attention = pick(self.attention, F.pad(attention, (0, 0, 0, pad)))

    def select(self, index: torch.Tensor) -> None:
        """Keep sentences ``index`` only."""
        for name in self._FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, index))

    def store(self, rows: torch.Tensor, other: "_Finished", index: torch.Tensor) -> None:
        """Copy sentences ``index`` of ``other`` into rows ``rows`` of this one."""
        for name in self._FIELDS:
            value = getattr(self, name)
            if value is not None:
                value.index_copy_(0, rows, getattr(other, name).index_select(0, index))

    def hypotheses(self) -> list[list[Hypothesis]]:
        return to_hypotheses(self.scores, self.tokens, self.lengths, self.steps, self.attention)


def beam_search(step: StepFn, state: State, *, bos_index: int | torch.Tensor, eos_index: int, beam_size: int,
                n_best: int = 1, max_length: int, min_length: int = 0, length_penalty: str | None = None,
                alpha: float = 1.0, block_ngram_repeat: int = 0, coverage_penalty: float = 0.0,
                src_mask: torch.Tensor | None = None, stopping: str = "exact", beam_refill: bool = True,
                length_penalty_offset: int = 0, per_sentence: Collection[str] = ()) -> list[list[Hypothesis]]:
    """Beam search over all sentences and beams at once (one ``step`` call per time step).

    At every step each sentence ranks its ``beam_size * V`` extensions by summed
    log-probability.  Those among its ``beam_size`` best that end in ``</s>`` (at the last
    step: all of them, cut at ``max_length``) become finished hypotheses; the ``beam_size``
    best extensions that do not end in ``</s>`` stay live.  So, without penalties,
    ``beam_size=1`` is greedy search, and a beam as wide as the search space is exhaustive search.

    ``beam_refill=False`` keeps live only the extensions among the ``beam_size`` best that do
    not end in ``</s>``: a hypothesis that finishes spends its beam slot for the next step
    (OpenNMT-py's beam), instead of the next best extension taking it.

    A finished hypothesis ``y`` scores ``sum(log p(y)) / lp(|y| + length_penalty_offset) + cp``:
    ``lp`` is :func:`length_penalty_divisor` (``length_penalty`` ``"gnmt"``, ``"average"`` or
    None, with ``alpha``; ``|y|`` counts ``</s>``; ``length_penalty_offset=1`` also counts the
    start token, as OpenNMT-py does) and ``cp`` is :func:`gnmt_coverage_penalty` with
    ``beta = coverage_penalty`` (0 turns it off; it needs attention, and ``src_mask``
    ``(batch, src_len)`` to leave padding out).  Live beams compete on log-probability alone,
    which ranks them like the final score since they all have the same length.

    A sentence leaves the batch (its state rows are dropped) once it holds ``n_best``
    finished hypotheses and no live beam can beat the worst of them: the best live
    log-probability, which can only fall, divided by the largest ``lp`` still reachable.
    ``stopping="heuristic"`` divides by the ``lp`` of the next step instead (Hugging Face's
    default): with a length penalty that grows with length, sentences leave sooner -- fewer
    steps, but a longer hypothesis that would have won can be missed.  ``stopping="first"``
    lets a sentence go as soon as its best extension ends in ``</s>`` and it holds
    ``n_best`` finished hypotheses (OpenNMT-py's rule): fewer steps still, with the same risk.
    ``stopping="slots"`` is JoeyNMT 2.x's beam: the ``beam_size`` best extensions all stay in
    the beam, those ending in ``</s>`` too, and a finished hypothesis goes on being extended
    (its continuations are never results); a sentence ends once every beam slot has held an
    extension ending in ``</s>`` at some step (a flag per slot *position*, sticky whichever
    hypothesis later moves there), and its result is the best hypothesis that finished.
    ``block_ngram_repeat = n > 0`` forbids any token that would repeat an n-gram of the
    hypothesis.  Step log-probabilities must be <= 0.

    ``per_sentence`` names state entries that every row of a sentence shares and that no
    step changes (an encoder's memory, its mask and attention keys): reordering beams within
    a sentence then leaves them alone instead of copying them every step.

    Returns one list per sentence of up to ``n_best`` hypotheses, best first.
    """
    check_lengths(max_length, min_length)
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ConfigError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    if block_ngram_repeat < 0 or coverage_penalty < 0:
        raise ConfigError("block_ngram_repeat and coverage_penalty must be >= 0")

    def lp(length: int) -> float:
        return length_penalty_divisor(length_penalty, length + length_penalty_offset, alpha)

    lp(1)  # reject an unknown penalty name before any decoding
    if stopping not in STOPPINGS:
        raise ConfigError(f"stopping must be one of {', '.join(STOPPINGS)}; got {stopping!r}")
    batch, device = state_batch_size(state)
    width = beam_size
    beams = 1  # rows per live sentence: one until the first step has been ranked
    sentence_ids = torch.arange(batch, device=device)  # original index of each live sentence
    beam_offsets = torch.arange(width, device=device)
    prev = first_tokens(bos_index, batch, 1, device)
    history = torch.empty(batch, 0, dtype=torch.long, device=device)  # (rows, t)
    slot_ended = torch.zeros(batch, width, dtype=torch.bool, device=device)  # stopping="slots": (live, width)
    attn_history: torch.Tensor | None = None  # (rows, t, S)
    for t in range(max_length):
        log_probs, state, attn = step(prev, state)
        live, vocab = log_probs.size(0) // beams, log_probs.size(1)
        if t == 0:
            if coverage_penalty and attn is None:
                raise ConfigError("the coverage penalty needs a step function that returns attention")
            src_len = None if attn is None else attn.size(1)
            beam_scores = torch.zeros(batch, 1, dtype=log_probs.dtype, device=device)
            finished = _Finished(batch, n_best, max_length, log_probs.dtype, device, eos_index, src_len)
            results = _Finished(batch, n_best, max_length, log_probs.dtype, device, eos_index, src_len)
            if attn is not None:
                attn_history = attn.new_zeros(batch, 0, src_len)
        if t < min_length:
            log_probs = forbid_eos(log_probs, eos_index)
        if block_ngram_repeat:
            log_probs = _block_ngrams(log_probs, history, block_ngram_repeat)
        if attn_history is not None:
            attn_history = torch.cat([attn_history, attn[:, None]], 1)
        steps = t + 1
        base = (torch.arange(live, device=device) * beams)[:, None]  # first row of each sentence
        scores = (beam_scores.view(-1, 1) + log_probs).view(live, beams * vocab)
        # One ranking serves both uses: at most `beams` extensions end in </s>, so the best
        # `width` that do not are among the best 2 * width.
        top_scores, top_index = scores.topk(min(2 * width, beams * vocab), dim=1)
        top_token = top_index % vocab
        is_eos = top_token == eos_index

        best_scores, best_index, best_token = top_scores[:, :width], top_index[:, :width], top_token[:, :width]
        ends = is_eos[:, :width] if steps < max_length else torch.ones_like(best_token, dtype=torch.bool)
        if stopping == "slots":  # a finished hypothesis stays in the beam: only its first </s> finishes it
            ended_before = (history == eos_index).any(1).index_select(0, (base + best_index // vocab).view(-1))
            ends = ends & ~ended_before.view_as(ends)
        final_scores = best_scores.masked_fill(~ends, NEG_INF) / lp(steps)
        if (final_scores > finished.worst()[:, None]).any():
            rows = (base + best_index // vocab).view(-1)
            candidates = best_index.size(1)
            tokens = torch.cat([history.index_select(0, rows), best_token.reshape(-1, 1)], 1).view(
                live, candidates, steps)
            lengths = torch.where(best_token == eos_index, t, steps)
            attention = (None if attn_history is None
                         else attn_history.index_select(0, rows).view(live, candidates, steps, src_len))
            if coverage_penalty:
                mask = None if src_mask is None else src_mask.to(device).index_select(0, sentence_ids)[:, None, :]
                final_scores = final_scores + gnmt_coverage_penalty(attention.sum(2), coverage_penalty, mask)
            finished.add(final_scores, tokens, lengths, steps, attention)

        if steps == max_length:
            done = torch.ones(live, dtype=torch.bool, device=device)
        else:
            if stopping == "slots":  # finished hypotheses keep their slots
                continuing = top_scores[:, :width]
            else:
                continuing = top_scores.masked_fill(is_eos, NEG_INF)
                if not beam_refill:  # a finished hypothesis' slot stays empty for this step
                    continuing = continuing[:, :width]
            if continuing.size(1) < width:  # a first step with fewer tokens than beams: empty beams
                continuing = F.pad(continuing, (0, width - continuing.size(1)), value=NEG_INF)
                top_index = F.pad(top_index, (0, width - top_index.size(1)))
            if stopping == "slots":  # ranked already; the order of the slots is what the flags follow
                beam_scores, index = continuing.contiguous(), top_index[:, :width]
            else:
                beam_scores, position = continuing.topk(width, dim=1)
                index = top_index.gather(1, position)
            rows = (base + index // vocab).view(-1)
            prev = (index % vocab).view(-1)
            # a reordering within sentences leaves what every row of a sentence shares alone
            state = select_rows(state, rows, per_sentence if beams == width else ())
            beams = width
            history = torch.cat([history.index_select(0, rows), prev[:, None]], 1)
            if attn_history is not None:
                attn_history = attn_history.index_select(0, rows)
            best_live = beam_scores.max(1).values
            if stopping == "slots":
                slot_ended |= (prev.view(live, width) == eos_index) | (beam_scores == NEG_INF)
                done = slot_ended.all(1)
            elif stopping == "first":
                done = (is_eos[:, 0] & (finished.worst() > NEG_INF)) | (best_live == NEG_INF)
            else:
                reachable = lp(steps + 1) if stopping == "heuristic" else max(lp(steps + 1), lp(max_length))
                done = finished.worst() >= best_live / reachable

        if done.any():
            gone = done.nonzero().squeeze(1)
            results.store(sentence_ids.index_select(0, gone), finished, gone)
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            rows = (keep[:, None] * width + beam_offsets).view(-1)
            sentence_ids, beam_scores = sentence_ids.index_select(0, keep), beam_scores.index_select(0, keep)
            slot_ended = slot_ended.index_select(0, keep)
            finished.select(keep)
            state, prev, history = select_rows(state, rows), prev.index_select(0, rows), history.index_select(0, rows)
            if attn_history is not None:
                attn_history = attn_history.index_select(0, rows)
    return results.hypotheses()


def most_probable(step: StepFn, state: State, *, bos_index: int | torch.Tensor, eos_index: int, max_length: int,
                  min_length: int = 0, beam_size: int = 1, n_best: int = 1, length_penalty: str | None = None,
                  alpha: float = 1.0, block_ngram_repeat: int = 0, coverage_penalty: float = 0.0,
                  src_mask: torch.Tensor | None = None, stopping: str = "exact", beam_refill: bool = True,
                  length_penalty_offset: int = 0, per_sentence: Collection[str] = ()) -> list[list[Hypothesis]]:
    """The ``n_best`` most probable outputs found with ``beam_size`` beams: :func:`greedy_search`
    when one beam and no penalty or blocking make beam search greedy anyway, :func:`beam_search`
    (with the remaining options) otherwise."""
    common = {"bos_index": bos_index, "eos_index": eos_index, "max_length": max_length, "min_length": min_length}
    if beam_size == 1 and n_best == 1 and length_penalty is None and not block_ngram_repeat and not coverage_penalty:
        return greedy_search(step, state, **common)
    return beam_search(step, state, beam_size=beam_size, n_best=n_best, length_penalty=length_penalty, alpha=alpha,
                       block_ngram_repeat=block_ngram_repeat, coverage_penalty=coverage_penalty, src_mask=src_mask,
                       stopping=stopping, beam_refill=beam_refill, length_penalty_offset=length_penalty_offset,
                       per_sentence=per_sentence, **common)
