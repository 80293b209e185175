"""Streaming inference, one token at a time with constant memory, against the batch forward:
RNNEncoder.step, LanguageModel.step and the causal Tagger's step."""
from __future__ import annotations

import pytest
import torch

from seqlearn.batching import pad
from seqlearn.encoder import RNNEncoder
from seqlearn.errors import ConfigError
from seqlearn.language_model import LanguageModel
from seqlearn.tagger import Tagger
from seqlearn.vocab import Vocab

CELLS = ["gru", "lstm", "rnn"]
WORDS = "the a dog cat runs sleeps on mat big small".split()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("fused", [True, False])
def test_encoder_step_equals_forward(cell, fused):
    torch.manual_seed(0)
    encoder = RNNEncoder(5, 7, cell, num_layers=3, bidirectional=False, dropout=0.4).eval()
    encoder.use_fused = fused
    x = torch.randn(4, 9, 5)
    expected, finals = encoder(x)
    state = encoder.init_state(4)
    outputs = []
    for t in range(9):
        out, state = encoder.step(x[:, t], state)
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs, 1), expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(encoder.unpack_state(state), finals):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="unidirectional"):
        RNNEncoder(5, 7, cell, bidirectional=True).init_state(1)


@pytest.mark.parametrize("cell", CELLS)
def test_language_model_step_equals_batch_forward(cell):
    torch.manual_seed(1)
    model = LanguageModel(Vocab.build([WORDS]), cell=cell, embedding_dim=10, hidden_size=14, num_layers=2,
                          dropout=0.3, input_dropout=0.2)  # fmt: skip
    model.eval()
    ids = torch.randint(4, len(model.vocab), (3, 11))
    with torch.no_grad():
        logits, _ = model(ids)
    expected = torch.log_softmax(logits, -1)
    state = model.init_state(3)
    for t in range(ids.size(1)):
        log_probs, state = model.step(ids[:, t], state)
        torch.testing.assert_close(log_probs, expected[:, t], atol=1e-5, rtol=1e-5)

    # one stream of token strings: (V,) per token, the same numbers as row 0
    state = model.init_state()
    for t, token in enumerate(model.vocab.itos[i] for i in ids[0].tolist()):
        log_probs, state = model.step(token, state)
        assert log_probs.shape == (len(model.vocab),)
        torch.testing.assert_close(log_probs, expected[0, t], atol=1e-5, rtol=1e-5)
    assert all(t.shape == (1, 14) for t in state.values())  # the state never grows


def tagging_vocabs() -> tuple[Vocab, Vocab, Vocab]:
    words = Vocab.build([WORDS])
    tags = Vocab.build([["DET", "NOUN", "VERB", "ADP", "ADJ"]], specials=("<pad>",))
    chars = Vocab.build([list(w) for w in WORDS])
    return words, tags, chars


@pytest.mark.parametrize("char_features", [None, "cnn", "bilstm"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_causal_tagger_step_equals_batch_forward(char_features, cell):
    torch.manual_seed(2)
    words, tags, chars = tagging_vocabs()
    tagger = Tagger(words, tags, chars, char_features=char_features, cell=cell, bidirectional=False, head="softmax",
                    embedding_dim=8, char_dim=6, char_out_dim=6, hidden_size=10, num_layers=2, word_dropout=0.3)  # fmt: skip
    tagger.eval()
    sentences = [["the", "big", "dog", "runs"], ["a", "cat", "sleeps", "on", "the", "mat"], ["small"]]
    batch_words, batch_chars = tagger.encode(sentences)
    with torch.no_grad():
        expected = tagger(batch_words, batch_chars).softmax(-1)  # (3, 6, K); padding rows unused

    # all three streams at once, by token string (a finished stream reads filler that is never checked)
    state = tagger.init_state(len(sentences))
    for t in range(max(map(len, sentences))):
        tokens = [s[t] if t < len(s) else "the" for s in sentences]
        probs, state = tagger.step(tokens, state)
        for i, s in enumerate(sentences):
            if t < len(s):
                torch.testing.assert_close(probs[i], expected[i, t], atol=1e-5, rtol=1e-5)

    # one stream, by word ids (and char ids): the same numbers
    state = tagger.init_state()
    sentence = sentences[1]
    for t, word in enumerate(sentence):
        ids = torch.tensor([words[word]])
        word_chars = None if char_features is None else pad([chars.encode(list(word))], chars.pad_index).ids
        probs, state = tagger.step(ids, state, word_chars)
        torch.testing.assert_close(probs[0], expected[1, t], atol=1e-5, rtol=1e-5)
    assert tagger.tag_names[int(probs[0].argmax())] == tagger.predict([sentence])[0].tags[-1]


def test_taggers_that_read_the_future_refuse_to_stream():
    words, tags, chars = tagging_vocabs()
    for options in ({"bidirectional": True, "head": "softmax"}, {"bidirectional": False, "head": "crf"}):
        tagger = Tagger(words, tags, None, char_features=None, hidden_size=4, embedding_dim=4, **options)
        with pytest.raises(ConfigError, match="causal"):
            tagger.init_state()
