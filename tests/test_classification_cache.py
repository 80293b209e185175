"""The classifier's corpus cache: a training TSV file (``label<TAB>text``) encoded once into
memory-mapped ids (``ClassificationDataModule(cache_dir=...)``), keyed by the file and the
options.

The oracle throughout is the in-memory path of the same data module (``cache_dir=None``),
which reads the file with :func:`~seqlearn.classification_data.read_labeled_tsv`; the
cached path must give the same vocabularies, examples and batches.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import random
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from test_corpus_cache import mapped_token_files
from test_stream_cache import entries
from torch.utils.data import DataLoader

import seqlearn.classification_cache as classification_cache
import seqlearn.corpus_encoding as corpus_encoding
from seqlearn.classification_data import ClassificationDataModule
from seqlearn.errors import DataError
from seqlearn.token_arrays import EncodedSequences
from seqlearn.vocab import Vocab

WORDS = "A dog runs over the Meadow . Two men eat bread , a woman reads a book in the park".split()
LABELS = ["sports", "news", "Politics", "art,music"]


def write_tsv(path: Path, n: int = 5000, seed: int = 0, multi_label: bool = False, fewest: int = 0) -> Path:
    """``n`` examples, more than two reader chunks so that preparation runs on worker
    processes, with blank lines in between; multi-label fields list ``fewest``-3 labels."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        field = ",".join(rng.sample(LABELS[:3], rng.randint(fewest, 3))) if multi_label else rng.choice(LABELS)
        lines.append(f"{field}\t{' '.join(rng.choices(WORDS, k=rng.randint(1, 20)))}")
        if i % 101 == 0:
            lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def batches(dm: ClassificationDataModule) -> list[tuple]:
    return [(b.tokens.ids.tolist(), b.tokens.lengths.tolist(), b.labels.tolist(), b.index.tolist())
            for b in dm.train_dataloader()]  # fmt: skip


