"""Search strategies against independent oracles: brute-force enumeration of every target
sequence, scored by feeding it to toy step models (a per-sentence bigram table and a tiny
GRU with attention over a per-sentence memory)."""
from __future__ import annotations

import math
from collections import Counter
from itertools import product

import pytest
import torch
from torch import nn

from seqlearn.errors import ConfigError
from seqlearn.search import Hypothesis, beam_search, greedy_search, sample

BOS, EOS = 0, 1


class Bigram:
    """log p(next | prev) = tables[sentence, prev, next]; the state carries the sentence id."""

    def __init__(self, batch: int, vocab: int, seed: int, sharpness: float = 2.0):
        g = torch.Generator().manual_seed(seed)
        self.tables = (sharpness * torch.randn(batch, vocab, vocab, generator=g, dtype=torch.float64)).log_softmax(-1)

    def start(self, sentences=None):
        ids = torch.arange(self.tables.size(0)) if sentences is None else torch.tensor(sentences)
        return {"sentence": ids}

    def step(self, prev, state):
        return self.tables[state["sentence"], prev], state, None


class AttentionGRU(nn.Module):
    """A random GRU decoder attending over a random per-sentence memory ``(S, hidden)``."""

    def __init__(self, vocab: int, hidden: int = 6, seed: int = 0, sharpness: float = 3.0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, hidden)
        self.cell = nn.GRUCell(2 * hidden, hidden)
        self.out = nn.Linear(2 * hidden, vocab)
        self.sharpness = sharpness
        self.double()

    def memories(self, lengths: list[int], seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(n, self.embed.embedding_dim, generator=g, dtype=torch.float64) for n in lengths]

    def start(self, memories: list[torch.Tensor], junk: float = 0.0):
        """Pad the memories into one batch; ``junk`` fills padding, which the mask must hide."""
        width = max(m.size(0) for m in memories)
        memory = torch.full((len(memories), width, memories[0].size(1)), junk, dtype=torch.float64)
        for i, m in enumerate(memories):
            memory[i, : m.size(0)] = m
        lengths = torch.tensor([m.size(0) for m in memories])
        mask = torch.arange(width)[None, :] < lengths[:, None]
        h = (memory * mask[..., None]).sum(1) / lengths[:, None]
        return {"h": torch.tanh(h), "memory": memory, "mask": mask}

    @torch.no_grad()
    def step(self, prev, state):
        scores = torch.einsum("nsh,nh->ns", state["memory"], state["h"]).masked_fill(~state["mask"], float("-inf"))
        attn = scores.softmax(1)
        context = torch.einsum("ns,nsh->nh", attn, state["memory"])
        h = self.cell(torch.cat([self.embed(prev), context], 1), state["h"])
        log_probs = (self.sharpness * self.out(torch.cat([h, context], 1))).log_softmax(1)
        return log_probs, {**state, "h": h}, attn


# ---------------------------------------------------------------- oracles


def every_sequence(vocab: int, max_length: int, min_length: int = 0):
    """All (tokens, ended) the search may return: ended with </s> after at most max_length-1
    tokens, or cut at max_length tokens."""
    words = [w for w in range(vocab) if w != EOS]
    for n in range(min_length, max_length):
        for seq in product(words, repeat=n):
            yield list(seq), True
    for seq in product(words, repeat=max_length):
        yield list(seq), False


def teacher_forced(step, state_of_one, sequences):
    """Feed each (tokens, ended) to the model; return its summed log-prob and attention rows."""
    n = len(sequences)
    targets = [toks + [EOS] if ended else toks for toks, ended in sequences]
    steps = torch.tensor([len(t) for t in targets])
    width = int(steps.max())
    feed = torch.full((n, width), EOS)
    gold = torch.full((n, width), EOS)
    for i, t in enumerate(targets):
        feed[i, : len(t)] = torch.tensor([BOS] + t[:-1])
        gold[i, : len(t)] = torch.tensor(t)
    state = {k: v.expand(n, *v.shape[1:]).contiguous() for k, v in state_of_one.items()}
    total = torch.zeros(n, dtype=torch.float64)
    rows = []
    for t in range(width):
        log_probs, state, attn = step(feed[:, t], state)
        total += torch.where(t < steps, log_probs.gather(1, gold[:, t:t + 1]).squeeze(1), 0.0)
        rows.append(attn)
    attention = None if rows[0] is None else torch.stack(rows, 1)
    return [(total[i].item(), None if attention is None else attention[i, : steps[i]]) for i in range(n)]


