"""The search and streaming protocols of seqlearn.protocols: which models satisfy them, and
search driven through the protocol by a model that owes seqlearn nothing (checked against
brute-force enumeration)."""
from __future__ import annotations

import pytest
import torch

from seqlearn import LanguageModel, Seq2Seq, SequenceClassifier, Tagger, Vocab, search
from seqlearn.protocols import SearchModel, StreamingModel, decode
from test_search import BOS, EOS, assert_nbest_equal, brute_force, one

WORDS, TAGS = Vocab(["a", "b", "c"]), Vocab(["O", "B-X"], specials=("<pad>",))
SMALL = {"embedding_dim": 4, "hidden_size": 4}


class TableModel:
    """A first-order Markov model per source sentence, a plain class: ``start`` takes a list
    of sentence ids, ``search_step`` looks up log p(next | prev) in that sentence's table."""

    def __init__(self, sentences: int, vocab: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.tables = (2.0 * torch.randn(sentences, vocab, vocab, generator=g, dtype=torch.float64)).log_softmax(-1)

    def start(self, source: list[int]) -> dict[str, torch.Tensor]:
        return {"sentence": torch.tensor(source)}

    def search_step(self, prev_tokens, state):
        return self.tables[state["sentence"], prev_tokens], state, None


def models() -> dict[str, object]:
    torch.manual_seed(0)
    return {
        "seq2seq": Seq2Seq(WORDS, WORDS, **SMALL),
        "language_model": LanguageModel(WORDS, **SMALL),
        "causal_tagger": Tagger(WORDS, TAGS, char_features=None, bidirectional=False, head="softmax", **SMALL),
        "forward_classifier": SequenceClassifier(WORDS, ["yes", "no"], bidirectional=False, **SMALL),
    }


@pytest.mark.parametrize("name, searchable, streaming", [
    ("seq2seq", True, False), ("language_model", True, True), ("causal_tagger", False, True),
    ("forward_classifier", False, True),
])  # fmt: skip
def test_models_satisfy_their_protocols(name, searchable, streaming):
    model = models()[name]
    assert isinstance(model, SearchModel) is searchable
    assert isinstance(model, StreamingModel) is streaming


@pytest.mark.parametrize("name", ["language_model", "causal_tagger", "forward_classifier"])
def test_streaming_models_step_parallel_streams_from_init_state(name):
    """init_state(batch_size) and step(ids, state) over 2 streams give, row by row, what each
    stream gives alone."""
    model: StreamingModel = models()[name].eval()
    streams = torch.tensor([[4, 5, 6], [6, 4, 4]])
    state, alone = model.init_state(batch_size=2), [model.init_state(1), model.init_state(1)]
    for t in range(streams.size(1)):
        out, state = model.step(streams[:, t], state)
        for i in range(2):
            single, alone[i] = model.step(streams[i : i + 1, t], alone[i])
            torch.testing.assert_close(out[i], single.reshape(out[i].shape))


def test_search_runs_through_the_protocol_on_a_non_seqlearn_model():
    model = TableModel(sentences=3, vocab=4, seed=1)
    assert isinstance(model, SearchModel) and not isinstance(model, StreamingModel)
    options = {"bos_index": BOS, "eos_index": EOS, "max_length": 4}
    beams = decode(model, search.beam_search, [0, 1, 2], beam_size=64, n_best=3, **options)
    greedy = decode(model, search.greedy_search, [0, 1, 2], **options)
    state = model.start([0, 1, 2])
    for i in range(3):
        oracle = brute_force(model.search_step, one(state, i), 4, 4)
        assert_nbest_equal(beams[i], oracle)
        assert greedy[i][0].tokens == search.greedy_search(model.search_step, one(state, i), **options)[0][0].tokens


def test_seq2seq_translates_through_the_protocol():
    """translate() is decode() over start/search_step: the same hypotheses."""
    model = models()["seq2seq"].eval()
    src = model._source_batch([["a", "b"], ["c"]])
    with torch.no_grad():
        direct = decode(model, search.beam_search, src, bos_index=2, eos_index=3, max_length=6, beam_size=3, n_best=2)
    translated = model.translate([["a", "b"], ["c"]], beam_size=3, n_best=2, max_length=6)
    for hyps, mine in zip(translated, direct):
        assert [h.tokens for h in hyps] == [model._strings(h.tokens) for h in mine]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in mine], abs=1e-5)
