"""Ensembles against oracles: one model, or two copies of it, translate exactly as the model
does; a real ensemble's step log-probabilities are the mean of the members' own
teacher-forced log-softmax, its greedy and beam outputs are what brute force over that mean
finds; mismatched members are refused; ``seqlearn translate --ckpt A B`` is the ensemble."""
from __future__ import annotations

import io
import sys
from itertools import product

import pytest
import torch
from test_export import SRC_WORDS, TGT_WORDS, save_checkpoint, tiny_seq2seq

from seqlearn import ConfigError, Ensemble, Seq2Seq, Vocab, search
from seqlearn.batching import pad
from seqlearn.cli import main
from seqlearn.protocols import SearchModel, decode

torch.set_num_threads(1)

SOURCES = [["s1", "s2"], ["s3", "s1", "s4", "s2", "s5"], ["s6"], ["s0", "s11", "s7"], ["s9", "s9", "s10"], ["s8", "s5"]]


def hypotheses(results):
    return [[(h.tokens, h.score, h.attention) for h in hyps] for hyps in results]


def assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        assert [(t, s) for t, s, _ in g] == [(t, s) for t, s, _ in w]  # exactly: same tokens, same float scores
        for (_, _, a), (_, _, b) in zip(g, w):
            assert (a is None and b is None) or torch.equal(a, b)


# seeds and </s> biases whose translations end at different lengths, some cut at max_length
@pytest.mark.parametrize("seed, eos_bias, options", [
    (4, 0.2, dict(beam_size=1)), (5, 0.4, dict(beam_size=5, n_best=3)),
    (5, 0.4, dict(beam_size=5, length_penalty="gnmt", alpha=0.6, coverage_penalty=0.2)),
])
def test_one_model_or_two_copies_translate_exactly_as_the_model(seed, eos_bias, options):
    model = tiny_seq2seq(seed=seed, eos_bias=eos_bias)
    want = hypotheses(model.translate(SOURCES, max_length=9, return_attention=True, **options))
    lengths = {len(hyps[0][0]) for hyps in want}
    assert len(lengths) >= 3 and 9 in lengths  # several lengths, and the cut
    for members in ([model], [model, model]):
        got = hypotheses(Ensemble(members).translate(SOURCES, max_length=9, return_attention=True, **options))
        assert_same(got, want)


def test_two_copies_sample_and_score_as_the_model():
    model = tiny_seq2seq(seed=4, eos_bias=0.2)
    ensemble = Ensemble([model, model])
    draw = dict(num_samples=3, max_length=7, temperature=0.8, top_k=5)
    want = model.sample(SOURCES, generator=torch.Generator().manual_seed(4), **draw)
    got = ensemble.sample(SOURCES, generator=torch.Generator().manual_seed(4), **draw)
    assert_same(hypotheses(got), hypotheses(want))
    targets = [["t1", "t2"], ["t3"], [], ["t4", "t4", "t0"], ["t8"], ["t6", "t7"]]
    assert torch.equal(ensemble.score(SOURCES, targets), model.score(SOURCES, targets))


def mean_log_softmax(models, source, tokens):
    """The oracle: ``(len(tokens) + 1, V)``, the mean over ``models`` of each one's own
    teacher-forced ``log_softmax(forward(...))`` after ``<s> tokens``, each reading
    ``source`` with its own source vocabulary."""
    rows = []
    for model in models:
        tgt = model.tgt_vocab
        src = pad([model.src_vocab.encode(source, add_eos=True)], model.src_vocab.pad_index)
        tgt_in = torch.tensor([[tgt.bos_index] + tgt.encode(tokens)])
        with torch.no_grad():
            rows.append(torch.log_softmax(model(src, tgt_in)[0].float(), -1))
    return sum(rows) / len(rows)


def oracle_score(models, source, tokens, ended):
    """Summed mean log-probability of ``tokens`` (and ``</s>`` when ``ended``)."""
    table = mean_log_softmax(models, source, tokens)
    eos = models[0].tgt_vocab.eos_index
    ids = models[0].tgt_vocab.encode(tokens) + ([eos] if ended else [])
    return float(sum(table[t, i] for t, i in enumerate(ids)))


def other_source_vocab():
    """The source words in another order, with two more: ids differ from the first model's."""
    return Vocab([*reversed(SRC_WORDS), "s12", "s13"])