def divisor(name, length, alpha):
    return {None: 1.0, "gnmt": ((5 + length) / 6) ** alpha, "average": length ** alpha}[name]


def coverage(attention, beta):
    return beta * attention.sum(0).clamp(max=1.0).log().sum().item()


def brute_force(step, state_of_one, vocab, max_length, *, length_penalty=None, alpha=1.0, beta=0.0,
                min_length=0, keep=lambda tokens: True):
    """Every sequence with its final score, best first."""
    seqs = [s for s in every_sequence(vocab, max_length, min_length) if keep(s[0])]
    scored = []
    for (tokens, ended), (logp, attn) in zip(seqs, teacher_forced(step, state_of_one, seqs)):
        score = logp / divisor(length_penalty, len(tokens) + ended, alpha)
        if beta:
            score += coverage(attn, beta)
        scored.append((score, tokens, logp, attn))
    return sorted(scored, key=lambda x: -x[0])


def one(state, i):
    return {k: v[i:i + 1] for k, v in state.items()}


def assert_nbest_equal(hyps: list[Hypothesis], oracle, tol=1e-9):
    assert [h.tokens for h in hyps] == [o[1] for o in oracle[: len(hyps)]]
    assert [h.score for h in hyps] == pytest.approx([o[0] for o in oracle[: len(hyps)]], abs=tol)
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == len(hyps)


# ---------------------------------------------------------------- beam search vs brute force

VOCAB, MAXLEN = 5, 4
# A beam as wide as the search space: every extension of every possible prefix fits in it.
WIDE = (VOCAB - 1) ** (MAXLEN - 1) * VOCAB


def toy(kind):
    if kind == "bigram":
        model = Bigram(batch=3, vocab=VOCAB, seed=1)
        return model.step, model.start()
    model = AttentionGRU(VOCAB, seed=2)
    return model.step, model.start(model.memories([3, 5, 2], seed=3), junk=7.0)


@pytest.mark.parametrize("kind", ["bigram", "gru"])
@pytest.mark.parametrize("penalty,alpha", [(None, 1.0), ("gnmt", 0.8), ("average", 1.0)])
def test_wide_beam_is_exhaustive_search(kind, penalty, alpha):
    step, state = toy(kind)
    result = beam_search(step, state, bos_index=BOS, eos_index=EOS, beam_size=WIDE, n_best=6,
                         max_length=MAXLEN, length_penalty=penalty, alpha=alpha)
    assert len(result) == 3
    for i, hyps in enumerate(result):
        oracle = brute_force(step, one(state, i), VOCAB, MAXLEN, length_penalty=penalty, alpha=alpha)
        assert len(hyps) == 6
        assert_nbest_equal(hyps, oracle)
        for h, (_, tokens, _, attn) in zip(hyps, oracle):
            if attn is None:
                assert h.attention is None
            else:
                assert h.attention.shape == attn.shape  # len(tokens)+1 rows, or len(tokens) when cut
                torch.testing.assert_close(h.attention, attn)


def test_n_best_beyond_the_search_space_returns_all_of_it():
    """With a 2-word vocabulary and max_length 2 the space has 4 sequences: n_best 6 returns them all."""
    model = Bigram(batch=1, vocab=2, seed=5)
    hyps = beam_search(model.step, model.start(), bos_index=BOS, eos_index=EOS, beam_size=6, n_best=6,
                       max_length=2)[0]
    oracle = brute_force(model.step, model.start(), 2, 2)
    assert len(oracle) == len(hyps) == 3  # [] </s>, [0] </s>, [0 0] cut
    assert_nbest_equal(hyps, oracle)


@pytest.mark.parametrize("penalty", [None, "gnmt"])
def test_coverage_penalty_matches_brute_force(penalty):
    step, state = toy("gru")
    result = beam_search(step, state, bos_index=BOS, eos_index=EOS, beam_size=WIDE, n_best=4, max_length=MAXLEN,
                         length_penalty=penalty, alpha=0.6, coverage_penalty=0.4, src_mask=state["mask"])
    for i, hyps in enumerate(result):
        length = int(state["mask"][i].sum())
        st = {**one(state, i), "memory": state["memory"][i:i + 1, :length], "mask": state["mask"][i:i + 1, :length]}
        assert_nbest_equal(hyps, brute_force(step, st, VOCAB, MAXLEN, length_penalty=penalty, alpha=0.6, beta=0.4))


