"""Decoding strategies over one step-function protocol: greedy, beam search, sampling.

A model exposes a *step function* and an initial *state*::

    step(prev_tokens, state) -> (log_probs, state, attn)

    prev_tokens  (N,) long       the token fed at this step (``<s>`` at the first)
    state        dict[str, Tensor], every tensor with the N rows in dim 0 (``None`` values pass through)
    log_probs    (N, V)          log-probabilities of the next token (each row a normalized distribution)
    attn         (N, S) or None  attention over the S (padded) source positions

The initial state has the batch of sentences in dim 0.  The strategies only ever reorder,
repeat and drop rows with ``index_select(0, idx)``, so they never need to know what the
state holds.  All work is vectorized over sentences, beams and samples; the only Python
loop is over time steps.

Conventions shared by all strategies (what tests and :meth:`Seq2Seq.translate` rely on):

* ``max_length`` is the number of decoding steps, ``</s>`` included.  A hypothesis ends
  either with ``</s>`` (at most ``max_length - 1`` tokens) or is cut at ``max_length``
  tokens without ``</s>``.
* ``Hypothesis.tokens`` never contains ``<s>`` or ``</s>``.
* ``Hypothesis.attention`` has one row per scored step: ``len(tokens) + 1`` rows when the
  hypothesis ended with ``</s>``, ``len(tokens)`` rows when it was cut at ``max_length``.
  Its columns are the batch's padded source positions (padding gets the weight the model
  gives it, zero for a masked attention).
* ``|y|`` (the length in the length penalty) is the number of scored steps, i.e. the
  number of attention rows: ``</s>`` counts.
* ``min_length`` forbids ``</s>`` before ``min_length`` tokens have been produced.
* ``bos_index`` is the token fed at the first step: an int for every sentence, or a
  ``(batch,)`` LongTensor with one per sentence (a language model continuing prompts
  feeds each prompt's last token).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Collection

import torch
import torch.nn.functional as F

from .errors import ConfigError

State = dict[str, torch.Tensor | None]
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State, torch.Tensor | None]]

NEG_INF = float("-inf")

#: when beam search lets a sentence go (see :func:`beam_search`)
STOPPINGS = ("exact", "heuristic", "first")


@dataclass
class Hypothesis:
    """One decoded output.

    tokens: token ids from search (the model turns them into strings), no ``<s>``/``</s>``.
    score: the search score; see each strategy for what it contains.
    attention: ``(len(tokens) + 1, src_len)`` (``len(tokens)`` rows when cut at
        ``max_length`` without ``</s>``), or None when the model gives no attention.
    source: the source tokens, when the caller knows them (``Seq2Seq.translate`` does);
        a notebook labels the attention's columns with them.
    text: the output as text, the tokens detokenized by the model's target tokenizer
        (``Seq2Seq.translate`` and ``sample`` fill it in; None from the bare strategies).

    In a notebook a hypothesis with attention displays as an alignment widget.
    """

    tokens: list
    score: float
    attention: torch.Tensor | None = None
    source: list | None = None
    text: str | None = None

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        try:
            from .widgets import hypothesis_mimebundle
        except ImportError:  # the notebook extra (anywidget) is not installed
            return {"text/plain": repr(self)}
        return hypothesis_mimebundle(self, include=include, exclude=exclude)


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


def _batch_size(state: State) -> tuple[int, torch.device]:
    for value in state.values():
        if torch.is_tensor(value):
            return value.size(0), value.device
    raise ConfigError("the initial search state holds no tensor, so its batch size is unknown")


def _first_tokens(bos_index: int | torch.Tensor, batch: int, copies: int, device: torch.device) -> torch.Tensor:
    """The tokens fed at the first step, ``(batch * copies,)``, each sentence's ``copies`` rows together."""
    if torch.is_tensor(bos_index):
        if bos_index.shape != (batch,):
            raise ConfigError(f"bos_index must be an int or a ({batch},) tensor, got shape {tuple(bos_index.shape)}")
        return bos_index.to(device=device, dtype=torch.long).repeat_interleave(copies)
    return torch.full((batch * copies,), bos_index, dtype=torch.long, device=device)


