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

from dataclasses import dataclass
from typing import Any, Callable, Collection

import torch

from .errors import ConfigError

State = dict[str, torch.Tensor | None]
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State, torch.Tensor | None]]

NEG_INF = float("-inf")


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


def state_batch_size(state: State) -> tuple[int, torch.device]:
    """The batch size (dim 0) and device of the state's tensors."""
    for value in state.values():
        if torch.is_tensor(value):
            return value.size(0), value.device
    raise ConfigError("the initial search state holds no tensor, so its batch size is unknown")


def first_tokens(bos_index: int | torch.Tensor, batch: int, copies: int, device: torch.device) -> torch.Tensor:
    """The tokens fed at the first step, ``(batch * copies,)``, each sentence's ``copies`` rows together."""
    if torch.is_tensor(bos_index):
        if bos_index.shape != (batch,):
            raise ConfigError(f"bos_index must be an int or a ({batch},) tensor, got shape {tuple(bos_index.shape)}")
        return bos_index.to(device=device, dtype=torch.long).repeat_interleave(copies)
    return torch.full((batch * copies,), bos_index, dtype=torch.long, device=device)


def select_rows(state: State, index: torch.Tensor, unchanged: Collection[str] = ()) -> State:
    """Rows ``index`` of every tensor in ``state`` (repeat, reorder or drop rows), except
    the entries named in ``unchanged``."""
    return {k: v.index_select(0, index) if torch.is_tensor(v) and k not in unchanged else v
            for k, v in state.items()}


def forbid_eos(log_probs: torch.Tensor, eos_index: int) -> torch.Tensor:
    """``log_probs (N, V)`` with ``</s>`` made impossible (``min_length`` not reached yet)."""
    return log_probs.index_fill(1, torch.tensor([eos_index], device=log_probs.device), NEG_INF)


def to_hypotheses(scores: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, steps: torch.Tensor,
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


def check_lengths(max_length: int, min_length: int) -> None:
    """Raise ConfigError unless ``0 <= min_length < max_length`` and ``max_length >= 1``."""
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
    check_lengths(max_length, min_length)
    batch, device = state_batch_size(state)
    total = batch * copies
    rows = torch.arange(total, device=device)  # original row of each live row
    state = select_rows(state, rows // copies)
    prev = first_tokens(bos_index, batch, copies, device)
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
        allowed = log_probs if t >= min_length else forbid_eos(log_probs, eos_index)
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
            rows, token, state = rows[live], token[live], select_rows(state, live)
        prev = token
    steps = torch.clamp(lengths + 1, max=max_length)
    view = (batch, copies)
    return to_hypotheses(scores.view(view), tokens.view(*view, -1), lengths.view(view), steps.view(view),
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


# every strategy is found here, beam search included (it lives in its own module)
from .beam_search import (  # noqa: E402  (it imports the helpers above)
    LENGTH_PENALTIES, STOPPINGS, beam_search, gnmt_coverage_penalty, length_penalty_divisor, most_probable,
)
