"""TranslationDataModule and TaggingDataModule: sources, vocabularies from train only, batch conventions."""
from __future__ import annotations

import gzip

import pytest
import pytorch_lightning as pl
import torch

from seqlearn.batching import TaggingBatch, TranslationBatch
from seqlearn.datamodules import TaggingDataModule, TranslationDataModule
from seqlearn.errors import ConfigError, DataError
from seqlearn.readers import ParallelExample, TaggedSentence
from seqlearn.vocab import Vocab


def pair(src: str, tgt: str, line: int = 1) -> ParallelExample:
    return ParallelExample(src, tgt, src.split(), tgt.split(), line)


TRAIN = [pair("a b c", "x y", 1), pair("a b", "y z w", 2), pair("c a", "x", 3), pair("b", "w w", 4)]
VALID = [pair("a q", "x v", 1), pair("b c a b", "y", 2)]


def check_translation_batches(dm: TranslationDataModule, split: str, loader) -> None:
    """Every example of ``split`` comes once, src = tokens + </s>, tgt = <s> + tokens + </s>."""
    seen = []
    for batch in loader:
        assert isinstance(batch, TranslationBatch)
        assert batch.src.ids.size(0) == batch.tgt.ids.size(0) == len(batch.index)
        rows = torch.arange(len(batch))
        assert (batch.src.ids[rows, batch.src.lengths - 1] == dm.src_vocab.eos_index).all()
        assert (batch.tgt.ids[:, 0] == dm.tgt_vocab.bos_index).all()
        assert (batch.tgt.ids[rows, batch.tgt.lengths - 1] == dm.tgt_vocab.eos_index).all()
        assert batch.src.ids[~batch.src.mask].eq(dm.src_vocab.pad_index).all()
        assert batch.tgt.ids[~batch.tgt.mask].eq(dm.tgt_vocab.pad_index).all()
        for k, i in enumerate(batch.index.tolist()):
            ex = dm.examples[split][i]
            unk = lambda vocab, toks: [t if t in vocab else "<unk>" for t in toks]  # noqa: E731
            assert dm.src_vocab.decode(batch.src.ids[k]) == unk(dm.src_vocab, ex.src)
            assert dm.tgt_vocab.decode(batch.tgt.ids[k]) == unk(dm.tgt_vocab, ex.tgt)
            seen.append(i)
    assert sorted(seen) == list(range(len(dm.examples[split])))


def test_vocabularies_come_from_train_only():
    dm = TranslationDataModule(TRAIN, VALID, max_tokens=64)
    dm.setup("fit")
    assert "q" not in dm.src_vocab and "v" not in dm.tgt_vocab
    assert set(dm.src_vocab.itos[4:]) == {"a", "b", "c"} and set(dm.tgt_vocab.itos[4:]) == {"x", "y", "z", "w"}
    _, src, tgt = dm.encoded("valid")[0]
    assert src == [dm.src_vocab["a"], dm.src_vocab.unk_index, dm.src_vocab.eos_index]
    assert tgt[2] == dm.tgt_vocab.unk_index
    check_translation_batches(dm, "train", dm.train_dataloader())
    check_translation_batches(dm, "valid", dm.val_dataloader())


def test_min_freq_and_max_size_apply_to_the_training_counts():
    dm = TranslationDataModule(TRAIN, min_freq=2, max_size=2, max_tokens=64)
    dm.setup("fit")
    assert dm.src_vocab.itos[4:] == ["a", "b"]  # a: 3, b: 3, c: 2 -> at most 2 kept
    assert dm.tgt_vocab.itos[4:] == ["w", "x"]  # w: 3, x: 2 (seen before y: 2), z: 1