def _select(state: State, index: torch.Tensor, unchanged: Collection[str] = ()) -> State:
    """Rows ``index`` of every tensor in ``state`` (repeat, reorder or drop rows), except
    the entries named in ``unchanged``."""
    return {k: v.index_select(0, index) if torch.is_tensor(v) and k not in unchanged else v for k, v in state.items()}


def _forbid_eos(log_probs: torch.Tensor, eos_index: int) -> torch.Tensor:
    return log_probs.index_fill(1, torch.tensor([eos_index], device=log_probs.device), NEG_INF)


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


def _hypotheses(scores: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, steps: torch.Tensor,
                attention: torch.Tensor | None) -> list[list[Hypothesis]]:
    """Turn ``(B, n)`` result tensors into lists of hypotheses, best first, dropping empty slots.

    tokens: ``(B, n, L)``; lengths: ``(B, n)`` tokens kept; steps: ``(B, n)`` attention rows;
    attention: ``(B, n, L, S)`` or None.
    """
    scores, tokens, lengths, steps = scores.cpu(), tokens.cpu(), lengths.cpu(), steps.cpu()
    attention = None if attention is None else attention.cpu()
    order = scores.argsort(dim=1, descending=True, stable=True)
    out: list[list[Hypothesis]] = []
    for b in range(scores.size(0)):
        hyps = []
        for j in order[b].tolist():
            score = float(scores[b, j])
            if score == NEG_INF:
                continue
            attn = None if attention is None else attention[b, j, : int(steps[b, j])].clone()
            hyps.append(Hypothesis(tokens[b, j, : int(lengths[b, j])].tolist(), score, attn))
        out.append(hyps)
    return out


def _check_lengths(max_length: int, min_length: int) -> None:
    if max_length < 1:
        raise ConfigError(f"max_length must be at least 1, got {max_length}")
    if not 0 <= min_length < max_length:
        raise ConfigError(f"min_length must be in [0, max_length), got {min_length} with max_length {max_length}")


