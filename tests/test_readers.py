"""Corpus readers: parsing, options, and a DataError naming file and line for every malformed input."""
from __future__ import annotations

import gzip
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlearn.errors import ConfigError, DataError, SeqlearnError
from seqlearn.readers import (
    ParallelExample,
    TaggedSentence,
    read_conll,
    read_conllu,
    read_parallel,
    read_tsv,
)


def write(path: Path, data: str | bytes) -> Path:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def assert_at(err: pytest.ExceptionInfo, path: Path, line: int) -> None:
    """The DataError names ``path`` and ``line``, in its fields and its message."""
    assert err.type is DataError
    assert err.value.path == str(path) and err.value.line == line
    assert str(err.value).startswith(f"{path}:{line}: ")


# -- parallel ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_parallel_aligns_lines(tmp_path, suffix):
    src = write(tmp_path / f"s.de{suffix}", "\ufeffEin Hund .\r\nZwei  Katzen\n")
    tgt = write(tmp_path / f"t.en{suffix}", "A dog .\r\nTwo cats\n")
    assert read_parallel(src, tgt) == [
        ParallelExample("Ein Hund .", "A dog .", ["Ein", "Hund", "."], ["A", "dog", "."], 1),
        ParallelExample("Zwei  Katzen", "Two cats", ["Zwei", "Katzen"], ["Two", "cats"], 2),
    ]


def test_gzip_is_recognised_by_magic_bytes_not_name(tmp_path):
    src = tmp_path / "s.txt"
    src.write_bytes(gzip.compress("Hallo Welt\n".encode()))
    tgt = write(tmp_path / "t.txt", "Hello world\n")
    assert read_parallel(src, tgt)[0].src == ["Hallo", "Welt"]


def test_read_parallel_options(tmp_path):
    src = write(tmp_path / "s", "A B\nC D E F\nG\nH I\n")
    tgt = write(tmp_path / "t", "a b\nc\nD E F G\nh i\n")
    lowered = read_parallel(src, tgt, lowercase=True)
    assert lowered[0].src == ["a", "b"] and lowered[0].src_text == "a b" and lowered[2].tgt == ["d", "e", "f", "g"]
    # max_length drops a pair when either side is longer
    assert [e.line for e in read_parallel(src, tgt, max_length=3)] == [1, 4]
    assert [e.line for e in read_parallel(src, tgt, max_length=3, limit=1)] == [1]
    assert read_parallel(src, tgt, limit=0) == []
    with pytest.raises(ConfigError):
        read_parallel(src, tgt, max_length=0)


def test_read_parallel_uses_tokenizer_names_and_objects(tmp_path):
    src = write(tmp_path / "s", "Ein Hund, der bellt.\n")
    tgt = write(tmp_path / "t", "a dog\n")

    class Reverse:  # a plugin-style tokenizer without tokenize_batch
        def tokenize(self, text):
            return text.split()[::-1]

    (ex,) = read_parallel(src, tgt, src_tokenizer="spacy:de", tgt_tokenizer=Reverse())
    assert ex.src == ["Ein", "Hund", ",", "der", "bellt", "."] and ex.tgt == ["dog", "a"]


def test_read_parallel_tokenizes_in_batches(tmp_path):
    src = write(tmp_path / "s", "".join(f"s {i}\n" for i in range(5000)))
    tgt = write(tmp_path / "t", "".join(f"t {i}\n" for i in range(5000)))

    class BatchOnly:
        def __init__(self):
            self.batches = []

        def tokenize(self, text):
            raise AssertionError("the reader must use tokenize_batch")

        def tokenize_batch(self, texts):
            self.batches.append(len(texts))
            return [t.split() for t in texts]

    tok = BatchOnly()
    pairs = read_parallel(src, tgt, src_tokenizer=tok, tgt_tokenizer="whitespace")
    assert len(pairs) == 5000 and pairs[4321].src == ["s", "4321"] and pairs[4321].line == 4322
    assert sum(tok.batches) == 5000 and 1 < len(tok.batches) < 10


def test_line_count_mismatch_names_both_counts(tmp_path):
    src = write(tmp_path / "s.de", "a\nb\nc\n")
    tgt = write(tmp_path / "t.en", "x\ny\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    assert_at(err, tgt, 3)
    assert f"{src} has 3 lines" in str(err.value) and f"{tgt} has 2 lines" in str(err.value)
    with pytest.raises(DataError) as err:
        read_parallel(tgt, src)
    assert_at(err, tgt, 3)
    assert f"{tgt} has 2 lines" in str(err.value) and f"{src} has 3 lines" in str(err.value)


def test_empty_lines_are_skipped_with_a_warning_or_raise(tmp_path):
    src = write(tmp_path / "s", "a\n\nc\nd\n")
    tgt = write(tmp_path / "t", "x\ny\n  \nw\n")
    with pytest.warns(UserWarning, match="skipped 2 pair") as rec:
        assert [e.line for e in read_parallel(src, tgt)] == [1, 4]
    assert f"{src}:2" in str(rec[0].message) and str(tgt) in str(rec[0].message)
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt, skip_empty=False)
    assert_at(err, src, 2)
    assert "empty source line" in str(err.value)
    with pytest.raises(DataError) as err:
        read_parallel(tgt, src, skip_empty=False)  # target side empty at line 2
    assert_at(err, src, 2)
    assert "empty target line" in str(err.value)


