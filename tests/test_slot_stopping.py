"""``beam_search(stopping="slots")``, JoeyNMT 2.x's beam, against a literal per-sentence
transcription of JoeyNMT 2.3.0's ``search.py:beam_search`` (lists and loops, one sentence
at a time) on random Markov step functions."""
from __future__ import annotations

import math

import pytest
import torch

from seqlearn.search import beam_search

V, EOS, BOS, T = 6, 3, 0, 8


def tables(batch: int, seed: int) -> torch.Tensor:
    """Sharp random next-token log-probabilities ``(batch, T, V, V)`` by step and previous
    token, ``</s>`` often likely, so that hypotheses end at many different steps."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, T, V, V, generator=g, dtype=torch.float64) * 2.5
    logits[..., EOS] += 1.0
    return logits.log_softmax(-1)


def step_fn(table: torch.Tensor):
    def step(prev, state):
        lp = table[state["sentence"], state["t"], prev]
        return lp, {"sentence": state["sentence"], "t": state["t"] + 1}, None
    return step


def joeynmt_reference(table: torch.Tensor, beam: int, max_len: int, alpha: float, min_len: int, n_best: int):
    """JoeyNMT's loop for one sentence: the best ``beam`` (slot, token) extensions by
    penalized score, finished ones kept and extended; sticky per-slot flags; a hypothesis is
    collected when its first ``</s>`` is its last token (or at ``max_len`` without ``</s>``)."""
    alive = [([BOS], 0.0)] + [([BOS], -math.inf)] * (beam - 1)
    flags = [False] * beam
    hyps: list[tuple[float, list[int]]] = []
    for step in range(max_len):
        penalty = ((5.0 + step + 1) / 6.0) ** alpha if alpha > 0 else 1.0
        candidates = []
        for j, (seq, score) in enumerate(alive):
            lp = table[len(seq) - 1, seq[-1]].tolist()
            if step < min_len:
                lp[EOS] = -math.inf
            candidates += [((score + lp[v]) / penalty, j * V + v, j, v) for v in range(V)]
        top = sorted(candidates, key=lambda c: (-c[0], c[1]))[:beam]
        alive = [(alive[j][0] + [v], s * penalty) for s, _, j, v in top]
        flags = [f or v == EOS or s == -math.inf for f, (s, _, _, v) in zip(flags, top)]
        if step + 1 == max_len:
            flags = [True] * beam
        for j, ((seq, _), (s, *_)) in enumerate(zip(alive, top)):
            n_eos = seq[1:].count(EOS)
            if flags[j] and ((n_eos == 0 and step + 1 == max_len) or (n_eos == 1 and seq[-1] == EOS)):
                hyps.append((s, [t for t in seq[1:] if t != EOS]))
        if all(flags):
            break
    return sorted(hyps, key=lambda h: h[0], reverse=True)[:n_best]


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("beam,n_best,min_len", [(2, 1, 0), (3, 2, 1), (4, 1, 1)])
def test_slots_stopping_is_joeynmts_beam_search(alpha, beam, n_best, min_len):
    batch, differs = 40, 0
    table = tables(batch, seed=beam * 10 + n_best + int(alpha * 100))
    state = {"sentence": torch.arange(batch), "t": torch.zeros(batch, dtype=torch.long)}
    options = dict(bos_index=BOS, eos_index=EOS, beam_size=beam, n_best=n_best, max_length=T, min_length=min_len,
                   length_penalty="gnmt" if alpha > 0 else None, alpha=alpha)
    got = beam_search(step_fn(table), state, stopping="slots", **options)
    exact = beam_search(step_fn(table), state, **options)
    for b in range(batch):
        expected = joeynmt_reference(table[b], beam, T, alpha, min_len, n_best)
        assert [h.tokens for h in got[b]] == [tokens for _, tokens in expected], b
        assert [h.score for h in got[b]] == pytest.approx([s for s, _ in expected], abs=1e-9), b
        differs += [h.tokens for h in exact[b]] != [h.tokens for h in got[b]]
    if alpha == 3.0 or n_best > 1:  # the rule matters: seqlearn's exact search finds other outputs here
        assert differs > 0