@pytest.mark.parametrize("penalty", ["average", "gnmt"])
def test_early_stop_waits_for_live_beams_that_a_length_penalty_can_lift(penalty):
    """</s> first is the likeliest step, yet the longest output wins after normalization."""
    model = Bigram(batch=1, vocab=3, seed=0)
    model.tables[0, BOS] = torch.tensor([0.025, 0.607, 0.368], dtype=torch.float64).log()
    model.tables[0, 2] = torch.tensor([0.01, 0.02, 0.97], dtype=torch.float64).log()
    hyps = beam_search(model.step, model.start(), bos_index=BOS, eos_index=EOS, beam_size=2, max_length=4,
                       length_penalty=penalty, alpha=2.0)[0]
    oracle = brute_force(model.step, model.start(), 3, 4, length_penalty=penalty, alpha=2.0)
    assert oracle[0][1] == [2, 2, 2, 2]
    assert_nbest_equal(hyps, oracle)


def test_coverage_penalty_needs_attention():
    model = Bigram(batch=1, vocab=VOCAB, seed=0)
    with pytest.raises(ConfigError, match="attention"):
        beam_search(model.step, model.start(), bos_index=BOS, eos_index=EOS, beam_size=2, max_length=3,
                    coverage_penalty=0.2)


@pytest.mark.parametrize("bad", [dict(length_penalty="wu"), dict(n_best=3), dict(min_length=5)])
def test_bad_options_raise_config_error(bad):
    model = Bigram(batch=1, vocab=VOCAB, seed=0)
    options = dict(beam_size=2, max_length=5) | bad
    with pytest.raises(ConfigError):
        beam_search(model.step, model.start(), bos_index=BOS, eos_index=EOS, **options)


# ---------------------------------------------------------------- beam 1, scores, batching


@pytest.mark.parametrize("seed", range(4))
def test_beam_one_is_greedy(seed):
    model = AttentionGRU(vocab=9, seed=seed, sharpness=1.0)
    with torch.no_grad():
        model.out.bias[EOS] += 1.0  # let some sentences end before max_length
    state = model.start(model.memories([4, 7, 2, 5], seed=seed))
    beam = beam_search(model.step, state, bos_index=BOS, eos_index=EOS, beam_size=1, max_length=12)
    greedy = greedy_search(model.step, state, bos_index=BOS, eos_index=EOS, max_length=12)
    for b, g in zip(beam, greedy):
        assert [h.tokens for h in b] == [h.tokens for h in g]
        assert b[0].score == pytest.approx(g[0].score, abs=1e-12)
        torch.testing.assert_close(b[0].attention, g[0].attention)
    assert any(len(g[0].tokens) < 11 for g in greedy)  # some sentences end with </s>


@pytest.mark.parametrize("penalty,alpha,beta", [(None, 1.0, 0.0), ("gnmt", 0.7, 0.0), ("average", 1.0, 0.3)])
def test_scores_are_the_models_log_probability(penalty, alpha, beta):
    """Bigger vocabulary and longer outputs than brute force allows: check each score instead."""
    model = AttentionGRU(vocab=12, seed=7, sharpness=1.5)
    memories = model.memories([5, 3, 8], seed=1)
    state = model.start(memories)
    result = beam_search(model.step, state, bos_index=BOS, eos_index=EOS, beam_size=4, n_best=3, max_length=9,
                         length_penalty=penalty, alpha=alpha, coverage_penalty=beta, src_mask=state["mask"])
    for hyps, memory in zip(result, memories):
        assert len(hyps) == 3
        seqs = [(h.tokens, len(h.attention) > len(h.tokens)) for h in hyps]
        for h, (ended, (logp, attn)) in zip(hyps, zip([e for _, e in seqs],
                                                      teacher_forced(model.step, model.start([memory]), seqs))):
            expected = logp / divisor(penalty, len(h.tokens) + ended, alpha) + (coverage(attn, beta) if beta else 0)
            assert h.score == pytest.approx(expected, abs=1e-9)
            assert EOS not in h.tokens
            torch.testing.assert_close(h.attention[:, : memory.size(0)], attn)
            assert torch.all(h.attention[:, memory.size(0):] == 0)  # padding gets no weight
            torch.testing.assert_close(h.attention.sum(1), torch.ones(len(h.attention), dtype=torch.float64))