@pytest.fixture
def members():
    a = tiny_seq2seq(seed=4, eos_bias=0.2)
    b = tiny_seq2seq(seed=5, eos_bias=0.4, cell="lstm", attention="luong-general", decoder="luong")
    torch.manual_seed(7)
    c = Seq2Seq(other_source_vocab(), Vocab(TGT_WORDS), embedding_dim=5, hidden_size=6, dropout=0.0).eval()
    with torch.no_grad():
        c.generator.weight.mul_(3.0)
    return [a, b, c]


def test_step_log_probs_are_the_mean_of_the_members_log_softmax(members):
    ensemble = Ensemble(members)
    assert isinstance(ensemble, SearchModel)
    source, prefix = ["s3", "s12", "s1"], ["t2", "t5", "t5"]  # s12: <unk> to two members, known to the third
    want = mean_log_softmax(members, source, prefix)
    tokens = [ensemble.tgt_vocab.bos_index] + ensemble.tgt_vocab.encode(prefix)
    with torch.no_grad():
        state = ensemble.start(ensemble._source_batch([source]))
        steps = []
        for token in tokens:
            log_probs, state, attn = ensemble.search_step(torch.tensor([token]), state)
            steps.append((log_probs, attn))
    for t, (log_probs, attn) in enumerate(steps):
        assert log_probs.dtype == torch.float32
        torch.testing.assert_close(log_probs[0], want[t], rtol=0, atol=1e-5)
        assert attn.shape == (1, len(source) + 1) and float(attn.sum()) == pytest.approx(1.0, abs=1e-5)
    # and they differ from any one member's: the ensemble is not one of them
    assert all(not torch.allclose(want, mean_log_softmax([m], source, prefix), atol=1e-3) for m in members)


def brute_force(models, source, words):
    """Every output of up to 2 ``words`` then ``</s>``, or of 3 words cut at ``max_length``
    3, with its oracle score, best first."""
    eos = models[0].tgt_vocab.eos_index
    scored = {}
    for prefix in product(words, repeat=2):
        table = mean_log_softmax(models, source, list(prefix))  # rows after <s>, after 1 and 2 words
        ids = models[0].tgt_vocab.encode(list(prefix))
        steps = [float(table[t, i]) for t, i in enumerate(ids)]
        scored[()] = float(table[0, eos])
        scored[prefix[:1]] = steps[0] + float(table[1, eos])
        scored[prefix] = sum(steps) + float(table[2, eos])
        for word, row in zip(words, table[2, models[0].tgt_vocab.encode(list(words))].tolist()):
            scored[(*prefix, word, None)] = sum(steps) + row  # None: cut, no </s>
    return sorted(((score, [w for w in out if w is not None]) for out, score in scored.items()), reverse=True)


def test_greedy_and_beam_find_what_brute_force_over_the_mean_finds(members):
    ensemble = Ensemble(members)
    words = [*TGT_WORDS, "<unk>"]  # every token search may produce
    for source in SOURCES[:3]:
        greedy = ensemble.translate([source], max_length=6)[0][0]
        table = mean_log_softmax(members, source, greedy.tokens)
        ended = len(greedy.tokens) < 6
        ids = ensemble.tgt_vocab.encode(greedy.tokens) + ([ensemble.tgt_vocab.eos_index] if ended else [])
        assert [int(row.argmax()) for row in table[: len(ids)]] == ids
        assert greedy.score == pytest.approx(oracle_score(members, source, greedy.tokens, ended), abs=1e-4)
        best = brute_force(members, source, words)[:3]
        beam = ensemble.translate([source], beam_size=len(words) ** 2, n_best=3, max_length=3)[0]
        assert [h.tokens for h in beam] == [t for _, t in best]
        assert [h.score for h in beam] == pytest.approx([s for s, _ in best], abs=1e-4)


def test_score_sums_the_mean_log_probs(members):
    targets = [["t1", "t2"], ["t3", "t0", "t3"], [], ["t8"], ["<unk>"], ["t6", "t7"]]
    want = [oracle_score(members, s, t, True) for s, t in zip(SOURCES, targets)]
    assert Ensemble(members).score(SOURCES, targets).tolist() == pytest.approx(want, abs=1e-4)


