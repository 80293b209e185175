"""Labeled texts for sequence classifiers: the TSV reader and the data module (batches:
:class:`seqlearn.batching.ClassificationBatch`).

File format: one example per line, ``label<TAB>text`` (plain or gzip, UTF-8, as every
reader of :mod:`seqlearn.readers`).  The text is everything after the first tab (further
tabs are part of it, whitespace to most tokenizers).  Blank lines are skipped.

* single-label: the label field is one label, taken as is (it may hold commas);
* multi-label (``multi_label=True``): the label field lists the example's labels separated
  by ``label_separator`` (default ``","``), e.g. ``sports,politics<TAB>text``; surrounding
  spaces are stripped, a repeated label counts once, and an empty field means "no label".

A non-blank line without a tab, an empty label (single-label), an empty item in a label
list (``a,,b``), and a text without tokens raise :class:`~seqlearn.errors.DataError`
naming the file and line; so does a validation or test label the training data never had.

>>> dm = ClassificationDataModule("train.tsv", "valid.tsv", multi_label=True)  # doctest: +SKIP
>>> model = SequenceClassifier.from_datamodule(dm, pooling="attention")        # doctest: +SKIP

With ``cache_dir``, a training file is tokenized and encoded once into the corpus cache
(:mod:`seqlearn.classification_cache`); later runs map it instead of reading it again:

>>> dm = ClassificationDataModule("train.tsv", "valid.tsv", cache_dir="cache")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from functools import partial
from itertools import islice
from typing import Any, Callable, Iterator, Sequence, Union

from .batching import ClassificationBatch, collate_classification
from .classification_cache import CachedTrainingExamples
from .splits_data import SplitsDataModule
from .errors import ConfigError, DataError
from .readers import PathLike, check_limits, iter_lines, tokenize_batch
from .token_arrays import EncodedSequences
from .tokenizers import get_tokenizer
from .vocab import Vocab

__all__ = ["LabeledText", "read_labeled_tsv", "ClassificationBatch", "ClassificationDataModule"]

# A TSV path or ready examples.
LabeledSource = Union[str, os.PathLike, Sequence["LabeledText"], None]

_CHUNK = 2048  # lines tokenized per tokenize_batch call


@dataclass(frozen=True)
class LabeledText:
    """One example: ``text`` as tokenized (stripped, lowercased if asked), its ``tokens``,
    its ``labels`` (exactly one for single-label data) and the 1-based ``line`` of the file."""

    text: str
    tokens: list[str]
    labels: list[str]
    line: int


def read_labeled_tsv(
    path: PathLike,
    *,
    multi_label: bool = False,
    label_separator: str = ",",
    tokenizer: Any = "whitespace",
    lowercase: bool = False,
    max_length: int | None = None,
    limit: int | None = None,
) -> list[LabeledText]:
    """Examples from ``label<TAB>text`` lines; see the module docstring for the format.

    ``lowercase`` applies to the text (not the labels) before tokenizing; ``max_length``
    drops texts of more tokens; ``limit`` stops after that many examples.
    """
    check_limits(max_length, limit)
    if multi_label and not label_separator:
        raise ConfigError("label_separator must be a non-empty string")
    path = os.fspath(path)
    tok = get_tokenizer(tokenizer)
    rows = labeled_lines(path, multi_label, label_separator)
    out: list[LabeledText] = []
    while limit is None or len(out) < limit:
        # never more lines than examples still wanted: lines past the limit are not read
        size = _CHUNK if limit is None else min(_CHUNK, limit - len(out))
        chunk = list(islice(rows, size))
        if not chunk:
            break
        texts = [text.lower() if lowercase else text for _, _, text in chunk]
        for (line, labels, _), text, tokens in zip(chunk, texts, tokenize_batch(tok, texts)):
            if not tokens:
                raise DataError("the text has no tokens", path, line)
            if max_length is None or len(tokens) <= max_length:
                out.append(LabeledText(text, tokens, labels, line))
    return out


def labeled_lines(path: str, multi_label: bool, separator: str) -> Iterator[tuple[int, list[str], str]]:
    """``(line, labels, text)`` of each non-blank line of a labeled TSV file: what
    :func:`read_labeled_tsv` tokenizes, and the corpus cache encodes."""
    for line, text in iter_lines(path):
        if text.strip():
            yield line, *_fields(text, multi_label, separator, path, line)


def _fields(text: str, multi_label: bool, separator: str, path: str, line: int) -> tuple[list[str], str]:
    """The labels and the text of a non-blank line."""
    if "\t" not in text:
        raise DataError("line has no tab (expected label<TAB>text)", path, line)
    field, body = text.split("\t", 1)
    body = body.strip()
    if not body:
        raise DataError("empty text after the label", path, line)
    if not multi_label:
        label = field.strip()
        if not label:
            raise DataError("empty label (expected label<TAB>text)", path, line)
        return [label], body
    if not field.strip():
        return [], body
    labels = [item.strip() for item in field.split(separator)]
    if not all(labels):
        raise DataError(f"empty label in the label list {field!r} (labels are separated by {separator!r})", path, line)
    return list(dict.fromkeys(labels)), body


class ClassificationDataModule(CachedTrainingExamples, SplitsDataModule):
    """Labeled texts for :class:`~seqlearn.classifier.SequenceClassifier`.

    train, valid, test: each a TSV path (``label<TAB>text``; see the module docstring) or a
        list of :class:`LabeledText`.  Relative paths are taken under ``data_dir``.
    multi_label, label_separator: how label fields are read (and batched).
    tokenizer: registry name or tokenizer object for the files' texts.
    lowercase, limit: on every split; max_length: drops longer training texts only.
    min_freq, max_size: of the word vocabulary, built from train; the label vocabulary
        holds every training label (no specials).  Pass ``vocab`` / ``label_vocab`` to use
        existing ones (unknown words become ``<unk>``; an unknown label is a DataError).
    max_tokens, max_sentences, shuffle, seed: batching, as for translation.
    cache_dir: where a training split read from a file is prepared once as memory-mapped
        ids (:meth:`prepare_data`, :mod:`seqlearn.classification_cache`): a later run maps
        them instead of reading and tokenizing the file again, and the batches are the
        same.  None (the default) reads it in memory every time, as before.  The entry is
        keyed by the file (path, size, modification time), the tokenizer and every option
        above that changes the ids (``multi_label``, ``label_separator``, ``lowercase``,
        ``max_length``, ``limit``, ``min_freq``, ``max_size``, given vocabularies).  With a
        given ``label_vocab``, a training label it lacks is a DataError even on a text that
        ``max_length`` drops.  Example lists, and the (small) validation and test splits,
        are read in memory.

    Batches are :class:`ClassificationBatch`; ``batch.index`` points into ``self.examples[split]``.
    """

    def __init__(
        self,
        train: LabeledSource,
        valid: LabeledSource = None,
        test: LabeledSource = None,
        *,
        multi_label: bool = False,
        label_separator: str = ",",
        tokenizer: Any = "whitespace",
        lowercase: bool = False,
        max_length: int | None = None,
        limit: int | None = None,
        min_freq: int = 1,
        max_size: int | None = None,
        max_tokens: int | None = 2048,
        max_sentences: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        vocab: Vocab | None = None,
        label_vocab: Vocab | None = None,
        data_dir: str | os.PathLike | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ):
        super().__init__(
            {"train": train, "valid": valid, "test": test},
            lowercase=lowercase, max_length=max_length, limit=limit, min_freq=min_freq, max_size=max_size,
            max_tokens=max_tokens, max_sentences=max_sentences, shuffle=shuffle, seed=seed, data_dir=data_dir,
            num_workers=num_workers, pin_memory=pin_memory,
        )  # fmt: skip
        self.multi_label = multi_label
        self.label_separator = label_separator
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.label_vocab = label_vocab
        self.cache_dir = cache_dir
        self._cacheable: bool | None = None  # whether the training split goes through the cache
        self._entry: tuple[Path, dict[str, Any]] | None = None  # its cache entry

    def encoded(self, name: str) -> list[tuple] | EncodedSequences:
        """Split ``name`` as ``(index, token ids, label ids)`` tuples: the training split
        mapped from the corpus cache (with ``cache_dir``), others encoded once in memory."""
        if name == "train" and name not in self._encoded and self._cached():
            self._ensure_vocabularies()
            self._encoded[name] = self._cached_examples()
        return super().encoded(name)

    def _ensure_vocabularies(self) -> None:
        if not self._has_vocabularies() and self._cached():
            self._use_entry()
        super()._ensure_vocabularies()

    def _read(self, source: LabeledSource, split: str) -> list[LabeledText]:
        if isinstance(source, (str, os.PathLike)):
            return read_labeled_tsv(
                self._path(source), multi_label=self.multi_label, label_separator=self.label_separator,
                tokenizer=self.tokenizer, lowercase=self.lowercase, limit=self.limit,
                max_length=self.max_length if split == "train" else None,
            )  # fmt: skip
        if isinstance(source, Sequence) and all(isinstance(ex, LabeledText) for ex in source):
            def lower(ex: LabeledText) -> LabeledText:
                return dataclasses.replace(ex, text=ex.text.lower(), tokens=[t.lower() for t in ex.tokens])

            return self._filter(source, split, lambda ex: len(ex.tokens), lower)
        raise ConfigError(f"{split}: expected a TSV path or a list of LabeledText, got {type(source).__name__}")

    def _has_vocabularies(self) -> bool:
        return self.vocab is not None and self.label_vocab is not None

    def _build_vocabularies(self, train: list[LabeledText]) -> None:
        if self.vocab is None:
            self.vocab = Vocab.build((ex.tokens for ex in train), self.min_freq, self.max_size)
        if self.label_vocab is None:
            self.label_vocab = Vocab.build((ex.labels for ex in train), specials=())

    def _encode(self, index: int, ex: LabeledText, where: str) -> tuple[int, list[int], list[int]]:
        if not ex.tokens:
            raise DataError("the text has no tokens", where, ex.line)
        unknown = [label for label in ex.labels if label not in self.label_vocab]
        if unknown:
            raise DataError(f"label {unknown[0]!r} does not occur in the training data", where, ex.line)
        if not self.multi_label and len(ex.labels) != 1:
            raise DataError(f"single-label data needs exactly one label per text, got {ex.labels}", where, ex.line)
        return index, self.vocab.encode(ex.tokens), self.label_vocab.encode(ex.labels)

    def _lengths(self, encoded: list[tuple] | EncodedSequences) -> Sequence[int]:
        if isinstance(encoded, EncodedSequences):
            return encoded.lengths()
        return [len(tokens) for _, tokens, _ in encoded]

    def _collate(self) -> Callable:
        return partial(collate_classification, pad_index=self.vocab.pad_index, num_labels=len(self.label_vocab),
                       multi_label=self.multi_label)  # fmt: skip