def test_given_vocabularies_are_used_as_they_are():
    src_vocab, tgt_vocab = Vocab(["a"]), Vocab(["x", "y"])
    dm = TranslationDataModule(TRAIN, max_tokens=64, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    dm.setup("fit")
    assert dm.src_vocab is src_vocab and dm.tgt_vocab is tgt_vocab and len(src_vocab) == 5
    check_translation_batches(dm, "train", dm.train_dataloader())


def test_setup_twice_reads_nothing_again(monkeypatch, tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("a b\tx\nc\ty z\n", encoding="utf-8")
    calls = []
    import seqlearn.datamodules as datamodules

    real = datamodules.read_tsv
    monkeypatch.setattr(datamodules, "read_tsv", lambda *a, **k: calls.append(a) or real(*a, **k))
    dm = TranslationDataModule(tsv, tsv, max_tokens=64)
    dm.setup("fit")
    first = (dm.examples["train"], dm.src_vocab, dm.encoded("train"))
    dm.setup("fit")
    dm.setup("validate")
    assert (dm.examples["train"], dm.src_vocab, dm.encoded("train")) == first and len(calls) == 2
    assert dm.examples["train"] is first[0]


def test_tsv_and_file_pair_end_to_end(tmp_path):
    src_lines = ["Ein Hund läuft .", "Zwei Männer essen .", "Eine Frau liest ."]
    tgt_lines = ["A dog runs .", "Two men eat .", "A woman reads ."]
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src_lines, tgt_lines)), "utf-8")
    with gzip.open(tmp_path / "train.de.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(src_lines) + "\n")
    with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(tgt_lines) + "\n")
    from_tsv = TranslationDataModule("pairs.tsv", "pairs.tsv", data_dir=tmp_path, lowercase=True, max_tokens=64)
    from_files = TranslationDataModule(
        ("train.de.gz", "train.en.gz"), (tmp_path / "train.de.gz", tmp_path / "train.en.gz"),
        data_dir=tmp_path, lowercase=True, max_tokens=64, src_tokenizer="nltk:toktok", tgt_tokenizer="nltk:toktok",
    )  # fmt: skip
    for dm in (from_tsv, from_files):
        dm.setup("fit")
        assert dm.examples["train"][0].src == ["ein", "hund", "läuft", "."]
        assert dm.references("valid") == [t.lower() for t in tgt_lines]
        check_translation_batches(dm, "train", dm.train_dataloader())
    assert from_tsv.src_vocab == from_files.src_vocab


def test_default_task_gives_all_three_splits_and_filters_only_training():
    dm = TranslationDataModule("default", max_tokens=512, max_length=6)
    dm.setup(None)
    assert set(dm.examples) == {"train", "valid", "test"}
    assert max(max(len(e.src), len(e.tgt)) for e in dm.examples["train"]) <= 6
    assert max(len(e.tgt) for e in dm.examples["test"]) > 6 and len(dm.examples["test"]) == 1000
    assert dm.references("test")[0] == " ".join(dm.examples["test"][0].tgt)
    check_translation_batches(dm, "test", dm.test_dataloader())


def test_bad_sources_are_config_errors():
    with pytest.raises(ConfigError):
        TranslationDataModule(None)
    with pytest.raises(ConfigError):
        TranslationDataModule(TRAIN, max_tokens=None)
    dm = TranslationDataModule([1, 2, 3])
    with pytest.raises(ConfigError, match="train"):
        dm.setup("fit")


class _Recorder(pl.LightningModule):
    """Records which examples each training epoch sees (a linear layer so there is a loss)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.epochs: list[list[int]] = []

    def on_train_epoch_start(self):
        self.epochs.append([])

    def validation_step(self, batch, batch_idx):
        raise AssertionError("there is no validation data")

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, TranslationBatch)
        self.epochs[-1].extend(batch.index.tolist())
        return self.layer(batch.src.ids[:, :1].float()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:Total length of `list`:UserWarning")  # no validation split: []
def test_lightning_sees_each_example_once_per_epoch_in_a_new_order():
    torch.manual_seed(0)
    examples = [pair(" ".join("abcdefgh"[: 1 + i % 8]), "x " * (1 + i % 5), i) for i in range(120)]
    dm = TranslationDataModule(examples, max_tokens=40, seed=1)
    model = _Recorder()
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert len(model.epochs) == 3
    assert all(sorted(epoch) == list(range(120)) for epoch in model.epochs)
    assert model.epochs[0] != model.epochs[1] != model.epochs[2]


# -- tagging ------------------------------------------------------------------------------
CONLL_TRAIN = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
"""
CONLL_DEV = """Peter NNP B-NP I-PER
rejects VBZ B-VP O
Paris NNP B-NP I-LOC
"""


def check_tagging_batches(dm: TaggingDataModule, split: str, loader) -> None:
    seen = []
    for batch in loader:
        assert isinstance(batch, TaggingBatch)
        assert batch.words.ids.shape == batch.tags.ids.shape
        assert torch.equal(batch.words.lengths, batch.tags.lengths)
        assert batch.tags.ids[~batch.tags.mask].eq(dm.tag_vocab.pad_index).all()
        assert batch.chars.ids.shape[:2] == batch.words.ids.shape
        assert torch.equal(batch.chars.lengths > 0, batch.words.mask)
        for k, i in enumerate(batch.index.tolist()):
            s = dm.examples[split][i]
            words = [t.lower() if dm.lowercase else t for t in s.tokens]
            assert dm.word_vocab.decode(batch.words.ids[k]) == [w if w in dm.word_vocab else "<unk>" for w in words]
            assert dm.tag_vocab.decode(batch.tags.ids[k]) == s.tags
            for j, token in enumerate(s.tokens):
                chars = dm.char_vocab.decode(batch.chars.ids[k, j, : batch.chars.lengths[k, j]])
                assert chars == [c if c in dm.char_vocab else "<unk>" for c in token]
            seen.append(i)
    assert sorted(seen) == list(range(len(dm.examples[split])))


