"""A model's own default search settings (``search_defaults``) and the settings they name:
OpenNMT-py's beam (finished hypotheses spend their slot, the length penalty counts the
start token, the sentence stops when its best extension ends) against a plain-Python
re-implementation of its rules, and the max-length rules against hand-computed limits."""
from __future__ import annotations

import math

import pytest
import torch

from seqlearn import ConfigError, Seq2Seq, Vocab
from seqlearn.search import beam_search, most_probable
from seqlearn.translation import SEARCH_SETTINGS, length_limits

BOS, EOS = 0, 1
ONMT = {"length_penalty": "average", "alpha": 1.0, "length_penalty_offset": 1, "stopping": "first",
        "beam_refill": False}


def bigram_tables(batch: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (1.5 * torch.randn(batch, vocab, vocab, generator=g, dtype=torch.float64)).log_softmax(-1)


def onmt_reference(table: torch.Tensor, beam: int, max_length: int) -> tuple[list[int], float]:
    """OpenNMT-py 3.5.1's BeamSearch as FORMATS.md describes it, one sentence, in plain Python:
    the top ``beam`` of all extensions are taken; those ending in </s> (all of them at the
    maximum length) are collected with score ``sum / (n + 1)`` and leave their slot empty;
    the sentence ends when the top one has ended; the best collected wins (ties: first)."""
    alive = [([], 0.0)]
    collected = []
    for t in range(1, max_length + 1):
        candidates = [(logp + float(table[seq[-1] if seq else BOS, w]), seq + [w])
                      for seq, logp in alive for w in range(table.size(1))]
        candidates.sort(key=lambda c: -c[0])
        top = candidates[:beam]
        alive = []
        for logp, seq in top:
            if seq[-1] == EOS or t == max_length:
                collected.append((logp / (len(seq) + 1), seq))
            else:
                alive.append((seq, logp))
        if top[0][1][-1] == EOS or t == max_length:
            break
    score, seq = max(collected, key=lambda c: c[0])  # max keeps the first of equal scores
    return [w for w in seq if w != EOS], score


@pytest.mark.parametrize("beam", [1, 3])
def test_onmt_beam_settings_match_a_reference_implementation(beam):
    tables = bigram_tables(batch=40, vocab=6, seed=beam)
    state = {"sentence": torch.arange(40)}

    def step(prev, s):
        return tables[s["sentence"], prev], s, None

    results = beam_search(step, state, bos_index=BOS, eos_index=EOS, beam_size=beam, max_length=5, **ONMT)
    refill = beam_search(step, state, bos_index=BOS, eos_index=EOS, beam_size=beam, max_length=5,
                         **(ONMT | {"beam_refill": True}))
    for b, (hyps, table) in enumerate(zip(results, tables)):
        tokens, score = onmt_reference(table, beam, 5)
        assert hyps[0].tokens == tokens, b
        assert hyps[0].score == pytest.approx(score, abs=1e-12)
    if beam > 1:  # refilling the spent slots changes some results: the option matters
        assert any(a[0].tokens != b[0].tokens or a[0].score != b[0].score for a, b in zip(results, refill))


def test_beam_one_with_a_length_penalty_is_greedy_with_a_penalized_score():
    tables = bigram_tables(batch=8, vocab=5, seed=3)

    def step(prev, s):
        return tables[s["sentence"], prev], s, None

    options = dict(bos_index=BOS, eos_index=EOS, max_length=6)
    greedy = most_probable(step, {"sentence": torch.arange(8)}, **options)
    beam1 = most_probable(step, {"sentence": torch.arange(8)}, beam_size=1, **options, **ONMT)
    for g, b in zip(greedy, beam1):
        ended = len(g[0].tokens) < 6
        assert b[0].tokens == g[0].tokens
        assert b[0].score == pytest.approx(g[0].score / (len(g[0].tokens) + ended + 1))


def test_length_limits_follow_each_rule():
    base = dict(SEARCH_SETTINGS)
    assert length_limits([3, 60], base) == [130, 130]  # seqlearn: from the longest input
    assert length_limits([3, 60], base | {"max_length": 7}) == [7, 7]
    onmt = base | {"max_length": 250, "max_length_ratio": 1.25, "max_length_offset": 5}
    assert length_limits([3, 4, 400], onmt) == [8, 10, 250]  # int(min(250, 1.25 n + 5))
    assert length_limits([3, 4, 400], onmt | {"max_length": 10}) == [8, 10, 10]
    joey = base | {"max_length_ratio": 1.5, "max_length_ratio_limits": "unset"}
    assert length_limits([3, 4], joey) == [4, 6]  # int(1.5 n)
    assert length_limits([3, 4], joey | {"max_length": 10}) == [10, 10]


def tiny(**options) -> Seq2Seq:
    torch.manual_seed(0)
    src = Vocab.build([["a", "b", "c", "d"]])
    tgt = Vocab.build([["x", "y", "z"]])
    model = Seq2Seq(src, tgt, embedding_dim=6, hidden_size=8, dropout=0.0, **options)
    with torch.no_grad():
        model.generator.weight.mul_(3.0)
    return model.eval()


SOURCES = [["a"], ["b", "c", "a", "d", "b", "c"], ["d", "a"], ["c", "c", "b"]]


def keys(results):
    return [[(h.tokens, round(h.score, 6)) for h in hyps] for hyps in results]


def test_search_defaults_are_used_for_the_settings_the_caller_does_not_pass():
    defaults = ONMT | {"max_length": 250, "max_length_ratio": 1.25, "max_length_offset": 1}
    model = tiny(search_defaults=defaults)
    plain = tiny()
    for beam in (1, 3):
        own = model.translate(SOURCES, beam_size=beam)
        assert keys(own) == keys(plain.translate(SOURCES, beam_size=beam, **defaults))
        for src, hyps in zip(SOURCES, own):  # each sentence its own limit: int(1.25 (n + 1) + 1)
            assert len(hyps[0].tokens) <= int(1.25 * (len(src) + 1) + 1)
            assert keys([hyps]) == keys(model.translate([src], beam_size=beam))
    # what the caller passes wins, None included
    assert keys(model.translate(SOURCES, beam_size=3, length_penalty=None, stopping="exact", beam_refill=True,
                                max_length_ratio=None, max_length=None)) == keys(plain.translate(SOURCES, beam_size=3))
    # a native model decodes as before: greedy by default, scores summed log-probabilities
    assert keys(plain.translate(SOURCES)) == keys(plain.translate(SOURCES, beam_size=1, length_penalty=None))
    assert plain.search_settings() == SEARCH_SETTINGS


def test_search_defaults_survive_a_checkpoint(tmp_path):
    import pytorch_lightning as pl

    model = tiny(search_defaults=ONMT)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = Seq2Seq.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.search_settings()["stopping"] == "first"
    assert keys(loaded.eval().translate(SOURCES, beam_size=3)) == keys(model.translate(SOURCES, beam_size=3))


def test_unknown_search_settings_are_refused():
    with pytest.raises(ConfigError, match="search_defaults.*beam_width"):
        tiny(search_defaults={"beam_width": 5})
    with pytest.raises(ConfigError, match="max_length_ratio_limits"):
        tiny(search_defaults={"max_length_ratio_limits": "sometimes"})
    with pytest.raises(ConfigError, match="beam_width"):
        tiny().translate(SOURCES, beam_width=5)


def test_mask_specials_modes():
    """before_softmax: <pad>/<s> get no probability; after_softmax: the softmax covers them,
    search forbids them; none: they keep their probability."""
    sources = [["a", "b"]]
    logs = {}
    for mode in ("before_softmax", "after_softmax", "none"):
        model = tiny(mask_specials=mode)
        state = model.start(model._source_batch(sources))
        log_probs, _, _ = model.search_step(torch.tensor([model.tgt_vocab.bos_index]), state)
        logs[mode] = log_probs[0]
    specials = [model.tgt_vocab.pad_index, model.tgt_vocab.bos_index]
    others = [i for i in range(len(model.tgt_vocab)) if i not in specials]
    assert torch.isinf(logs["before_softmax"][specials]).all() and torch.isinf(logs["after_softmax"][specials]).all()
    assert torch.isfinite(logs["none"]).all()
    assert torch.allclose(logs["after_softmax"][others], logs["none"][others])
    assert math.isclose(logs["before_softmax"].exp().sum().item(), 1.0, rel_tol=1e-5)
    assert logs["after_softmax"].exp().sum().item() < 1.0
    with pytest.raises(ConfigError, match="mask_specials"):
        tiny(mask_specials="sometimes")
