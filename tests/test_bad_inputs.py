"""Malformed input across readers, configs and APIs: a table of cases, each ending in one
exact seqlearn error class whose message names the file and line or the component; and
property-based fuzzing of every tokenizer (the readers are fuzzed in test_readers.py)."""
from __future__ import annotations

import gzip
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqlearn import Seq2Seq, Tagger, Vocab, registry
from seqlearn.attention import Attention, dot_scores
from seqlearn.cells import Cell
from seqlearn.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    SeqlearnError,
    ShapeError,
    UnknownComponentError,
    VocabError,
)
from seqlearn.readers import read_conll, read_conllu, read_parallel, read_tsv
from seqlearn.seq2seq_cli import fit as seq2seq_fit
from seqlearn.tagger_cli import fit as tagger_fit
from seqlearn.tokenizers import get_tokenizer

torch.set_num_threads(1)

# -- fixtures the rows build on -------------------------------------------------------------

PAIRS = "a b\tx y\nb c\ty\nc a b\tx x y\n"
CONLL = "EU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\nBlackburn NNP I-PER\n"
CONLLU_HEAD = "# sent_id = 1\n1\tDo\tdo\tAUX\tVBP\t_\t2\taux\t_\t_\n2\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n"


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def gz(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"), mtime=0)


def tiny_seq2seq(**options: Any) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(Vocab(["a", "b", "c"]), Vocab(["x", "y"]), **{"embedding_dim": 4, "hidden_size": 6, "dropout": 0.0,
                                                                 **options})


def tiny_tagger() -> Tagger:
    torch.manual_seed(0)
    return Tagger(Vocab(["EU", "rejects"]), Vocab(["O", "B-ORG", "I-ORG"], specials=("<pad>",)), Vocab("EUrejcts"),
                  scheme="BIO", embedding_dim=4, char_dim=3, char_out_dim=4, hidden_size=3)


def save_checkpoint(model: Any, path: Path, hparams: dict | None = None, **extra: Any) -> Path:
    """What Lightning's ``Trainer.save_checkpoint`` keeps of a model that loading reads,
    with ``hparams`` changed and ``extra`` entries."""
    import pytorch_lightning as pl

    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": {**dict(model.hparams), **(hparams or {})},
                  "pytorch-lightning_version": pl.__version__, **extra}
    torch.save(checkpoint, path)
    return path


def seq2seq_config(tmp: Path, model: dict, data: dict | None = None) -> Path:
    train = write(tmp / "pairs.tsv", PAIRS)
    config = {
        "trainer": {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "default_root_dir": str(tmp)},
        "model": {"embedding_dim": 4, "hidden_size": 6, **model},
        "data": {"train": str(train), "max_tokens": 64, **(data or {})},
    }
    return write(tmp / "config.yaml", json.dumps(config))  # JSON is YAML


def tagger_config(tmp: Path, init_args: dict, data: dict | None = None) -> Path:
    train = write(tmp / "train.txt", CONLL)
    config = {
        "trainer": {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False},
        "model": {"class_path": "seqlearn.Tagger", "init_args": {"hidden_size": 4, **init_args}},
        "data": {"train": str(train), "max_sentences": 2, "scheme": "BIO", **(data or {})},
    }
    return write(tmp / "tagger.yaml", json.dumps(config))


@registry.attentions.register("test-bad-scores")
class BadScoresAttention(Attention):
    """A broken plugin: its scores lack the source dimension."""

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return dot_scores(query, keys).sum(-1)


@registry.cells.register("test-wide")
class WideCell(Cell):
    """A broken plugin: its output is one unit wider than its hidden size."""

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([state, state[:, :1]], -1)
        return h, h


# -- the table -----------------------------------------------------------------------------
# Each row: a name, the exact error class, and setup(tmp) -> (call, substrings the message
# must contain).  The substrings name the file and line (path:line:) or the component.

Setup = Callable[[Path], tuple[Callable[[], Any], list[str]]]


@dataclass(frozen=True)
class Row:
    name: str
    error: type[Exception]
    setup: Setup


def reader_row(name: str, filename: str, data: str | bytes, read: Callable[[Path], Any], line: int, what: str) -> Row:
    def setup(tmp: Path) -> tuple[Callable[[], Any], list[str]]:
        path = write(tmp / filename, data)
        return (lambda: read(path)), [f"{path}:{line}: ", what]

    return Row(name, DataError, setup)