def hyp_key(hyps):
    return [(h.tokens, round(h.score, 5)) for h in hyps]


@pytest.mark.parametrize("strategy", ["beam", "greedy"])
def test_batch_invariance(strategy):
    """A sentence alone and inside a padded batch of longer ones decodes the same."""
    model = AttentionGRU(vocab=10, seed=11, sharpness=1.2)
    memories = model.memories([3, 9, 6, 8], seed=4)

    def run(mems):
        state = model.start(mems, junk=5.0)
        if strategy == "beam":
            return beam_search(model.step, state, bos_index=BOS, eos_index=EOS, beam_size=3, n_best=2,
                               max_length=10, length_penalty="gnmt")
        return greedy_search(model.step, state, bos_index=BOS, eos_index=EOS, max_length=10)

    batched = run(memories)
    for i, memory in enumerate(memories):
        alone = run([memory])[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[i]], abs=1e-5)
        for a, b in zip(alone, batched[i]):
            torch.testing.assert_close(b.attention[:, : memory.size(0)], a.attention, atol=1e-5, rtol=0)
            assert torch.all(b.attention[:, memory.size(0):] == 0)


def test_finished_sentences_leave_the_batch():
    """Sentence 0 ends at once, sentence 1 only late: the step sees fewer rows, results stay exact.
    The first step sees one row per sentence (its beams would all be the same), the others
    ``width`` per live sentence."""
    model = Bigram(batch=3, vocab=VOCAB, seed=3)
    model.tables[0, :, EOS] = -1e-3  # sentence 0: </s> almost surely
    model.tables[1, BOS, EOS] = -30.0  # sentence 1: no early </s>
    model.tables[1, 2:, EOS] = -30.0
    model.tables = model.tables.log_softmax(-1)
    rows_seen = []

    def step(prev, state):
        rows_seen.append(prev.numel())
        return model.step(prev, state)

    width = 64
    result = beam_search(step, model.start(), bos_index=BOS, eos_index=EOS, beam_size=width, n_best=2,
                         max_length=MAXLEN)
    assert rows_seen[:2] == [3, 3 * width]
    assert rows_seen[1:] == sorted(rows_seen[1:], reverse=True) and rows_seen[-1] < rows_seen[1]
    assert all(n % width == 0 for n in rows_seen[1:])
    for i, hyps in enumerate(result):
        assert_nbest_equal(hyps, brute_force(model.step, model.start([i]), VOCAB, MAXLEN))
        assert hyp_key(hyps) == hyp_key(beam_search(model.step, model.start([i]), bos_index=BOS, eos_index=EOS,
                                                    beam_size=width, n_best=2, max_length=MAXLEN)[0])


def test_per_sentence_entries_are_left_alone_by_reordering_and_follow_leaving_sentences():
    """An entry every beam of a sentence shares is copied only when rows are added or
    dropped, never when beams are reordered -- and the results do not change."""
    model = Bigram(batch=3, vocab=VOCAB, seed=3)
    model.tables[0, :, EOS] = -1e-3  # sentence 0 leaves early
    model.tables = model.tables.log_softmax(-1)
    seen = []

    def step(prev, state):
        seen.append((prev.numel(), state["sentence"]))
        return model.step(prev, state)

    options = dict(bos_index=BOS, eos_index=EOS, beam_size=4, n_best=2, max_length=MAXLEN,
                   length_penalty="gnmt", alpha=0.5)
    shared = beam_search(step, model.start(), per_sentence=("sentence",), **options)
    assert [hyp_key(h) for h in shared] == [hyp_key(h) for h in beam_search(model.step, model.start(), **options)]
    assert len({rows for rows, _ in seen}) > 2  # the batch shrank at least once after the first step
    for (rows, before), (rows_next, after) in zip(seen, seen[1:]):
        assert (after is before) == (rows == rows_next)


