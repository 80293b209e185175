"""A corpus as parallel contiguous token streams, cut into windows for truncated BPTT.

A language model reads its corpus as one long token sequence: every sentence followed by
``</s>``.  :func:`batchify` cuts that sequence into ``streams`` contiguous pieces of equal
length, one per batch row (the remainder that does not fill a row is dropped), as the
classic Penn Treebank language models do.  :class:`StreamWindows` then walks over the
pieces ``bptt`` positions at a time: window ``k`` holds, for every row, the tokens at
positions ``k*bptt ... k*bptt + L - 1`` as input and the tokens one position later as
targets.  Consecutive windows continue each other row by row, so a model may carry its
recurrent state from one window to the next.

>>> streams = batchify(torch.arange(10), streams=2)
>>> streams.tolist()
[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
>>> [(w.input.tolist(), w.target.tolist()) for w in StreamWindows(streams, bptt=3)]
[([[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [6, 7, 8]]), ([[3], [8]], [[4], [9]])]

:class:`LanguageModelDataModule` reads text files (one sentence per line, plain or gzip),
builds the vocabulary from the training split and serves these windows in order -- never
shuffled, since the order is what lets the state carry over -- through a
:class:`WindowLoader`, which a run resumed mid-epoch continues with the next window.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .batching import _TensorFields
from .errors import ConfigError, DataError
from .readers import read_text
from .tokenizers import get_tokenizer
from .vocab import Vocab

__all__ = ["StreamBatch", "StreamWindows", "WindowLoader", "batchify", "encode_stream", "LanguageModelDataModule",
           "TextSource"]

# A text file (one sentence per line), or sentences as strings (tokenized) or token lists.
TextSource = Union[str, os.PathLike, Sequence[str], Sequence[Sequence[str]], None]


@dataclass
class StreamBatch(_TensorFields):
    """One window of the parallel streams.

    input: ``(streams, len)`` long, the tokens fed.
    target: ``(streams, len)`` long, the next token at each position (``input`` shifted by one).
    offset: the position of the window's first column in the streams; the window with
        offset 0 starts the streams.
    """

    input: torch.Tensor
    target: torch.Tensor
    offset: int

    def __len__(self) -> int:
        return self.input.size(0)


def encode_stream(sentences: Sequence[Sequence[str]], vocab: Vocab) -> torch.Tensor:
    """The token ids of the sentences, each followed by ``</s>``, as one sequence ``(n_tokens,)``."""
    ids = [i for tokens in sentences for i in vocab.encode(tokens, add_eos=True)]
    return torch.tensor(ids, dtype=torch.long)


def batchify(ids: torch.Tensor, streams: int) -> torch.Tensor:
    """Cut ``ids`` ``(n,)`` into ``streams`` contiguous rows ``(streams, n // streams)``:
    row ``i`` holds tokens ``i * (n // streams)`` to ``(i + 1) * (n // streams) - 1``; the last
    ``n % streams`` tokens are dropped."""
    if streams < 1:
        raise ConfigError(f"the number of streams must be >= 1, got {streams}")
    steps = ids.numel() // streams
    return ids[: steps * streams].view(streams, steps)


class StreamWindows(Dataset):
    """The windows of ``bptt`` positions over batchified ``streams`` ``(streams, steps)``, in
    order.  The last window may be shorter; the last position of the streams is only ever a
    target.  Each item is a :class:`StreamBatch` (use ``DataLoader(batch_size=None)``)."""

    def __init__(self, streams: torch.Tensor, bptt: int):
        if bptt < 1:
            raise ConfigError(f"bptt must be >= 1, got {bptt}")
        if streams.dim() != 2 or streams.size(1) < 2:
            raise DataError(f"streams of shape {tuple(streams.shape)} hold no (input, target) pair: each of the "
                            "streams needs at least 2 tokens")
        self.streams = streams
        self.bptt = bptt

    def __len__(self) -> int:
        return -(-(self.streams.size(1) - 1) // self.bptt)

    def __getitem__(self, k: int) -> StreamBatch:
        if not 0 <= k < len(self):
            raise IndexError(k)
        start = k * self.bptt
        length = min(self.bptt, self.streams.size(1) - 1 - start)
        return StreamBatch(
            self.streams[:, start : start + length], self.streams[:, start + 1 : start + 1 + length], start
        )


class WindowLoader:
    """The windows of :class:`StreamWindows`, in order, resumable mid-epoch: Lightning saves
    :meth:`state_dict` (the windows of this epoch delivered so far) in every checkpoint and
    passes it to :meth:`load_state_dict` when resuming (``trainer.fit(..., ckpt_path=...)``),
    so the resumed run goes on with the window after the last one trained on -- the one the
    state in the checkpoint continues into (see :class:`~seqlearn.language_model.LanguageModel`).
    A plain DataLoader would start the epoch over while Lightning counted on."""

    def __init__(self, windows: StreamWindows):
        self.windows = windows
        self._delivered = 0
        self._resume_at = 0

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[StreamBatch]:
        # a position at the end of an epoch resumes with the next epoch, from its first window
        start = self._resume_at if self._resume_at < len(self.windows) else 0
        self._delivered, self._resume_at = start, 0
        for k in range(start, len(self.windows)):
            self._delivered = k + 1
            yield self.windows[k]

    def state_dict(self) -> dict[str, int]:
        """``{"start": windows of this epoch delivered}``: where a resumed run goes on."""
        return {"start": self._delivered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_at = self._delivered = int(state["start"])


class LanguageModelDataModule(pl.LightningDataModule):
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
                self.vocab = Vocab.build(self.split("train"), self.min_freq, self.max_size)
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
