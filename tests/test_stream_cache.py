"""The language model's corpus cache: a training text file encoded once into memory-mapped
ids (``LanguageModelDataModule(cache_dir=...)``), keyed by the file and the options.

The oracle throughout is the in-memory path of the same data module (``cache_dir=None``),
which reads the file with :func:`~seqlearn.readers.read_text` and encodes sentence by
sentence; the cached path must give the same vocabulary, stream and windows.
"""
from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import seqlearn.stream_cache as stream_cache
from seqlearn.corpus_cache import default_cache_dir
from seqlearn.errors import DataError
from seqlearn.language_model_data import LanguageModelDataModule
from seqlearn.vocab import Vocab

WORDS = "A dog runs over the Meadow . Two men eat bread , a woman reads a book in the park".split()


def write_text(path: Path, n: int = 5000, seed: int = 0, blank_every: int = 97) -> Path:
    """``n`` lines (gzip) of random words, more than two reader chunks so that preparation
    runs on worker processes; every ``blank_every``-th line is blank or only spaces."""
    rng = random.Random(seed)
    lines = ["  " if i % blank_every == 0 else " ".join(rng.choices(WORDS, k=rng.randint(1, 20)))
             for i in range(1, n + 1)]  # fmt: skip
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def windows(dm: LanguageModelDataModule) -> list[tuple[list, list, int]]:
    return [(w.input.tolist(), w.target.tolist(), w.offset) for w in dm.train_dataloader()]


def assert_same_data(cached: LanguageModelDataModule, expected: LanguageModelDataModule) -> None:
    assert cached.stream("train").dtype == torch.long
    assert torch.equal(cached.stream("train"), expected.stream("train"))
    assert cached.vocab == expected.vocab
    assert windows(cached) == windows(expected)


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(cache_dir).iterdir()) if Path(cache_dir).exists() else []


@pytest.mark.parametrize("options", [
    {},
    {"lowercase": True, "min_freq": 3, "limit": 3000},
    {"max_size": 8, "tokenizer": "char", "batch_size": 3},
])  # fmt: skip
def test_cached_stream_vocabulary_and_windows_equal_the_in_memory_path(tmp_path, options):
    text = write_text(tmp_path / "train.txt.gz")
    cached = LanguageModelDataModule(text, cache_dir=tmp_path / "cache", **options)
    cached.prepare_data()
    cached.setup("fit")
    expected = LanguageModelDataModule(text, **options)
    expected.setup("fit")
    assert_same_data(cached, expected)
    assert "train" not in cached.sentences  # the text itself was not read into lists
    assert cached.sentences == {} and len(entries(tmp_path / "cache")) == 1


def test_a_second_data_module_maps_the_entry_and_a_changed_file_or_option_is_prepared_anew(tmp_path, monkeypatch):
    text = write_text(tmp_path / "train.txt.gz")
    cache = tmp_path / "cache"
    first = LanguageModelDataModule(text, cache_dir=cache)
    first.setup("fit")  # setup prepares when prepare_data was not called
    assert len(entries(cache)) == 1
    real, calls = stream_cache.encode_corpus, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stream_cache, "encode_corpus", counting)
    again = LanguageModelDataModule(text, cache_dir=cache)
    again.prepare_data()
    again.setup("fit")
    assert calls == [] and len(entries(cache)) == 1  # a hit: nothing encoded
    assert_same_data(again, first)
    # every option the ids depend on is part of the key
    for change in ({"lowercase": True}, {"limit": 100}, {"min_freq": 2}, {"max_size": 5}, {"tokenizer": "char"},
                   {"vocab": Vocab(["dog", "the"])}):  # fmt: skip
        changed = LanguageModelDataModule(text, cache_dir=cache, **change)
        changed.setup("fit")
        expected = LanguageModelDataModule(text, **change)
        assert torch.equal(changed.stream("train"), expected.stream("train"))
    assert len(calls) == 6 and len(entries(cache)) == 7
    # options that do not change the ids (batching) map the same entry
    LanguageModelDataModule(text, cache_dir=cache, batch_size=7, bptt=5).setup("fit")
    assert len(calls) == 6
    # a rewritten file (new content, size and modification time) is prepared anew, never read stale
    write_text(text, n=300, seed=1)
    os.utime(text, ns=(1, 1))
    fresh = LanguageModelDataModule(text, cache_dir=cache)
    fresh.setup("fit")
    assert len(calls) == 7 and len(entries(cache)) == 8
    assert_same_data(fresh, LanguageModelDataModule(text))


def test_a_given_vocabulary_is_kept_and_used(tmp_path):
    text = write_text(tmp_path / "train.txt.gz", n=300)
    vocab = Vocab(["dog", "the", "park"])
    cached = LanguageModelDataModule(text, cache_dir=tmp_path / "cache", vocab=vocab)
    cached.setup("fit")
    assert cached.vocab is vocab
    assert_same_data(cached, LanguageModelDataModule(text, vocab=vocab))


def test_without_cache_dir_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the session's default cache holds other tests' entries
    text = write_text(tmp_path / "train.txt.gz", n=300)
    dm = LanguageModelDataModule(text)
    dm.prepare_data()
    dm.setup("fit")
    assert "train" in dm.sentences and entries(default_cache_dir()) == []


def test_the_mapped_entry_holds_one_id_per_token(tmp_path):
    text = write_text(tmp_path / "train.txt.gz", n=300)
    dm = LanguageModelDataModule(text, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    folder, meta = dm._train_entry()
    tokens = np.memmap(folder / "text.tokens", dtype=meta["dtypes"]["text"], mode="r")
    lines = [line.split() for line in gzip.decompress(text.read_bytes()).decode().splitlines() if line.strip()]
    assert meta["sentences"] == len(lines) and len(tokens) == sum(map(len, lines))
    assert tokens.dtype == np.uint16  # a small vocabulary: two bytes per token
    assert dm.stream("train").numel() == len(tokens) + len(lines)  # and </s> after every sentence


def test_malformed_input_is_a_data_error_with_file_and_line_during_preparation(tmp_path):
    text = write_text(tmp_path / "train.txt.gz")
    raw = gzip.decompress(text.read_bytes()).split(b"\n")
    raw[4499] = b"\xff\xfe not utf-8"  # line 4500, past the first chunks: read while workers encode
    text.write_bytes(gzip.compress(b"\n".join(raw)))
    cache = tmp_path / "cache"
    dm = LanguageModelDataModule(text, cache_dir=cache)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    assert (err.value.path, err.value.line) == (str(text), 4500) and "UTF-8" in str(err.value)
    assert entries(cache) == []
    # as the reader: a limit reached before the bad line never reads it
    limited = LanguageModelDataModule(text, cache_dir=cache, limit=2000)
    limited.setup("fit")
    assert torch.equal(limited.stream("train"), LanguageModelDataModule(text, limit=2000).stream("train"))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="every line is blank") as err:
        LanguageModelDataModule(blank, cache_dir=cache).prepare_data()
    assert err.value.path == str(blank)
    assert [e for e in entries(cache) if e.startswith(".tmp-")] == []