def assert_same_data(cached: ClassificationDataModule, expected: ClassificationDataModule) -> None:
    a, b = cached.encoded("train"), expected.encoded("train")
    assert isinstance(a, EncodedSequences) and isinstance(a.fields[0].tokens, np.memmap)
    assert len(a) == len(b) > 0 and [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
    assert cached.vocab == expected.vocab and cached.label_vocab == expected.label_vocab
    assert batches(cached) == batches(expected)


@pytest.mark.parametrize("options", [
    {},
    {"multi_label": True, "lowercase": True, "min_freq": 50, "max_length": 12},
    {"max_size": 5, "limit": 3000, "tokenizer": "char", "max_sentences": 16, "max_tokens": None, "seed": 4},
])  # fmt: skip
def test_cached_examples_vocabularies_and_batches_equal_the_in_memory_path(tmp_path, options):
    tsv = write_tsv(tmp_path / "train.tsv", multi_label=options.get("multi_label", False))
    cached = ClassificationDataModule(tsv, cache_dir=tmp_path / "cache", **options)
    cached.prepare_data()
    cached.setup("fit")
    expected = ClassificationDataModule(tsv, **options)
    expected.setup("fit")
    assert_same_data(cached, expected)
    assert "train" not in cached.examples  # the raw text is read only when asked for
    assert cached.examples["train"] == expected.examples["train"]
    assert len(entries(tmp_path / "cache")) == 1


def test_a_second_data_module_maps_the_entry_and_a_changed_file_or_option_is_prepared_anew(tmp_path, monkeypatch):
    tsv = write_tsv(tmp_path / "train.tsv", n=3000, multi_label=True, fewest=1)  # also single-label data
    cache = tmp_path / "cache"
    first = ClassificationDataModule(tsv, cache_dir=cache, multi_label=True)
    first.setup("fit")  # setup prepares when prepare_data was not called
    real, calls = classification_cache.encode_corpus, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(classification_cache, "encode_corpus", counting)
    again = ClassificationDataModule(tsv, cache_dir=cache, multi_label=True)
    again.prepare_data()
    again.setup("fit")
    assert calls == [] and len(entries(cache)) == 1  # a hit: nothing encoded
    assert_same_data(again, first)
    changes = ({"multi_label": False}, {"label_separator": ";"}, {"lowercase": True}, {"max_length": 5},
               {"limit": 100}, {"min_freq": 2}, {"max_size": 4}, {"tokenizer": "char"},
               {"vocab": Vocab(["dog", "the"])}, {"label_vocab": Vocab(LABELS[:3], specials=())})  # fmt: skip
    for change in changes:
        options = {"multi_label": True, **change}
        assert_same_data(ClassificationDataModule(tsv, cache_dir=cache, **options),
                         ClassificationDataModule(tsv, **options))  # fmt: skip
    assert len(calls) == len(changes) and len(entries(cache)) == 1 + len(changes)
    # batching options map the same entry
    ClassificationDataModule(tsv, cache_dir=cache, multi_label=True, max_tokens=99, seed=5).setup("fit")
    assert len(calls) == len(changes)
    # a rewritten file is prepared anew, never read stale
    write_tsv(tsv, n=400, seed=1, multi_label=True, fewest=1)
    os.utime(tsv, ns=(1, 1))
    fresh = ClassificationDataModule(tsv, cache_dir=cache, multi_label=True)
    assert_same_data(fresh, ClassificationDataModule(tsv, multi_label=True))
    assert len(calls) == len(changes) + 1


class DropsHashes:
    """A tokenizer that gives no tokens for ``#`` alone (the cache key knows it by its repr)."""

    def tokenize(self, text: str) -> list[str]:
        return [t for t in text.split() if t != "#"]

    def __repr__(self) -> str:
        return "DropsHashes()"


@pytest.mark.parametrize("bad, message", [
    (b"no tab on this line", "no tab"),
    (b"\ttext without a label", "empty label"),
    (b"news\t\xff\xfe not utf-8", "UTF-8"),
    (b"news\t#", "no tokens"),
])  # fmt: skip
def test_malformed_input_is_a_data_error_with_file_and_line_during_preparation(tmp_path, bad, message):
    tsv = write_tsv(tmp_path / "train.tsv")
    raw = tsv.read_bytes().split(b"\n")
    raw[4499] = bad  # line 4500, past the first chunks: read while workers encode
    tsv.write_bytes(b"\n".join(raw))
    cache = tmp_path / "cache"
    dm = ClassificationDataModule(tsv, cache_dir=cache, tokenizer=DropsHashes())
    with pytest.raises(DataError, match=message) as err:
        dm.prepare_data()
    assert (err.value.path, err.value.line) == (str(tsv), 4500)
    with pytest.raises(DataError, match=message) as expected:  # the in-memory path: the same error
        ClassificationDataModule(tsv, tokenizer=DropsHashes()).setup("fit")
    assert (expected.value.path, expected.value.line) == (str(tsv), 4500)
    assert entries(cache) == []
    # as the reader: a limit reached before the bad line never reads it
    limited = ClassificationDataModule(tsv, cache_dir=cache, tokenizer=DropsHashes(), limit=2000)
    assert_same_data(limited, ClassificationDataModule(tsv, tokenizer=DropsHashes(), limit=2000))


def test_a_training_label_the_given_label_vocabulary_lacks_is_a_data_error(tmp_path):
    tsv = write_tsv(tmp_path / "train.tsv", n=300)
    dm = ClassificationDataModule(tsv, cache_dir=tmp_path / "cache", label_vocab=Vocab(LABELS[:2], specials=()))
    with pytest.raises(DataError, match="does not occur in the training data") as err:
        dm.setup("fit")
    first = next(i for i, line in enumerate(tsv.read_text().splitlines(), 1) if line.split("\t")[0] in LABELS[2:])
    assert (err.value.path, err.value.line) == (str(tsv), first)


def test_a_tokenizer_the_key_cannot_tell_apart_keeps_the_in_memory_path(tmp_path):
    class Opaque:
        def tokenize(self, text: str) -> list[str]:
            return text.split()

    tsv = write_tsv(tmp_path / "train.tsv", n=300)
    with pytest.warns(UserWarning, match="cache_identity"):
        dm = ClassificationDataModule(tsv, cache_dir=tmp_path / "cache", tokenizer=Opaque())
        dm.setup("fit")
    assert isinstance(dm.encoded("train"), list) and entries(tmp_path / "cache") == []
    assert batches(dm) == batches(ClassificationDataModule(tsv))


@pytest.mark.timeout(120)
def test_a_limit_reached_with_chunks_in_flight_waits_for_the_workers_and_stops_them(tmp_path, monkeypatch):
    """Terminating the pool while a worker wrote a large result deadlocked now and then
    (a CI run hung here); the workers must finish their chunks and exit."""
    monkeypatch.setattr(corpus_encoding, "available_cores", lambda: 2)  # workers even on one core
    tsv = write_tsv(tmp_path / "train.tsv", n=12000)  # six chunks: four in flight at the limit
    for i in range(30):
        ClassificationDataModule(tsv, cache_dir=tmp_path / f"cache{i}", limit=2000).prepare_data()
        assert multiprocessing.active_children() == []
    cached = ClassificationDataModule(tsv, cache_dir=tmp_path / "cache0", limit=2000)
    assert_same_data(cached, ClassificationDataModule(tsv, limit=2000))


class KillsItsWorker:
    """Splits on whitespace; in a worker process, a line holding ``KILL`` ends that worker,
    as a terminal's Ctrl-C does (the chunk it held never comes back)."""

    def __init__(self):
        self.parent = os.getpid()

    def tokenize(self, text: str) -> list[str]:
        if "KILL" in text and os.getpid() != self.parent:
            os._exit(1)
        return text.split()

    def __repr__(self) -> str:
        return "KillsItsWorker()"


@pytest.mark.timeout(120)
def test_a_chunk_whose_worker_died_does_not_stall_an_early_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_encoding, "available_cores", lambda: 2)
    monkeypatch.setattr(corpus_encoding, "_SHUTDOWN_WAIT", 1.0)
    tsv = write_tsv(tmp_path / "train.tsv", n=12000)
    lines = tsv.read_text().split("\n")
    lines[7000] = "news\tKILL this worker"  # the fourth chunk, in flight when the limit is reached
    tsv.write_text("\n".join(lines))
    options = {"tokenizer": KillsItsWorker(), "limit": 2000}
    cached = ClassificationDataModule(tsv, cache_dir=tmp_path / "cache", **options)
    cached.prepare_data()
    assert multiprocessing.active_children() == []
    assert_same_data(cached, ClassificationDataModule(tsv, **options))