def parallel_row(name: str, src: tuple[str, str | bytes], tgt: tuple[str, str | bytes], blame: str, line: int,
                 what: str) -> Row:
    def setup(tmp: Path) -> tuple[Callable[[], Any], list[str]]:
        s, t = write(tmp / src[0], src[1]), write(tmp / tgt[0], tgt[1])
        return (lambda: read_parallel(s, t, skip_empty=False)), [f"{tmp / blame}:{line}: ", what]

    return Row(name, DataError, setup)


def call_row(name: str, error: type[Exception], call: Callable[[], Any], *what: str) -> Row:
    return Row(name, error, lambda tmp: (call, list(what)))


def file_row(name: str, error: type[Exception], make: Callable[[Path], Path], load: Callable[[Path], Any],
             *what: str) -> Row:
    """A row whose file (named in the message) is written by ``make(tmp)``."""

    def setup(tmp: Path) -> tuple[Callable[[], Any], list[str]]:
        path = make(tmp)
        return (lambda: load(path)), [str(path), *what]

    return Row(name, error, setup)


def config_row(name: str, error: type[Exception], make: Callable[[Path], Path], *what: str,
               fit: Callable[[list[str]], None] = seq2seq_fit, names_file: bool = False) -> Row:
    def setup(tmp: Path) -> tuple[Callable[[], Any], list[str]]:
        config = make(tmp)
        return (lambda: fit(["--config", str(config)])), ([str(config)] if names_file else []) + list(what)

    return Row(name, error, setup)


def _truncated_gzip() -> bytes:
    return gz("a\tb\nc\td\n")[:-4]  # the trailer's length field cut off: every line reads, then the stream ends


def _garbled_gzip() -> bytes:
    data = gz("a\tb\n" * 200)
    return data[:12] + b"\xff" * 8 + data[20:]


def _vocab_file(content: str | bytes) -> Callable[[Path], Path]:
    return lambda tmp: write(tmp / "vocab.json", content)