def test_strategies_run_on_the_ensemble_through_the_protocol(members):
    ensemble = Ensemble(members[:2])  # one source vocabulary: one Padded batch serves both
    src = pad([ensemble.src_vocab.encode(s, add_eos=True) for s in SOURCES], ensemble.src_vocab.pad_index)
    common = dict(bos_index=ensemble.tgt_vocab.bos_index, eos_index=ensemble.tgt_vocab.eos_index, max_length=8)
    with torch.no_grad():
        greedy = decode(ensemble, search.greedy_search, src, **common)
        cold = decode(ensemble, search.sample, src, temperature=0.0, **common)
        beam1 = decode(ensemble, search.beam_search, src, beam_size=1, **common)
    key = [[(h.tokens, round(h.score, 5)) for h in hyps] for hyps in greedy]
    assert [[(h.tokens, round(h.score, 5)) for h in hyps] for hyps in cold] == key
    assert [[(h.tokens, round(h.score, 5)) for h in hyps] for hyps in beam1] == key
    translated = ensemble.translate(SOURCES, max_length=8)
    assert [[ensemble.tgt_vocab.itos[i] for i in hyps[0].tokens] for hyps in greedy] == [h[0].tokens for h in translated]


def test_mismatched_members_are_refused():
    model = tiny_seq2seq()
    torch.manual_seed(0)
    other_target = Seq2Seq(Vocab(SRC_WORDS), Vocab([*TGT_WORDS[:4], "u4", *TGT_WORDS[5:]]), embedding_dim=6,
                           hidden_size=8)
    with pytest.raises(ConfigError, match=r"the target vocabulary of b\.ckpt differs from that of a\.ckpt "
                                          r"\(\[8\]: 't4' vs 'u4'\)"):
        Ensemble([model, other_target], names=["a.ckpt", "b.ckpt"])
    chars = Seq2Seq(Vocab(SRC_WORDS), Vocab(TGT_WORDS), embedding_dim=6, hidden_size=8, src_tokenizer="char")
    with pytest.raises(ConfigError, match=r"the source tokenizer of model 1 differs .*'whitespace' vs 'char'"):
        Ensemble([model, chars])
    with pytest.raises(ConfigError, match="model 1 is a Tagger; an ensemble translates with Seq2Seq models"):
        from test_export import tiny_tagger

        Ensemble([model, tiny_tagger(None, "softmax")])
    with pytest.raises(ConfigError, match="at least one model"):
        Ensemble([])


# -- seqlearn translate --ckpt A B -------------------------------------------------------------------

LINES = ["s1 s2", "", "s3 s1 s4 s2 s5", "s6 s13"]


@pytest.fixture
def checkpoints(tmp_path):
    models = [tiny_seq2seq(seed=4, eos_bias=0.2), tiny_seq2seq(seed=5, eos_bias=0.4)]
    return [save_checkpoint(m, tmp_path / f"m{i}.ckpt") for i, m in enumerate(models)]


def test_cli_translates_with_the_ensemble_of_its_checkpoints(checkpoints, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(LINES) + "\n"))
    args = ["--beam-size", "4", "--n-best", "2", "--max-length", "7", "--tokens"]
    assert main(["translate", "--ckpt", *map(str, checkpoints), *args]) == 0
    rows = [line.split(" ||| ") for line in capsys.readouterr().out.splitlines()]
    ensemble = Ensemble.from_checkpoints(checkpoints, map_location="cpu")
    members = list(ensemble.models)
    hyps = ensemble.translate(LINES, beam_size=4, n_best=2, max_length=7)
    assert [(int(i), text) for i, text, _ in rows] == [(i, " ".join(h.tokens)) for i, hs in enumerate(hyps) for h in hs]
    assert [float(s) for *_, s in rows] == pytest.approx([h.score for hs in hyps for h in hs], abs=1e-5)
    # the scores are the mean of the members' log-probabilities, not one member's
    top = hyps[2][0]
    assert top.score == pytest.approx(oracle_score(members, LINES[2].split(), top.tokens, len(top.tokens) < 7),
                                      abs=1e-4)
    assert [h[0].tokens for h in hyps] != [h[0].tokens for h in members[1].translate(LINES, beam_size=4, max_length=7)]


def test_cli_refuses_checkpoints_with_other_target_vocabularies(tmp_path, checkpoints, monkeypatch, capsys):
    torch.manual_seed(0)
    other = Seq2Seq(Vocab(SRC_WORDS), Vocab(TGT_WORDS[:-1]), embedding_dim=6, hidden_size=8)
    path = save_checkpoint(other, tmp_path / "other.ckpt")
    monkeypatch.setattr(sys, "stdin", io.StringIO("s1\n"))
    assert main(["translate", "--ckpt", str(checkpoints[0]), str(path)]) == 2
    err = capsys.readouterr().err
    assert f"the target vocabulary of {path} differs from that of {checkpoints[0]} (13 vs 12 items)" in err
    assert main(["translate", "--ckpt", str(checkpoints[0]), str(tmp_path / "gone.ckpt")]) == 2
    assert "gone.ckpt: no such checkpoint file" in capsys.readouterr().err