def test_tsv(tmp_path):
    path = write(tmp_path / "p.tsv", "Go.\tVa !\tCC-BY 2.0 (France)\n\nHi.\tSalut !\n")
    with pytest.warns(UserWarning, match="skipped 1 pair"):
        pairs = read_tsv(path, src_tokenizer="nltk:toktok", tgt_tokenizer="whitespace")
    assert [(e.src, e.tgt, e.line) for e in pairs] == [(["Go", "."], ["Va", "!"], 1), (["Hi", "."], ["Salut", "!"], 3)]
    with pytest.raises(DataError) as err:
        read_tsv(path, skip_empty=False)
    assert_at(err, path, 2)


def test_tsv_line_without_tab(tmp_path):
    path = write(tmp_path / "p.tsv", "a\tb\nno tab here\n")
    with pytest.raises(DataError, match="no tab") as err:
        read_tsv(path)
    assert_at(err, path, 2)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_invalid_utf8_names_its_line(tmp_path, suffix):
    path = write(tmp_path / f"p{suffix}", b"ok\tfine\nbad \xff\xfe\tbytes\n")
    with pytest.raises(DataError, match="invalid UTF-8") as err:
        read_tsv(path)
    assert_at(err, path, 2)
    other = write(tmp_path / f"q{suffix}", "a\nb\n")
    with pytest.raises(DataError) as err:
        read_parallel(other, path)
    assert_at(err, path, 2)


@pytest.mark.parametrize("name, data", [("e.txt", b""), ("e.gz", b""), ("e2.gz", gzip.compress(b""))])
def test_empty_file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    for read in (read_tsv, read_conll, read_conllu, lambda p: read_parallel(p, p)):
        with pytest.raises(DataError, match="empty") as err:
            read(path)
        assert_at(err, path, 1)


def test_corrupt_gzip(tmp_path):
    full = gzip.compress(("a\tb\n" * 50_000).encode())
    truncated = write(tmp_path / "t.gz", b"")
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="corrupt gzip") as err:
        read_tsv(truncated)
    assert err.value.path == str(truncated) and 1 < err.value.line <= 50_000
    assert str(err.value).startswith(f"{truncated}:{err.value.line}: ")

    garbled = tmp_path / "g.gz"
    garbled.write_bytes(full[:10] + b"\x00" * 40 + full[50:])
    with pytest.raises(DataError, match="corrupt gzip") as err:
        read_tsv(garbled)
    assert_at(err, garbled, 1)

    not_gzip = write(tmp_path / "plain.txt", "a\tb\n").rename(tmp_path / "plain.gz")
    with pytest.raises(DataError, match="not a gzip file") as err:
        read_tsv(not_gzip)
    assert_at(err, not_gzip, 1)


# -- CoNLL --------------------------------------------------------------------------------

CONLL = """\
-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC


"""


def test_read_conll(tmp_path):
    path = write(tmp_path / "ner.txt", CONLL)
    assert read_conll(path) == [
        TaggedSentence(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 3),
        TaggedSentence(["Peter", "Blackburn"], ["B-PER", "I-PER"], 7),
        TaggedSentence(["BRUSSELS"], ["B-LOC"], 12),
    ]
    pos = read_conll(path, tag_column=1, lowercase=True, max_length=2)
    assert [(s.tokens, s.tags) for s in pos] == [(["peter", "blackburn"], ["NNP", "NNP"]), (["brussels"], ["NNP"])]
    assert [s.line for s in read_conll(path, limit=2)] == [3, 7]


def test_read_conll_tabs_and_token_column(tmp_path):
    path = write(tmp_path / "c.tsv", "1\tThe\tDET\n2\tcat\tNOUN\n")
    (sent,) = read_conll(path, token_column=1, tag_column=2)
    assert sent.tokens == ["The", "cat"] and sent.tags == ["DET", "NOUN"]


def test_conll_wrong_column_count(tmp_path):
    path = write(tmp_path / "ner.txt", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError, match="3 columns.*first token line of the file has 4") as err:
        read_conll(path)
    assert_at(err, path, 2)


def test_conll_column_out_of_range(tmp_path):
    path = write(tmp_path / "ner.txt", "\n\nEU B-ORG\n")
    with pytest.raises(DataError, match="tag_column=3") as err:
        read_conll(path, tag_column=3)
    assert_at(err, path, 3)


CONLLU = """\
# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = 2
1\tNew York\tNew York\tPROPN\tNNP\t_\t0\troot\t_\t_
"""


