"""The data module of :class:`~seqlearn.language_model.LanguageModel`: text files (one
sentence per line, plain or gzip) or lists of sentences, read as parallel contiguous token
streams and served as windows for truncated BPTT (see :mod:`seqlearn.streams`).

>>> dm = LanguageModelDataModule("train.en.gz", "val.en.gz", batch_size=20, bptt=35)  # doctest: +SKIP
>>> lm = LanguageModel.from_datamodule(dm, cell="lstm")                               # doctest: +SKIP

With ``cache_dir``, a training file is tokenized and encoded once into the corpus cache
(:mod:`seqlearn.stream_cache`); later runs map it instead of reading the text again:

>>> dm = LanguageModelDataModule("train.en.gz", "val.en.gz", cache_dir="cache")  # doctest: +SKIP
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .errors import ConfigError, DataError
from .readers import read_text
from .stream_cache import CachedTrainingStream
from .streams import StreamWindows, WindowLoader, batchify, encode_stream
from .tokenizers import get_tokenizer
from .vocab import Vocab

__all__ = ["LanguageModelDataModule", "TextSource"]

# A text file (one sentence per line), or sentences as strings (tokenized) or token lists.
TextSource = Union[str, os.PathLike, Sequence[str], Sequence[Sequence[str]], None]


class LanguageModelDataModule(CachedTrainingStream, pl.LightningDataModule):
    """Text for :class:`~seqlearn.language_model.LanguageModel`, as windows of parallel streams.

    train, valid, test: each a text file with one sentence per line (plain or gzip; blank
        lines skipped; relative paths under ``data_dir``), or a list of sentences (strings,
        split by ``tokenizer``, or token lists).
    tokenizer: registry name, e.g. ``"whitespace"`` or ``"spacy:en"`` for words, ``"char"``
        for characters.  lowercase, limit: as in :func:`~seqlearn.readers.read_text`.
    min_freq, max_size: of the vocabulary built from train (tokens it lacks become
        ``<unk>``); or pass ``vocab``.
    batch_size, eval_batch_size: parallel streams in training and in evaluation.
    bptt: window length (truncated backpropagation through time).
    cache_dir: where a training split read from a file is prepared once as memory-mapped
        ids (:meth:`prepare_data`, :mod:`seqlearn.stream_cache`): a later run maps them
        instead of reading and tokenizing the text again, and the windows are the same.
        None (the default) reads it in memory every time, as before
        (:func:`~seqlearn.corpus_cache.default_cache_dir` is the folder the translation data
        module uses).  The entry is keyed by the file (path, size, modification time), the
        tokenizer, ``lowercase``, ``limit``, ``min_freq``, ``max_size`` and a given
        ``vocab``.  Sentence lists, and the (small) validation and test splits, are read in
        memory.

    Every sentence is followed by ``</s>``; each split becomes one stream of ids
    (:meth:`stream`), cut by :func:`batchify` and served by :class:`StreamWindows` as
    :class:`StreamBatch` windows, in order.
    """

    def __init__(
        self,
        train: TextSource,
        valid: TextSource = None,
        test: TextSource = None,
        *,
        tokenizer: str = "whitespace",
        lowercase: bool = False,
        limit: int | None = None,
        min_freq: int = 1,
        max_size: int | None = None,
        vocab: Vocab | None = None,
        batch_size: int = 20,
        eval_batch_size: int = 10,
        bptt: int = 35,
        data_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        super().__init__()
        if train is None:
            raise ConfigError("the training split is required: the vocabulary is built from it")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("bptt", bptt)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        get_tokenizer(tokenizer)  # an unknown name fails here, with suggestions
        self.sources = {"train": train, "valid": valid, "test": test}
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.limit = limit
        self.min_freq = min_freq
        self.max_size = max_size
        self.vocab = vocab
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.bptt = bptt
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.cache_dir = cache_dir
        self._cacheable: bool | None = None  # whether the training split goes through the cache
        self._entry: tuple[Path, dict[str, Any]] | None = None  # its cache entry
        #: tokenized sentences of each split read so far
        self.sentences: dict[str, list[list[str]]] = {}
        self._streams: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read the splits ``stage`` needs and build the vocabulary from train if none was given."""
        needed = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}.get(stage, tuple(self.sources))
        for split in needed:
            if self.sources[split] is not None:
                self.stream(split)

    def split(self, name: str) -> list[list[str]]:
        """The tokenized sentences of split ``name``, read on first use."""
        if self.sources.get(name) is None:
            raise ConfigError(f"no {name} data was given to {type(self).__name__}")
        if name not in self.sentences:
            self.sentences[name] = self._read(self.sources[name], name)
        return self.sentences[name]

    def stream(self, name: str) -> torch.Tensor:
        """Split ``name`` as one sequence of ids ``(n_tokens,)``, ``</s>`` after every sentence."""
        if name not in self._streams:
            if self.vocab is None:
                self.vocab = (self._cached_vocab() if self._cached()
                              else Vocab.build(self.split("train"), self.min_freq, self.max_size))  # fmt: skip
            if name == "train" and self._cached():
                self._streams[name] = self._cached_stream()
            else:
                self._streams[name] = encode_stream(self.split(name), self.vocab)
        return self._streams[name]

    def windows(self, name: str, streams: int | None = None) -> StreamWindows:
        """The windows of split ``name`` over ``streams`` rows (default: ``batch_size`` for
        train, ``eval_batch_size`` otherwise)."""
        if streams is None:
            streams = self.batch_size if name == "train" else self.eval_batch_size
        ids = self.stream(name)
        if ids.numel() < 2 * streams:
            raise DataError(f"{ids.numel()} tokens cannot fill {streams} streams of at least 2 tokens each "
                            f"(lower {'batch_size' if name == 'train' else 'eval_batch_size'})", self._where(name))
        return StreamWindows(batchify(ids, streams), self.bptt)

    def train_dataloader(self) -> WindowLoader:
        """The training windows in order, resumable mid-epoch (:class:`WindowLoader`)."""
        return WindowLoader(self.windows("train"))

    def val_dataloader(self) -> DataLoader | list:
        """In-order windows of the validation split; ``[]`` (no validation) when there is none."""
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    def _eval_loader(self, name: str) -> DataLoader | list:
        if self.sources[name] is None:
            return []
        return DataLoader(self.windows(name), batch_size=None, shuffle=False)

    # -- reading ---------------------------------------------------------------------------
    def _path(self, source: str | os.PathLike) -> Path:
        path = Path(source)
        return self.data_dir / path if self.data_dir is not None and not path.is_absolute() else path

    def _where(self, name: str) -> str:
        source = self.sources[name]
        return os.fspath(self._path(source)) if isinstance(source, (str, os.PathLike)) else f"{name} sentences"

    def _read(self, source: TextSource, name: str) -> list[list[str]]:
        if isinstance(source, (str, os.PathLike)):
            return read_text(self._path(source), tokenizer=self.tokenizer, lowercase=self.lowercase, limit=self.limit)
        if not isinstance(source, Sequence):
            raise ConfigError(f"{name}: expected a text file or a list of sentences, got {type(source).__name__}")
        tokenizer = get_tokenizer(self.tokenizer)
        sentences = []
        for sentence in source[: self.limit]:
            if isinstance(sentence, str):
                tokens = tokenizer.tokenize(sentence.lower() if self.lowercase else sentence)
            else:
                tokens = [t.lower() for t in sentence] if self.lowercase else [str(t) for t in sentence]
            if tokens:
                sentences.append(tokens)
        if not sentences:
            raise DataError("no text: every sentence is empty", self._where(name))
        return sentences
