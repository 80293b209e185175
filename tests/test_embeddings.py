"""Pretrained vectors files: word2vec header, GloVe, lowercase fallback, coverage, errors with file:line."""
from __future__ import annotations

import gzip

import pytest
import torch
from torch import nn

from seqlearn.embeddings import load_embeddings
from seqlearn.errors import ConfigError, DataError
from seqlearn.vocab import Vocab

torch.set_num_threads(1)

VOCAB = Vocab(["the", "Paris", "apple", "Apple", "zebra", "EU"])
ROWS = {
    "the": [0.1, 0.2, 0.3],
    "paris": [1.0, -2.0, 3.5],
    "apple": [4.0, 5.0, 6.0],
    "Apple": [-4.0, -5.0, -6.0],
    "eu": [7.0, 8.0, 9.0],
    "unused": [0.0, 0.0, 1.0],
}


def _write(path, rows, header=None, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        if header:
            f.write(header + "\n")
        for word, values in rows.items():
            f.write(word + " " + " ".join(repr(v) for v in values) + " \n")  # word2vec writes a trailing space
    return path


@pytest.mark.parametrize("fmt", ["glove", "word2vec", "gz"])
def test_rows_of_found_words_equal_the_file(tmp_path, fmt):
    path = tmp_path / {"glove": "v.txt", "word2vec": "v.w2v", "gz": "v.txt.gz"}[fmt]
    _write(path, ROWS, header=f"{len(ROWS)} 3" if fmt == "word2vec" else None, opener=gzip.open if fmt == "gz" else open)
    emb = load_embeddings(path, VOCAB)
    row = VOCAB.stoi
    assert emb.vectors.shape == (len(VOCAB), 3)
    assert emb.vectors[row["the"]].tolist() == pytest.approx(ROWS["the"])
    assert emb.vectors[row["apple"]].tolist() == pytest.approx(ROWS["apple"])
    assert emb.vectors[row["Apple"]].tolist() == pytest.approx(ROWS["Apple"])  # exact beats lowercase
    assert emb.vectors[row["Paris"]].tolist() == pytest.approx(ROWS["paris"])  # lowercase fallback
    assert emb.vectors[row["EU"]].tolist() == pytest.approx(ROWS["eu"])
    found = {VOCAB.itos[i] for i in emb.found.nonzero().squeeze(-1).tolist()}
    assert found == {"the", "Paris", "apple", "Apple", "EU"}
    assert torch.equal(emb.vectors[row["zebra"]], torch.zeros(3))
    cov = emb.coverage
    assert (cov.dim, cov.words, cov.exact, cov.lowercased) == (3, 6, 3, 2)
    assert cov.coverage == pytest.approx(5 / 6)
    assert "5 of 6 words" in str(cov) and str(path) in str(cov)


def test_without_lowercase_fallback(tmp_path):
    emb = load_embeddings(_write(tmp_path / "v.txt", ROWS), VOCAB, lowercase_fallback=False)
    assert not emb.found[VOCAB.stoi["Paris"]]
    assert (emb.coverage.exact, emb.coverage.lowercased) == (3, 0)


def test_first_vector_of_a_word_wins(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("the 1 1\nthe 2 2\n", encoding="utf-8")
    assert load_embeddings(path, VOCAB).vectors[VOCAB.stoi["the"]].tolist() == [1.0, 1.0]


def test_copy_into_overwrites_found_rows_only(tmp_path):
    emb = load_embeddings(_write(tmp_path / "v.txt", ROWS), VOCAB)
    torch.manual_seed(0)
    layer = nn.Embedding(len(VOCAB), 3)
    before = layer.weight.detach().clone()
    emb.copy_into(layer)
    assert torch.equal(layer.weight[emb.found], emb.vectors[emb.found])
    assert torch.equal(layer.weight[~emb.found], before[~emb.found])
    with pytest.raises(ConfigError, match=r"v\.txt.*word dimension to 3"):
        emb.copy_into(nn.Embedding(len(VOCAB), 4))


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("the 1 2 3\napple 1 2\n", 2, r"expected a word and 3 values \(as on line 1\), found 2"),
        ("the 1 2 3\napple 1 2 3 4\n", 2, "found 4"),
        ("2 3\nthe 1 2 3\napple 1 2\n", 3, r"3 values \(as on the header\)"),
        ("2 3\nthe 1 2\n", 2, "found 2"),
        ("3 2\nthe 1 2\napple 3 4\n", 3, "header declares 3 vectors but the file has 2"),
        ("the 1 x 3\n", 1, "'x' is not a number"),
        ("the\n", 1, "at least one value"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.vec"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        load_embeddings(path, VOCAB)
    assert (err.value.path, err.value.line) == (str(path), line)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_empty_and_binary_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no vectors") as err:
        load_embeddings(empty, VOCAB)
    assert err.value.path == str(empty)
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"2 3\nthe \x80\x9f\xff\xfe\x00\x00\n")
    with pytest.raises(DataError, match="binary word2vec") as err:
        load_embeddings(binary, VOCAB)
    assert err.value.line == 2
    with pytest.raises(DataError, match="cannot read"):
        load_embeddings(tmp_path / "missing.txt", VOCAB)
