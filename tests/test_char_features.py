"""Char-CNN and char-BiLSTM word features: shapes, padding invariance, independent oracles."""
from __future__ import annotations

import pytest
import torch

from seqlearn import registry
from seqlearn.char_features import CharBiLSTM, CharCNN, build_char_features
from seqlearn.errors import ConfigError, UnknownComponentError

torch.set_num_threads(1)

PAD = 0
WORDS = [[[5, 6, 7], [8], [9, 10, 11, 12, 13]], [[4, 4], [7, 3, 2, 9]]]  # 2 sentences of char-id words


def _batch(words: list[list[list[int]]], width: int, length: int) -> torch.Tensor:
    """``(len(words), length, width)`` char ids, right-padded with PAD."""
    out = torch.full((len(words), length, width), PAD, dtype=torch.long)
    for b, sent in enumerate(words):
        for t, word in enumerate(sent):
            out[b, t, : len(word)] = torch.tensor(word)
    return out


@pytest.fixture(params=["bilstm", "cnn"])
def extractor(request):
    torch.manual_seed(0)
    return build_char_features(request.param, num_chars=14, char_dim=6, out_dim=8).eval()


def test_shape_and_zero_vector_for_padding_words(extractor):
    chars = _batch(WORDS, width=5, length=3)
    out = extractor(chars)
    assert out.shape == (2, 3, 8)
    assert torch.equal(out[1, 2], torch.zeros(8))  # sentence 2 has only 2 words
    assert out[0].abs().sum(-1).min() > 0


def test_padding_width_and_batch_company_do_not_change_features(extractor):
    tight = extractor(_batch(WORDS, width=5, length=3))
    wide = extractor(_batch(WORDS, width=11, length=6))
    torch.testing.assert_close(wide[:, :3], tight, rtol=0, atol=1e-6)
    assert torch.equal(wide[:, 3:], torch.zeros_like(wide[:, 3:]))
    alone = extractor(_batch(WORDS[1:], width=4, length=2))
    torch.testing.assert_close(alone[0], tight[1, :2], rtol=0, atol=1e-6)


def test_padding_chars_do_not_matter_even_if_pad_embedding_is_nonzero():
    torch.manual_seed(1)
    cnn = CharCNN(14, char_dim=6, out_dim=8).eval()
    before = cnn(_batch(WORDS, width=7, length=3))
    with torch.no_grad():
        cnn.embedding.weight[PAD] = 3.0
    torch.testing.assert_close(cnn(_batch(WORDS, width=7, length=3)), before, rtol=0, atol=1e-6)


def test_char_cnn_equals_explicit_windows():
    """Each filter's output is the max over real positions of a dot product with the
    zero-padded window of embeddings around that position."""
    torch.manual_seed(2)
    cnn = CharCNN(14, char_dim=4, out_dim=3, kernel_size=3).eval()
    word = [9, 10, 11, 12, 13]
    got = cnn(_batch([[word]], width=9, length=1))[0, 0]
    emb = cnn.embedding.weight[torch.tensor(word)]
    padded = torch.cat([torch.zeros(1, 4), emb, torch.zeros(1, 4)])
    w, b = cnn.conv.weight, cnn.conv.bias  # (3, 4, 3), (3,)
    scores = torch.stack([(w * padded[i : i + 3].T).sum((1, 2)) + b for i in range(len(word))])
    torch.testing.assert_close(got, scores.amax(0), rtol=1e-5, atol=1e-6)


def test_char_bilstm_equals_lstm_run_on_each_word_alone():
    torch.manual_seed(3)
    lstm = CharBiLSTM(14, char_dim=5, out_dim=6).eval()
    got = lstm(_batch(WORDS, width=6, length=3))
    for b, sent in enumerate(WORDS):
        for t, word in enumerate(sent):
            _, (h, _) = lstm.lstm(lstm.embedding(torch.tensor([word])))
            torch.testing.assert_close(got[b, t], torch.cat([h[0, 0], h[1, 0]]), rtol=1e-5, atol=1e-6)


def test_gradients_reach_char_embeddings(extractor):
    out = extractor.train()(_batch(WORDS, width=5, length=3))
    out.sum().backward()
    grad = extractor.embedding.weight.grad
    assert grad[5].abs().sum() > 0
    assert torch.equal(grad[PAD], torch.zeros_like(grad[PAD]))


def test_extractors_are_registered_builtins():
    for name, cls in (("cnn", CharCNN), ("bilstm", CharBiLSTM)):
        assert registry.char_features.get(name) is cls and registry.char_features.provenance(name).builtin
        assert build_char_features(name, 10, 4, 8).provenance.name == name


def test_bad_configuration_errors():
    with pytest.raises(UnknownComponentError, match="unknown char feature extractor 'rnn'.*cnn"):
        build_char_features("rnn", 10, 4, 8)
    with pytest.raises(ConfigError, match="even"):
        CharBiLSTM(10, out_dim=7)


def test_all_empty_batch_gives_zeros(extractor):
    out = extractor(torch.zeros(2, 3, 4, dtype=torch.long))
    assert torch.equal(out, torch.zeros(2, 3, 8))
