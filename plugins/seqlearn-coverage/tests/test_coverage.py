"""The coverage decoder: the running sum it keeps, its effect on the scores, the search
protocol (greedy, beam, reordering), and learning."""
from __future__ import annotations

import importlib.metadata as md

import pytest
import torch
from seqlearn import Seq2Seq, Vocab, registry
from seqlearn.batching import pad
from seqlearn.decoders import BahdanauDecoder
from seqlearn.testing import train_on_default_task
from seqlearn_coverage import CoverageDecoder

SOURCES = ["a b c d", "d c", "b a a c d", "c"]
TARGETS = ["x y z", "z w", "w x y y", "y"]


def _model(**options) -> Seq2Seq:
    torch.manual_seed(0)
    src = Vocab.build(s.split() for s in SOURCES)
    tgt = Vocab.build(t.split() for t in TARGETS)
    model = Seq2Seq(src, tgt, decoder="coverage", embedding_dim=8, hidden_size=12, dropout=0.0, **options).eval()
    with torch.no_grad():
        model.decoder.coverage_weight.mul_(10.0)  # a strong coverage term: its effect (and its bugs) show
    return model


def _start(model: Seq2Seq):
    src = pad([model.src_vocab.encode(s.split(), add_eos=True) for s in SOURCES], model.src_vocab.pad_index)
    return src, model.start(src)


def test_the_entry_point_provides_the_decoder():
    assert registry.decoders.get("coverage") is CoverageDecoder
    prov = registry.decoders.provenance("coverage")
    assert (prov.distribution, prov.version) == ("seqlearn-coverage", md.version("seqlearn-coverage"))
    model = _model()
    assert model.provenance()["decoder"]["distribution"] == "seqlearn-coverage"
    assert isinstance(model.decoder, BahdanauDecoder)


@torch.no_grad()
def test_coverage_is_the_running_sum_of_the_returned_attention():
    model = _model()
    src, state = _start(model)
    assert bool((state["coverage"] == 0).all()) and state["coverage"].shape == src.ids.shape
    tokens, total = torch.full((len(SOURCES),), model.tgt_vocab.bos_index), torch.zeros(src.ids.shape)
    for _ in range(5):
        _, state, attn = model.search_step(tokens, state)
        total += attn
        torch.testing.assert_close(state["coverage"], total)
        assert bool((state["coverage"][~src.mask] == 0).all())  # padding is never covered
        tokens = torch.randint(4, len(model.tgt_vocab), tokens.shape)
    # every real source position has some coverage, and each step adds exactly one unit of attention
    torch.testing.assert_close(state["coverage"].sum(-1), torch.full((len(SOURCES),), 5.0))


@torch.no_grad()
def test_the_attention_reads_the_coverage_as_see_et_al_write_it():
    """e_tj = v · tanh(W s + U m_j + w cov_tj): the second step's weights by hand, and a
    zero w gives back the plain Bahdanau decoder with the same parameters."""
    model = _model()
    src, state = _start(model)
    tokens = torch.full((len(SOURCES),), model.tgt_vocab.bos_index)
    _, state, _ = model.search_step(tokens, state)
    s_prev = state["hidden.0.0"]  # a GRU: the state is the top output the attention reads
    att = model.decoder.attention
    w_q, u_m = att.query_layer(s_prev)[:, None], att.key_layer(state["memory"])
    scores = torch.tanh(w_q + u_m + state["coverage"][..., None] * model.decoder.coverage_weight) @ att.energy
    expected = torch.softmax(scores.masked_fill(~src.mask, -torch.inf), -1)
    _, _, attn = model.search_step(tokens, state)
    torch.testing.assert_close(attn, expected)

    model.decoder.coverage_weight.zero_()
    plain = Seq2Seq(model.src_vocab, model.tgt_vocab, decoder="bahdanau", embedding_dim=8, hidden_size=12,
                    dropout=0.0).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "decoder.coverage_weight"})
    tgt = pad([model.tgt_vocab.encode(t.split(), add_bos=True) for t in TARGETS], model.tgt_vocab.pad_index).ids
    torch.testing.assert_close(model(src, tgt), plain(src, tgt))


@torch.no_grad()
def test_every_state_tensor_is_batch_first_and_reorders_with_the_batch():
    model = _model()
    src, state = _start(model)
    order = torch.tensor([2, 0, 3, 1])
    tokens = torch.tensor([4, 5, 6, 7])
    for _ in range(3):
        assert all(t.size(0) == len(SOURCES) for t in state.values())
        reordered = {k: t.index_select(0, order) for k, t in state.items()}
        log_probs, state, attn = model.search_step(tokens, state)
        r_log_probs, r_state, r_attn = model.search_step(tokens[order], reordered)
        torch.testing.assert_close(r_log_probs, log_probs[order])
        torch.testing.assert_close(r_attn, attn[order])
        torch.testing.assert_close(r_state["coverage"], state["coverage"][order])


def test_greedy_and_beam_search_run_through_it():
    model = _model()
    greedy = model.translate(SOURCES, beam_size=1, max_length=8)
    beam1 = model.translate(SOURCES, beam_size=1, n_best=1, max_length=8, length_penalty="average", alpha=0.0)
    for g, b in zip(greedy, beam1):
        assert g[0].tokens == b[0].tokens
        assert g[0].score == pytest.approx(b[0].score, abs=1e-5)
    # beams reorder the coverage with the rest of the state: every hypothesis of a wide
    # beam scores what the model gives its tokens teacher-forced, with the coverage they built
    beams = model.translate(SOURCES, beam_size=4, n_best=4, max_length=6)
    for source, hyps in zip(SOURCES, beams):
        finished = [h for h in hyps if len(h.tokens) < 6]
        assert len(finished) >= 2
        scores = model.score([source] * len(finished), [h.tokens for h in finished])
        torch.testing.assert_close(scores, torch.tensor([h.score for h in finished]), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_a_seq2seq_with_the_coverage_decoder_learns_the_default_task():
    # 200 updates of 512 tokens (seqlearn.testing.SMALL_MODEL): this run gives a validation loss
    # of 0.52, the Bahdanau decoder 0.48, and a decoder without attention (decoder="plain")
    # 0.98: below 0.8 means it attends
    model, loss = train_on_default_task(steps=200, decoder="coverage")
    assert type(model.decoder) is CoverageDecoder
    assert loss < 0.8