def test_read_conllu(tmp_path):
    path = write(tmp_path / "ud.conllu.gz", CONLLU)
    assert read_conllu(path) == [
        TaggedSentence(["Do", "n't", "go", "."], ["AUX", "PART", "VERB", "PUNCT"], 4),
        TaggedSentence(["New York"], ["PROPN"], 11),
    ]
    assert [s.tags for s in read_conllu(path, tag_field="xpos", lowercase=True)] == [["VBP", "RB", "VB", "."], ["NNP"]]
    assert [s.tokens for s in read_conllu(path, lowercase=True, max_length=3)] == [["new york"]]
    with pytest.raises(ConfigError, match="tag_field"):
        read_conllu(path, tag_field="deprel")


@pytest.mark.parametrize(
    "bad_line, message",
    [("5\tword\tword\tNOUN\tNN\t_\t0\troot\t_", "9 tab-separated columns"), ("x\tw\tw\tX\tX\t_\t0\troot\t_\t_", "bad CoNLL-U ID")],
)
def test_conllu_malformed_line(tmp_path, bad_line, message):
    path = write(tmp_path / "ud.conllu", CONLLU + bad_line + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_conllu(path)
    assert_at(err, path, 12)


# -- any bytes: data or a seqlearn error ----------------------------------------------------

_FRAGMENTS = [
    "a b", "a\tb", "a b c d", "", " ", "-DOCSTART- -X- O", "# comment", "1\tw\tl\tNOUN\tNN\t_\t0\troot\t_\t_",
    "2\tv\tl\tVERB\tVB\t_\t1\tobj\t_\t_", "1-2\tw\t_\t_\t_\t_\t_\t_\t_\t_", "2.1\tw\t_\tX\t_\t_\t_\t_\t_\t_",
    "é\tü", "\r", "a\t", "\tb", "\ufeffa\tb", "\"x\" (y) don't\t«z»",
]
# lines of known fragments and of any text (lone surrogates encode to bytes no UTF-8 reader accepts)
_TEXT_LIKE = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8)), max_size=12).map(
    lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
_ANY_BYTES = st.one_of(
    st.binary(max_size=120),
    _TEXT_LIKE,
    _TEXT_LIKE.map(gzip.compress),
    st.tuples(_TEXT_LIKE.map(gzip.compress), st.integers(0, 60)).map(lambda t: t[0][: t[1]]),
    st.binary(max_size=60).map(lambda b: b"\x1f\x8b" + b),
    st.tuples(_TEXT_LIKE, st.binary(min_size=1, max_size=4)).map(lambda t: t[0] + t[1]),
)
_READERS = {  # between them, every built-in tokenizer
    "parallel": lambda p, q: read_parallel(p, q, src_tokenizer="spacy:en"),
    "parallel_nltk": lambda p, q: read_parallel(p, q, src_tokenizer="nltk:toktok", tgt_tokenizer="nltk:treebank"),
    "tsv": lambda p, q: read_tsv(p, tgt_tokenizer="char"),
    "conll": lambda p, q: read_conll(p),
    "conll_pos": lambda p, q: read_conll(p, token_column=0, tag_column=1),
    "conllu": lambda p, q: read_conllu(p),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_ANY_BYTES, other=_ANY_BYTES, name=st.sampled_from(["f.txt", "f.gz"]), reader=st.sampled_from(sorted(_READERS)))
def test_any_bytes_give_data_or_a_seqlearn_error(data, other, name, reader):
    with tempfile.TemporaryDirectory() as tmp:
        path, second = Path(tmp) / name, Path(tmp) / "g.txt"
        path.write_bytes(data)
        second.write_bytes(other)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = _READERS[reader](path, second)
            except SeqlearnError as exc:
                assert isinstance(exc, DataError) and exc.path in (str(path), str(second)) and exc.line >= 1
            else:
                assert isinstance(result, list)


# -- the real corpora ---------------------------------------------------------------------


@pytest.mark.shared_data
def test_conll2003_train(shared_data):
    sentences = read_conll(shared_data / "conll2003" / "train.txt")
    assert len(sentences) == 14_041
    assert sum(len(s.tokens) for s in sentences) == 203_621
    assert sentences[0].tokens[:2] == ["EU", "rejects"] and sentences[0].tags[0] == "B-ORG"


@pytest.mark.shared_data
def test_ud_ewt_dev(shared_data):
    sentences = read_conllu(shared_data / "ud-ewt" / "en_ewt-ud-dev.conllu.gz")
    assert len(sentences) == 2_001
    assert sum(len(s.tokens) for s in sentences) == 25_147
    assert {"NOUN", "VERB", "PUNCT"} <= {t for s in sentences for t in s.tags}


@pytest.mark.shared_data
def test_multi30k_val(shared_data):
    d = shared_data / "multi30k"
    pairs = read_parallel(d / "val.de.gz", d / "val.en.gz", src_tokenizer="spacy:de", tgt_tokenizer="spacy:en")
    assert len(pairs) == 1_014
    assert pairs[0].src_text == "Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen"
    assert pairs[-1].line == 1_014