def test_first_stopping_ends_a_sentence_when_its_best_extension_ends():
    """OpenNMT-py's rule: </s> is the best first extension (-1.0), so the sentence ends there,
    although "2 3" scores better under the GNMT penalty ((-1.2 + 2 log .99) / (8/6) > -1.0),
    which exact stopping finds.  With n_best=2 it waits for a second finished hypothesis."""
    model = Bigram(batch=1, vocab=VOCAB, seed=0)
    likely = math.log(0.99)
    unlikely = math.log(0.01 / 3)
    table = torch.full((VOCAB, VOCAB), unlikely, dtype=torch.float64)
    table[:, BOS] = float("-inf")
    table[BOS, 1:] = torch.tensor([-1.0, -1.2, math.log(0.331 / 2), math.log(0.331 / 2)])
    table[BOS] -= table[BOS].logsumexp(0)  # normalize the rounding away
    table[2, 3] = table[3, EOS] = table[4, EOS] = likely
    model.tables = table[None]
    rows_seen = []

    def step(prev, state):
        rows_seen.append(prev.numel())
        return model.step(prev, state)

    options = dict(bos_index=BOS, eos_index=EOS, beam_size=2, max_length=MAXLEN, length_penalty="gnmt", alpha=1.0)
    (first,) = beam_search(step, model.start(), stopping="first", **options)
    assert len(rows_seen) == 1 and [h.tokens for h in first] == [[]]
    assert first[0].score == pytest.approx(float(table[BOS, EOS]))
    (exact,) = beam_search(model.step, model.start(), stopping="exact", **options)
    assert exact[0].tokens == [2, 3]
    assert exact[0].score == pytest.approx((float(table[BOS, 2]) + 2 * likely) / (8 / 6))

    rows_seen.clear()
    (two,) = beam_search(step, model.start(), stopping="first", n_best=2, **options)
    assert len(two) == 2 and 1 < len(rows_seen) < MAXLEN
    with pytest.raises(ConfigError, match="stopping"):
        beam_search(model.step, model.start(), stopping="never", **options)


@pytest.mark.parametrize("strategy", ["beam", "greedy", "sample"])
def test_min_length(strategy):
    model = Bigram(batch=2, vocab=VOCAB, seed=8)
    model.tables[:, :, EOS] += 8.0  # </s> is the likeliest token everywhere
    model.tables = model.tables.log_softmax(-1)
    options = dict(bos_index=BOS, eos_index=EOS, max_length=MAXLEN, min_length=2)
    if strategy == "beam":
        result = beam_search(model.step, model.start(), beam_size=WIDE, n_best=3, **options)
        for i, hyps in enumerate(result):
            assert_nbest_equal(hyps, brute_force(model.step, model.start([i]), VOCAB, MAXLEN, min_length=2))
    elif strategy == "greedy":
        result = greedy_search(model.step, model.start(), **options)
        assert all(len(h[0].tokens) == 2 for h in result)  # </s> wins as soon as it is allowed
    else:
        result = sample(model.step, model.start(), num_samples=50, generator=torch.Generator().manual_seed(0),
                        **options)
    assert all(len(h.tokens) >= 2 for hyps in result for h in hyps)


def repeats_ngram(tokens, n):
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("n", [1, 2])
def test_ngram_blocking_matches_brute_force_without_repeats(n):
    model = Bigram(batch=2, vocab=VOCAB, seed=9)
    model.tables[:, 2, 2] += 4.0  # the model loves "2 2 2 ..."
    model.tables[:, 3, 4] += 4.0  # and "3 4 3 4 ..."
    model.tables[:, 4, 3] += 4.0
    model.tables[:, :, EOS] -= 3.0
    model.tables = model.tables.log_softmax(-1)
    plain = beam_search(model.step, model.start(), bos_index=BOS, eos_index=EOS, beam_size=WIDE, n_best=3,
                        max_length=MAXLEN)
    assert any(repeats_ngram(h.tokens, n) for hyps in plain for h in hyps)  # blocking has work to do
    blocked = beam_search(model.step, model.start(), bos_index=BOS, eos_index=EOS, beam_size=WIDE, n_best=3,
                          max_length=MAXLEN, block_ngram_repeat=n)
    for i, hyps in enumerate(blocked):
        assert not any(repeats_ngram(h.tokens, n) for h in hyps)
        oracle = brute_force(model.step, model.start([i]), VOCAB, MAXLEN, keep=lambda t: not repeats_ngram(t, n))
        assert_nbest_equal(hyps, oracle)