def _in_worker(collate, examples):
    """Collate in a DataLoader worker: the batch, the worker's pid and the files it maps."""
    return collate(examples), os.getpid(), mapped_token_files()


@pytest.mark.slow  # spawned workers import torch
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/<pid>/maps")
def test_dataloader_workers_map_the_cache_and_batch_as_in_memory(tmp_path):
    tsv = write_tsv(tmp_path / "train.tsv", n=3000, multi_label=True)
    expected = ClassificationDataModule(tsv, multi_label=True, max_sentences=64)
    expected.setup("fit")
    # the data module's own loader, two forked workers
    cached = ClassificationDataModule(tsv, cache_dir=tmp_path / "cache", multi_label=True, max_sentences=64,
                                      num_workers=2)  # fmt: skip
    cached.setup("fit")
    assert batches(cached) == batches(expected)
    # spawned workers get the examples pickled: as file names, mapped in each worker
    examples = cached.encoded("train")
    files = {str(Path(f._files[0]) / f"{f._files[1]}.tokens") for f in examples.fields}
    assert len(pickle.dumps(examples)) < 2000 < sum(f.tokens.nbytes for f in examples.fields)
    order = [list(range(i, min(i + 64, len(examples)))) for i in range(0, len(examples), 64)]
    loader = DataLoader(examples, batch_sampler=order, num_workers=2, multiprocessing_context="spawn",
                        collate_fn=partial(_in_worker, expected._collate()))  # fmt: skip
    got = list(loader)
    assert len({pid for _, pid, _ in got}) == 2 and all(maps == files for _, _, maps in got)
    want = [expected._collate()([expected.encoded("train")[i] for i in rows]) for rows in order]
    for (batch, _, _), w in zip(got, want, strict=True):
        assert torch.equal(batch.tokens.ids, w.tokens.ids) and torch.equal(batch.labels, w.labels)