def test_conll_batches_align_words_tags_and_original_case_chars(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL_TRAIN, "utf-8")
    (tmp_path / "dev.txt").write_text(CONLL_DEV, "utf-8")
    dm = TaggingDataModule("train.txt", data_dir=tmp_path, lowercase=True, max_tokens=8)
    dm.setup("fit")
    assert dm.tag_vocab.itos == ["<pad>", "O", "I-PER", "I-ORG", "I-MISC"]  # by frequency
    assert "eu" in dm.word_vocab and "EU" not in dm.word_vocab and "E" in dm.char_vocab
    check_tagging_batches(dm, "train", dm.train_dataloader())
    assert dm.val_dataloader() == []  # no validation data: Lightning skips validation
    with_dev = TaggingDataModule("train.txt", "dev.txt", data_dir=tmp_path, lowercase=True, max_tokens=8)
    with pytest.raises(DataError, match=r"dev\.txt:1: tag 'I-LOC' of token 3 \('Paris'\)"):
        with_dev.setup("fit")


def test_scheme_conversion_and_column_choice(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL_TRAIN, "utf-8")
    dm = TaggingDataModule(tmp_path / "train.txt", scheme="IOB1", target_scheme="BIOUL", max_tokens=64)
    dm.setup("fit")
    assert dm.tag_scheme == "BIOUL"
    assert [s.tags for s in dm.examples["train"]] == [["U-ORG", "O", "U-MISC", "O"], ["B-PER", "L-PER"]]
    chunks = TaggingDataModule(tmp_path / "train.txt", tag_column=2, char_features=False, max_tokens=64)
    chunks.setup("fit")
    assert chunks.examples["train"][0].tags == ["B-NP", "B-VP", "B-NP", "I-NP"]
    assert next(iter(chunks.train_dataloader())).chars is None
    with pytest.raises(ConfigError):
        TaggingDataModule(tmp_path / "train.txt", target_scheme="BIO")


def test_conllu_by_file_name_and_sentence_lists(tmp_path):
    rows = ["# text = I saw it", "1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_", "2\tsaw\tsee\tVERB\tVBD\t_\t0\troot\t_\t_",
            "3\tit\tit\tPRON\tPRP\t_\t2\tobj\t_\t_", ""]  # fmt: skip
    with gzip.open(tmp_path / "tiny.conllu.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    dm = TaggingDataModule(tmp_path / "tiny.conllu.gz", max_tokens=64)
    dm.setup("fit")
    assert dm.examples["train"][0].tags == ["PRON", "VERB", "PRON"]
    xpos = TaggingDataModule(tmp_path / "tiny.conllu.gz", tag_field="xpos", max_tokens=64)
    xpos.setup("fit")
    assert xpos.examples["train"][0].tags == ["PRP", "VBD", "PRP"]
    sentences = [TaggedSentence(["I", "saw", "It"], ["PRON", "VERB", "PRON"], 1)] * 3
    listed = TaggingDataModule(sentences, sentences[:1], limit=2, max_tokens=6)
    listed.setup("fit")
    assert len(listed.examples["train"]) == 2
    check_tagging_batches(listed, "valid", listed.val_dataloader())


@pytest.mark.shared_data
def test_ud_ewt_dev_batches_align(shared_data):
    path = shared_data / "ud-ewt" / "en_ewt-ud-dev.conllu.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    dm = TaggingDataModule(path, path, limit=300, min_freq=2, max_tokens=1000)
    dm.setup("fit")
    assert len(dm.examples["train"]) == 300 and 10 < len(dm.tag_vocab) <= 18  # <= 17 UPOS + <pad>
    check_tagging_batches(dm, "valid", dm.val_dataloader())


BROKEN_BIO = "-DOCSTART- O\n\nPeter B-PER\nlives O\n\nin O\nNew I-LOC\nYork I-LOC\n"


def test_tags_breaking_the_scheme_name_file_and_line(tmp_path):
    path = tmp_path / "broken.txt"
    path.write_text(BROKEN_BIO)
    dm = TaggingDataModule(path, scheme="BIO")
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    assert err.value.path == str(path) and err.value.line == 7  # "New I-LOC" after "in O"
    assert "'I-LOC'" in str(err.value) and "'O'" in str(err.value)


def test_repair_tags_opens_a_chunk_and_warns(tmp_path):
    path = tmp_path / "broken.txt"
    path.write_text(BROKEN_BIO)
    dm = TaggingDataModule(path, scheme="BIO", repair_tags=True)
    with pytest.warns(UserWarning, match="repaired the tags of 1 sentences"):
        sentences = dm.split("train")
    assert [s.tags for s in sentences] == [["B-PER", "O"], ["O", "B-LOC", "I-LOC"]]