def test_ngram_blocking_with_a_narrow_beam_on_long_outputs():
    model = AttentionGRU(vocab=8, seed=4, sharpness=4.0)
    state = model.start(model.memories([4, 6], seed=2))
    for hyps in beam_search(model.step, state, bos_index=BOS, eos_index=EOS, beam_size=3, n_best=3, max_length=15,
                            block_ngram_repeat=2):
        assert hyps and not any(repeats_ngram(h.tokens, 2) for h in hyps)


# ---------------------------------------------------------------- sampling


def test_sampling_limits_are_greedy():
    model = AttentionGRU(vocab=9, seed=5, sharpness=1.0)
    state = model.start(model.memories([4, 7, 2], seed=6))
    options = dict(bos_index=BOS, eos_index=EOS, max_length=10)
    greedy = [h[0].tokens for h in greedy_search(model.step, state, **options)]
    g = torch.Generator().manual_seed(0)
    for kwargs in (dict(temperature=1e-9), dict(temperature=0.0), dict(top_k=1), dict(top_p=1e-6)):
        result = sample(model.step, state, num_samples=4, generator=g, **kwargs, **options)
        assert [[h.tokens for h in hyps] for hyps in result] == [[t] * 4 for t in greedy]


def test_sample_scores_and_reproducibility():
    model = AttentionGRU(vocab=9, seed=5, sharpness=1.0)
    memories = model.memories([4, 7], seed=6)
    state = model.start(memories)
    run = lambda: sample(model.step, state, bos_index=BOS, eos_index=EOS, max_length=8, temperature=1.3,
                         num_samples=6, generator=torch.Generator().manual_seed(42))
    first, second = run(), run()
    assert [[h.tokens for h in hyps] for hyps in first] == [[h.tokens for h in hyps] for hyps in second]
    for hyps, memory in zip(first, memories):
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        seqs = [(h.tokens, len(h.attention) > len(h.tokens)) for h in hyps]
        oracle = teacher_forced(model.step, model.start([memory]), seqs)
        assert [h.score for h in hyps] == pytest.approx([o[0] for o in oracle], abs=1e-9)  # model's own log p


def restricted_distribution(logits, temperature, top_k, top_p):
    """Oracle: softmax(logits / T) over the top-k tokens, then the smallest top-p nucleus."""
    probs = (logits / temperature).softmax(0).tolist()
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    if top_k:
        ranked = ranked[:top_k]
    mass = sum(probs[i] for i in ranked)
    kept, total = [], 0.0
    for i in ranked:
        kept.append(i)
        total += probs[i] / mass
        if total >= top_p:
            break
    z = sum(probs[i] for i in kept)
    return [probs[i] / z if i in kept else 0.0 for i in range(len(probs))]


@pytest.mark.parametrize("temperature,top_k,top_p",
                         [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.0, 3, 1.0), (1.5, 0, 0.7), (0.8, 5, 0.8)])
def test_first_token_frequencies(temperature, top_k, top_p):
    vocab, draws = 8, 20000
    logits = torch.tensor([1.5, 0.2, -0.3, 1.0, 0.7, -1.2, 0.4, 0.0], dtype=torch.float64)

    def step(prev, state):
        return logits.log_softmax(0).expand(prev.numel(), vocab), state, None

    result = sample(step, {"x": torch.zeros(1)}, bos_index=BOS, eos_index=EOS, max_length=1,
                    temperature=temperature, top_k=top_k, top_p=top_p, num_samples=draws,
                    generator=torch.Generator().manual_seed(123))
    counts = Counter(h.tokens[0] if h.tokens else EOS for h in result[0])
    expected = restricted_distribution(logits, temperature, top_k, top_p)
    chi2 = 0.0
    for token, p in enumerate(expected):
        if p == 0:
            assert counts[token] == 0
        else:
            chi2 += (counts[token] - draws * p) ** 2 / (draws * p)
    dof = sum(p > 0 for p in expected) - 1
    assert dof >= 1
    assert chi2 < 3 * dof + 10  # far beyond the 0.999 quantile for dof <= 7 (24.3)