def _checkpoint(make: Callable[[Path], Any]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / "model.ckpt"
        made = make(path)
        if isinstance(made, (str, bytes)):
            write(path, made)
        return path

    return build


def _truncated_checkpoint(path: Path) -> bytes:
    data = save_checkpoint(tiny_seq2seq(), path).read_bytes()
    return data[: len(data) // 2]


def _mismatched_weights(path: Path) -> None:
    save_checkpoint(tiny_seq2seq(), path, hparams={"hidden_size": 8})  # the weights are those of hidden_size 6


def _without_lightning_version(path: Path) -> None:
    model = tiny_seq2seq()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)


ROWS = [
    # readers: compression and encoding
    reader_row("gzip-garbled-stream", "p.tsv.gz", _garbled_gzip(), read_tsv, 1, "corrupt gzip"),
    reader_row("gzip-truncated", "p.tsv.gz", _truncated_gzip(), read_tsv, 3, "corrupt gzip data after line 2"),
    reader_row("gzip-magic-then-junk", "p.tsv", b"\x1f\x8b" + b"junk" * 10, read_tsv, 1, "corrupt gzip"),
    reader_row("gz-name-not-gzip", "p.tsv.gz", "a\tb\n", read_tsv, 1, "not a gzip file"),
    reader_row("latin1-line", "p.tsv", "a\tb\n".encode() + "café\tcoffee\n".encode("latin-1"), read_tsv, 2,
               "invalid UTF-8"),
    reader_row("mixed-utf8-cp1252", "n.txt", "Zürich NNP B-LOC\n".encode() + "\x93x\x94 NN O\n".encode("latin-1"),
               read_conll, 2, "invalid UTF-8"),
    reader_row("utf16-with-bom", "p.tsv", "a\tb\n".encode("utf-16"), read_tsv, 1, "invalid UTF-8"),
    reader_row("invalid-utf8-in-gzip", "u.conllu.gz", gzip.compress(b"# x\n\xc3\x28\n"), read_conllu, 2,
               "invalid UTF-8"),
    reader_row("empty-file", "e.txt", b"", read_conll, 1, "file is empty"),
    reader_row("empty-gzip-stream", "e.gz", gz(""), read_conllu, 1, "empty (after decompression)"),
    # readers: TSV
    reader_row("tsv-space-instead-of-tab", "p.tsv", "a\tb\nsource target\n", read_tsv, 2, "no tab"),
    reader_row("tsv-tab-at-line-end", "p.tsv", "a\tb\nsource target\t\n", lambda p: read_tsv(p, skip_empty=False), 2,
               "empty target line"),
    reader_row("tsv-tab-at-line-start", "p.tsv", "\tsource target\n", lambda p: read_tsv(p, skip_empty=False), 1,
               "empty source line"),
    # readers: CoNLL
    reader_row("conll-missing-tag-column", "n.txt", "EU NNP B-ORG\nrejects\n", read_conll, 2, "has 1 columns"),
    reader_row("conll-tab-inside-token", "n.txt", "EU NNP B-ORG\nNew\tYork NNP B-LOC\n", read_conll, 2,
               "has 4 columns"),
    reader_row("conll-column-count-changes", "n.txt", CONLL + "\nx NN O O\n", read_conll, 7, "has 4 columns"),
    reader_row("conll-tag-column-out-of-range", "n.txt", CONLL, lambda p: read_conll(p, tag_column=3), 1,
               "tag_column=3"),
    # readers: CoNLL-U
    reader_row("conllu-nine-columns", "u.conllu", CONLLU_HEAD + "3\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\n", read_conllu, 4,
               "9 tab-separated columns"),
    reader_row("conllu-spaces-not-tabs", "u.conllu", "1 Do do AUX VBP _ 0 root _ _\n", read_conllu, 1,
               "1 tab-separated columns"),
    reader_row("conllu-id-not-a-number", "u.conllu", CONLLU_HEAD + "x\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_\n", read_conllu,
               4, "bad CoNLL-U ID 'x'"),
    reader_row("conllu-id-zero", "u.conllu", "0\tDo\tdo\tAUX\tVBP\t_\t0\troot\t_\t_\n", read_conllu, 1,
               "bad CoNLL-U ID '0'"),
    reader_row("conllu-id-gap", "u.conllu", CONLLU_HEAD + "4\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_\n", read_conllu, 4,
               "word ID 4 out of sequence: expected 3"),
    reader_row("conllu-missing-sentence-break", "u.conllu", CONLLU_HEAD + CONLLU_HEAD.split("\n", 1)[1], read_conllu, 4,
               "is a blank line missing"),
    # readers: aligned files
    parallel_row("parallel-source-longer", ("s.de", "a\nb\nc\n"), ("t.en", "x\ny\n"), "t.en", 3, "s.de has 3 lines"),
    parallel_row("parallel-gzip-target-longer", ("s.de.gz", gz("a\n")), ("t.en.gz", gz("x\ny\n")), "s.de.gz", 2,
                 "t.en.gz has 2 lines"),
    parallel_row("parallel-blank-target-line", ("s.de", "a\nb\n"), ("t.en", "x\n \n"), "t.en", 2, "empty target line"),
    # configs for `seqlearn fit`
    config_row("config-unknown-cell", UnknownComponentError, lambda t: seq2seq_config(t, {"cell": "lstn"}),
               "unknown cell 'lstn'", "Did you mean 'lstm'?"),
    config_row("config-unknown-attention", UnknownComponentError, lambda t: seq2seq_config(t, {"attention": "bahdanu"}),
               "unknown attention 'bahdanu'", "luong-general"),
    config_row("config-unknown-decoder", UnknownComponentError, lambda t: seq2seq_config(t, {"decoder": "transformer"}),
               "unknown decoder 'transformer'", "plain"),
    config_row("config-unknown-tokenizer", UnknownComponentError,
               lambda t: seq2seq_config(t, {}, {"src_tokenizer": "moses"}), "unknown tokenizer 'moses'"),
    config_row("config-wrong-type", ConfigError, lambda t: seq2seq_config(t, {"hidden_size": "big"}),
               "model.hidden_size", "big", names_file=True),
    config_row("config-unknown-key", ConfigError, lambda t: seq2seq_config(t, {"hiden_size": 8}), "model.hiden_size",
               names_file=True),
    config_row("config-not-a-mapping", ConfigError, lambda t: write(t / "list.yaml", "- fit\n- now\n"),
               names_file=True),
    config_row("config-bad-yaml", ConfigError, lambda t: write(t / "bad.yaml", "model: {cell: [gru\n"),
               names_file=True),
    config_row("config-dropout-out-of-range", ConfigError, lambda t: seq2seq_config(t, {"dropout": 1.5}),
               "Seq2Seq: dropout must be a number in [0, 1), got 1.5"),
    config_row("config-zero-layers", ConfigError, lambda t: seq2seq_config(t, {"encoder_layers": 0}),
               "Seq2Seq: encoder_layers must be an int >= 1"),
    config_row("config-unknown-cell-option", ConfigError,
               lambda t: seq2seq_config(t, {"cell_options": {"forget_bias": 1.0}}), "cell 'gru' (GRUCell)",
               "forget_bias"),
    config_row("config-no-batch-budget", ConfigError, lambda t: seq2seq_config(t, {}, {"max_tokens": None}),
               "give max_tokens"),
    config_row("tagger-config-unknown-char-features", UnknownComponentError,
               lambda t: tagger_config(t, {"char_features": "transformer"}), "unknown char feature extractor",
               fit=tagger_fit),
    config_row("tagger-config-unknown-scheme", ConfigError, lambda t: tagger_config(t, {}, {"scheme": "BIOXYZ"}),
               "BIOXYZ", fit=tagger_fit),
    # tensors of the wrong shape reaching a (plugin) component
    call_row("plugin-attention-bad-scores", ShapeError,
             lambda: registry.attentions.build("test-bad-scores", 4, 4)(
                 torch.zeros(2, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)),
             "attention 'test-bad-scores' (BadScoresAttention)", "scores score() returned has shape (2,)",
             "expected (2, 3)"),
    call_row("attention-query-too-wide", ShapeError,
             lambda: registry.attentions.build("bahdanau", 4, 6)(
                 torch.zeros(2, 5), torch.zeros(2, 3, 4), torch.zeros(2, 3, 6), torch.ones(2, 3, dtype=torch.bool)),
             "attention 'bahdanau' (BahdanauAttention)", "query has shape (2, 5)"),
    call_row("attention-float-mask", ShapeError,
             lambda: registry.attentions.build("luong-dot", 4, 4)(
                 torch.zeros(2, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3)),
             "attention 'luong-dot' (LuongDotAttention)", "mask has shape (2, 3) of torch.float32"),
    call_row("plugin-cell-output-too-wide", ShapeError,
             lambda: registry.cells.build("test-wide", 3, 4)(torch.zeros(2, 3), torch.zeros(2, 4)),
             "cell 'test-wide' (WideCell)", "output h it returned has shape (2, 5)"),
    call_row("cell-input-too-narrow", ShapeError,
             lambda: registry.cells.build("gru", 3, 4)(torch.zeros(2, 2), torch.zeros(2, 4)),
             "cell 'gru' (GRUCell)", "input x has shape (2, 2)"),
    call_row("cell-state-of-another-batch", ShapeError,
             lambda: registry.cells.build("lstm", 3, 4)(torch.zeros(2, 3), (torch.zeros(2, 4), torch.zeros(5, 4))),
             "cell 'lstm' (LSTMCell)", "state has shape (5, 4)"),
    call_row("plugin-cell-in-an-encoder", ShapeError,
             lambda: tiny_seq2seq(cell="test-wide").translate(["a b"]), "cell 'test-wide' (WideCell)"),
    # vocabularies when fine-tuning
    call_row("finetune-tag-vocab-as-target", ConfigError,
             lambda: Seq2Seq.from_pretrained(tiny_seq2seq(), tgt_vocab=Vocab(["x"], specials=("<pad>",))),
             "tgt_vocab needs the <pad>, <unk> and </s> specials"),
    call_row("finetune-vocab-of-wrong-type", ConfigError,
             lambda: Seq2Seq.from_pretrained(tiny_seq2seq(), src_vocab=["a", "b"]), "src_vocab must be a Vocab"),
    call_row("finetune-vocab-dict-of-wrong-format", VocabError,
             lambda: Seq2Seq.from_pretrained(tiny_seq2seq(), src_vocab={"itos": ["a"]}), "src vocabulary",
             "not a seqlearn vocabulary"),
    call_row("finetune-non-string-tokens", InputError,
             lambda: Seq2Seq.from_pretrained(tiny_seq2seq(), extend_tgt=["z", 7]), "token 1 to add is int 7"),
    call_row("extend-vocab-non-string-tokens", InputError, lambda: tiny_seq2seq().extend_vocab(src_tokens=[None]),
             "token 0 to add is NoneType"),
    call_row("finetune-unknown-override", ConfigError, lambda: Seq2Seq.from_pretrained(tiny_seq2seq(), learning_rate=1),
             "from_pretrained: unknown hyperparameter(s) learning_rate"),
    file_row("finetune-from-a-tagger-checkpoint", CheckpointError,
             _checkpoint(lambda p: save_checkpoint(tiny_tagger(), p)), Seq2Seq.from_pretrained,
             "not a Seq2Seq checkpoint", "src_vocab, tgt_vocab"),
    file_row("finetune-weights-do-not-fit", CheckpointError, _checkpoint(_mismatched_weights), Seq2Seq.from_pretrained,
             "weights do not fit"),
    # vocabulary files
    file_row("vocab-json-list", VocabError, _vocab_file('["<pad>", "a"]'), Vocab.load, "not a seqlearn vocabulary"),
    file_row("vocab-not-json", VocabError, _vocab_file("<pad>\n<unk>\na\n"), Vocab.load, "not a JSON vocabulary"),
    file_row("vocab-not-utf8", VocabError, _vocab_file(b'{"format": "seqlearn.vocab/1", "itos": ["\xff"]}'),
             Vocab.load, "not a JSON vocabulary"),
    file_row("vocab-duplicate-tokens", VocabError,
             _vocab_file('{"format": "seqlearn.vocab/1", "specials": ["<pad>"], "itos": ["<pad>", "a", "a"]}'),
             Vocab.load, "duplicate tokens"),
    file_row("vocab-specials-not-first", VocabError,
             _vocab_file('{"format": "seqlearn.vocab/1", "specials": ["<pad>"], "itos": ["a", "<pad>"]}'),
             Vocab.load, "'specials' must be the first entries"),
    file_row("vocab-tokens-not-strings", VocabError,
             _vocab_file('{"format": "seqlearn.vocab/1", "specials": [], "itos": [1, 2]}'), Vocab.load,
             "'itos' must be a list of strings"),
    # checkpoints that are not checkpoints
    file_row("checkpoint-text-file", CheckpointError, _checkpoint(lambda p: "not a checkpoint\n"),
             Seq2Seq.load_from_checkpoint, "not a PyTorch checkpoint"),
    file_row("checkpoint-empty-file", CheckpointError, _checkpoint(lambda p: b""), Tagger.load_from_checkpoint,
             "not a PyTorch checkpoint"),
    file_row("checkpoint-truncated", CheckpointError, _checkpoint(_truncated_checkpoint), Seq2Seq.load_from_checkpoint,
             "not a PyTorch checkpoint, or a truncated one"),
    file_row("checkpoint-a-bare-tensor", CheckpointError, _checkpoint(lambda p: torch.save(torch.ones(3), p)),
             Seq2Seq.load_from_checkpoint, "not a Lightning checkpoint"),
    file_row("checkpoint-of-another-model", CheckpointError, _checkpoint(lambda p: save_checkpoint(tiny_seq2seq(), p)),
             Tagger.load_from_checkpoint, "not a Tagger checkpoint", "word_vocab, tag_vocab"),
    file_row("checkpoint-weights-do-not-fit", CheckpointError, _checkpoint(_mismatched_weights),
             Seq2Seq.load_from_checkpoint, "weights do not fit the Seq2Seq"),
    file_row("checkpoint-without-lightning-version", CheckpointError, _checkpoint(_without_lightning_version),
             Seq2Seq.load_from_checkpoint, "not a Lightning checkpoint", "pytorch-lightning_version"),
    # inference and tokenizer arguments
    call_row("translate-none", InputError, lambda: tiny_seq2seq().translate(None), "translate takes a string"),
    call_row("translate-token-list-of-ints", InputError, lambda: tiny_seq2seq().translate([["a"], [1, 2]]),
             "translate: token 0 of input 1 is int 1"),
    call_row("translate-zero-batch-size", ConfigError, lambda: tiny_seq2seq().translate(["a"], batch_size=0),
             "batch_size must be an int >= 1"),
    call_row("predict-bytes", InputError, lambda: tiny_tagger().predict([b"EU rejects"]),
             "predict: input 0 is bytes"),
    call_row("predict-zero-input-length", ConfigError, lambda: tiny_tagger().predict("EU", max_input_length=0),
             "predict: max_input_length must be a positive int"),
    call_row("tokenizer-given-bytes", InputError, lambda: get_tokenizer("nltk:toktok").tokenize(b"a b"),
             "ToktokTokenizer() tokenizes text (str), got bytes"),
    call_row("spacy-lone-surrogate", DataError, lambda: get_tokenizer("spacy:en").tokenize("a \ud800 b"),
             "SpacyTokenizer('en')", "lone surrogate"),
    call_row("tokenizer-not-a-name", ConfigError, lambda: get_tokenizer(42), "registered name"),
    call_row("component-name-not-a-string", ConfigError, lambda: tiny_seq2seq(cell=["gru"]),
             "a cell is named by a string, got list"),
]


def test_the_table_is_large_and_names_are_unique():
    assert len(ROWS) >= 30
    assert len({row.name for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_malformed_input_raises_its_seqlearn_error(row, tmp_path):
    call, substrings = row.setup(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's and PyTorch's own chatter
        with pytest.raises(SeqlearnError) as err:
            call()
    assert type(err.value) is row.error, f"{type(err.value).__name__}: {err.value}"
    message = str(err.value)
    for part in substrings:
        assert part in message, f"{part!r} not in {message!r}"


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, monkeypatch, capsys):
    from seqlearn import cli

    path = write(tmp_path / "model.ckpt", "plain text")
    for command in ("translate", "tag"):
        assert cli.main([command, "--ckpt", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"seqlearn {command}: error: {path}: not a PyTorch checkpoint")
        assert "Traceback" not in err and err.count("\n") == 1


# -- fuzzing the tokenizers ----------------------------------------------------------------------

TOKENIZERS = ["whitespace", "char", "nltk:toktok", "nltk:treebank", "spacy:en"]
# any text: every Unicode category, lone surrogates included, and text decoded from arbitrary bytes
_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(), max_size=40),
    st.binary(max_size=60).map(lambda b: b.decode("utf-8", errors="surrogateescape")),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.lists(st.sampled_from(["a", " ", "\t", "\n", "\u00a0", "\u2028", "'", '"', "``", "-", "...", "n't", "\u0301",
                              "\ufeff", "\x00", "😀", "&#9;", "(", ")"]), max_size=20).map("".join),
)
_NOT_TEXT = st.one_of(st.none(), st.integers(), st.binary(max_size=8), st.lists(st.text(max_size=3), max_size=3),
                      st.floats(allow_nan=True))


@pytest.mark.parametrize("name", TOKENIZERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXT)
def test_any_text_gives_tokens_or_a_seqlearn_error(name, text):
    tokenizer = get_tokenizer(name)
    try:
        tokens = tokenizer.tokenize(text)
    except SeqlearnError as exc:
        # only spaCy refuses text, and only text that is not valid Unicode
        assert isinstance(exc, DataError) and name.startswith("spacy") and any(
            0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    assert isinstance(tokens, list) and all(isinstance(t, str) and t for t in tokens)
    assert tokenizer.tokenize_batch([text, text]) == [tokens, tokens]
    if name == "char":
        assert len(tokens) == len(text)
    if not text.strip() and name != "char" and name != "nltk:toktok":
        assert tokens == []


@pytest.mark.parametrize("name", TOKENIZERS)
@settings(max_examples=15, deadline=None)
@given(value=_NOT_TEXT)
def test_anything_but_text_is_an_input_error(name, value):
    tokenizer = get_tokenizer(name)
    with pytest.raises(InputError, match="tokenizes text"):
        tokenizer.tokenize(value)
    with pytest.raises(InputError, match="tokenizes text"):
        tokenizer.tokenize_batch(["fine", value])