def _decode_rows(step: StepFn, state: State, choose: Callable[[torch.Tensor], torch.Tensor], *, copies: int,
                 bos_index: int | torch.Tensor, eos_index: int, max_length: int,
                 min_length: int) -> list[list[Hypothesis]]:
    """Decode ``copies`` independent rows per sentence, one token per row per step.

    ``choose(log_probs (N, V)) -> (N,)`` picks the next token.  Rows that produced ``</s>``
    leave the batch.  Each hypothesis scores the summed model log-probabilities of its steps.
    """
    _check_lengths(max_length, min_length)
    batch, device = _batch_size(state)
    total = batch * copies
    rows = torch.arange(total, device=device)  # original row of each live row
    state = _select(state, rows // copies)
    prev = _first_tokens(bos_index, batch, copies, device)
    tokens = torch.full((total, max_length), eos_index, dtype=torch.long, device=device)
    lengths = torch.full((total,), max_length, dtype=torch.long, device=device)
    scores: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    for t in range(max_length):
        log_probs, state, attn = step(prev, state)
        if scores is None:
            scores = torch.zeros(total, dtype=log_probs.dtype, device=device)
            if attn is not None:
                attention = torch.zeros(total, max_length, attn.size(1), dtype=attn.dtype, device=device)
        allowed = log_probs if t >= min_length else _forbid_eos(log_probs, eos_index)
        token = choose(allowed)
        scores[rows] += log_probs.gather(1, token[:, None]).squeeze(1)
        tokens[rows, t] = token
        if attention is not None:
            attention[rows, t] = attn
        ended = token == eos_index
        if ended.any():
            lengths[rows[ended]] = t
            live = (~ended).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            rows, token, state = rows[live], token[live], _select(state, live)
        prev = token
    steps = torch.clamp(lengths + 1, max=max_length)
    view = (batch, copies)
    return _hypotheses(scores.view(view), tokens.view(*view, -1), lengths.view(view), steps.view(view),
                       None if attention is None else attention.view(*view, *attention.shape[1:]))


def greedy_search(step: StepFn, state: State, *, bos_index: int | torch.Tensor, eos_index: int, max_length: int,
                  min_length: int = 0) -> list[list[Hypothesis]]:
    """The most probable token at every step.

    Returns one list per sentence holding one :class:`Hypothesis`; its score is the summed
    log-probability of its steps (``</s>`` included), with no length penalty.
    """
    return _decode_rows(step, state, lambda lp: lp.argmax(1), copies=1, bos_index=bos_index,
                        eos_index=eos_index, max_length=max_length, min_length=min_length)


def _restrict(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the ``top_k`` largest logits (ties at the k-th kept), then the nucleus of mass ``top_p``.

    The nucleus is the smallest set of most probable tokens whose probability reaches
    ``top_p`` (the token that crosses ``top_p`` is kept).  logits: ``(N, V)``.
    """
    if 0 < top_k < logits.size(1):
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=1, descending=True)
        probs = sorted_logits.softmax(1)
        mass_before = probs.cumsum(1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, NEG_INF)
    return logits


def sample(step: StepFn, state: State, *, bos_index: int | torch.Tensor, eos_index: int, max_length: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
           generator: torch.Generator | None = None, min_length: int = 0) -> list[list[Hypothesis]]:
    """Ancestral sampling from ``softmax(log_probs / temperature)``, restricted to the top-k
    tokens (``top_k > 0``) and then to the top-p nucleus (``top_p < 1``).

    ``temperature == 0`` means greedy.  ``num_samples`` independent samples per sentence,
    returned best score first.  Scores are the model's own summed log-probabilities
    (temperature and restrictions only shape the choice, not the score).
    """
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0 or num_samples < 1:
        raise ConfigError(f"top_k must be >= 0 and num_samples >= 1, got {top_k} and {num_samples}")

    def choose(log_probs: torch.Tensor) -> torch.Tensor:
        if temperature == 0:
            return log_probs.argmax(1)
        probs = _restrict(log_probs / temperature, top_k, top_p).softmax(1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode_rows(step, state, choose, copies=num_samples, bos_index=bos_index, eos_index=eos_index,
                        max_length=max_length, min_length=min_length)


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
        return _hypotheses(self.scores, self.tokens, self.lengths, self.steps, self.attention)


def beam_search(step: StepFn, state: State, *, bos_index: int | torch.Tensor, eos_index: int, beam_size: int,
                n_best: int = 1, max_length: int, min_length: int = 0, length_penalty: str | None = None,
                alpha: float = 1.0, block_ngram_repeat: int = 0, coverage_penalty: float = 0.0,
                src_mask: torch.Tensor | None = None, stopping: str = "exact",
                per_sentence: Collection[str] = ()) -> list[list[Hypothesis]]:
    """Beam search over all sentences and beams at once (one ``step`` call per time step).

    At every step each sentence ranks its ``beam_size * V`` extensions by summed
    log-probability.  Those among its ``beam_size`` best that end in ``</s>`` (at the last
    step: all of them, cut at ``max_length``) become finished hypotheses; the ``beam_size``
    best extensions that do not end in ``</s>`` stay live.  So, without penalties,
    ``beam_size=1`` is greedy search, and a beam as wide as the search space is exhaustive search.

    A finished hypothesis ``y`` scores ``sum(log p(y)) / lp(|y|) + cp``: ``lp`` is
    :func:`length_penalty_divisor` (``length_penalty`` ``"gnmt"``, ``"average"`` or None, with
    ``alpha``; ``|y|`` counts ``</s>``) and ``cp`` is :func:`gnmt_coverage_penalty` with
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
    ``block_ngram_repeat = n > 0`` forbids any token that would repeat an n-gram of the
    hypothesis.  Step log-probabilities must be <= 0.

    ``per_sentence`` names state entries that every row of a sentence shares and that no
    step changes (an encoder's memory, its mask and attention keys): reordering beams within
    a sentence then leaves them alone instead of copying them every step.

    Returns one list per sentence of up to ``n_best`` hypotheses, best first.
    """
    _check_lengths(max_length, min_length)
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ConfigError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    if block_ngram_repeat < 0 or coverage_penalty < 0:
        raise ConfigError("block_ngram_repeat and coverage_penalty must be >= 0")

    def lp(length: int) -> float:
        return length_penalty_divisor(length_penalty, length, alpha)

    lp(1)  # reject an unknown penalty name before any decoding
    if stopping not in STOPPINGS:
        raise ConfigError(f"stopping must be one of {', '.join(STOPPINGS)}; got {stopping!r}")
    batch, device = _batch_size(state)
    width = beam_size
    beams = 1  # rows per live sentence: one until the first step has been ranked
    sentence_ids = torch.arange(batch, device=device)  # original index of each live sentence
    beam_offsets = torch.arange(width, device=device)
    prev = _first_tokens(bos_index, batch, 1, device)
    history = torch.empty(batch, 0, dtype=torch.long, device=device)  # (rows, t)
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
            log_probs = _forbid_eos(log_probs, eos_index)
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
            continuing = top_scores.masked_fill(is_eos, NEG_INF)
            if continuing.size(1) < width:  # a first step with fewer tokens than beams: empty beams
                continuing = F.pad(continuing, (0, width - continuing.size(1)), value=NEG_INF)
                top_index = F.pad(top_index, (0, width - top_index.size(1)))
            beam_scores, position = continuing.topk(width, dim=1)
            index = top_index.gather(1, position)
            rows = (base + index // vocab).view(-1)
            prev = (index % vocab).view(-1)
            # a reordering within sentences leaves what every row of a sentence shares alone
            state = _select(state, rows, per_sentence if beams == width else ())
            beams = width
            history = torch.cat([history.index_select(0, rows), prev[:, None]], 1)
            if attn_history is not None:
                attn_history = attn_history.index_select(0, rows)
            best_live = beam_scores.max(1).values
            if stopping == "first":
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
            finished.select(keep)
            state, prev, history = _select(state, rows), prev.index_select(0, rows), history.index_select(0, rows)
            if attn_history is not None:
                attn_history = attn_history.index_select(0, rows)
    return results.hypotheses()


def most_probable(step: StepFn, state: State, *, bos_index: int | torch.Tensor, eos_index: int, max_length: int,
                  min_length: int = 0, beam_size: int = 1, n_best: int = 1, length_penalty: str | None = None,
                  alpha: float = 1.0, block_ngram_repeat: int = 0, coverage_penalty: float = 0.0,
                  src_mask: torch.Tensor | None = None, stopping: str = "exact",
                  per_sentence: Collection[str] = ()) -> list[list[Hypothesis]]:
    """The ``n_best`` most probable outputs found with ``beam_size`` beams: :func:`greedy_search`
    when one beam and no penalty or blocking make beam search greedy anyway, :func:`beam_search`
    (with the remaining options) otherwise."""
    common = {"bos_index": bos_index, "eos_index": eos_index, "max_length": max_length, "min_length": min_length}
    if beam_size == 1 and n_best == 1 and length_penalty is None and not block_ngram_repeat and not coverage_penalty:
        return greedy_search(step, state, **common)
    return beam_search(step, state, beam_size=beam_size, n_best=n_best, length_penalty=length_penalty, alpha=alpha,
                       block_ngram_repeat=block_ngram_repeat, coverage_penalty=coverage_penalty, src_mask=src_mask,
                       stopping=stopping, per_sentence=per_sentence, **common)
