"""How :class:`~seqlearn.classification_data.ClassificationDataModule` prepares a training
TSV file (``label<TAB>text``) into the corpus cache (:mod:`seqlearn.corpus_cache`) and maps
it back.

Preparation, once per file and options: the main process reads the lines (a malformed one
raises its :class:`~seqlearn.errors.DataError` with file and line, as
:func:`~seqlearn.classification_data.read_labeled_tsv` does); worker processes tokenize the
texts (:func:`~seqlearn.corpus_encoding.encode_corpus`); the entry holds two sides, ``text``
(the token ids) and ``labels`` (each example's label ids), and both vocabularies, built
from the counts as the in-memory path builds them unless they were given.  Mapping: the
training split is an :class:`~seqlearn.token_arrays.EncodedSequences` over the two mapped
sides, whose items are the ``(index, token ids, label ids)`` tuples of the in-memory path.
"""
from __future__ import annotations

import os
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from .corpus_cache import CachedTrainingFile, CacheWriter, file_identity, open_entry, open_side, tokenizer_identity
from .corpus_cache import vocab_identity
from .corpus_encoding import encode_corpus
from .errors import DataError
from .readers import check_limits
from .token_arrays import EncodedSequences
from .tokenizers import get_tokenizer
from .vocab import Vocab

__all__ = ["CachedTrainingExamples"]

SIDES = ("text", "labels")
_CHUNK = 2048  # lines per chunk, as read_labeled_tsv tokenizes them


class _LabelList:
    """The tokenizer of the ``labels`` side: an example's labels joined by tabs (which a
    label never holds: the label field ends at the first tab)."""

    def tokenize(self, text: str) -> list[str]:
        return text.split("\t") if text else []


class CachedTrainingExamples(CachedTrainingFile):
    """Mixed into ClassificationDataModule: the training file's cache entry, used when
    ``self.cache_dir`` is given, the training split is a file and the key can tell the
    tokenizer apart (:meth:`_cached`)."""

    def _use_entry(self) -> None:
        """The vocabularies not given, from the entry."""
        folder, _ = self._train_entry()
        if self.vocab is None:
            self.vocab = Vocab.load(folder / "text.vocab.json")
        if self.label_vocab is None:
            self.label_vocab = Vocab.load(folder / "labels.vocab.json")

    def _cached_examples(self) -> EncodedSequences:
        folder, meta = self._train_entry()
        return EncodedSequences(*(open_side(folder, meta, side) for side in SIDES))

    def _cache_parts(self) -> dict[str, Any]:
        """Everything the encoded training file depends on: what the key hashes."""
        from . import __version__

        return {
            "kind": "classification", "seqlearn": __version__, "files": [file_identity(self._train_file())],
            "tokenizer": tokenizer_identity(get_tokenizer(self.tokenizer)), "lowercase": self.lowercase,
            "multi_label": self.multi_label, "label_separator": self.label_separator,
            "max_length": self.max_length, "limit": self.limit, "min_freq": self.min_freq, "max_size": self.max_size,
            "vocabularies": [vocab_identity(self.vocab), vocab_identity(self.label_vocab)],
        }  # fmt: skip

    def _rows(self, path: str) -> Iterator[list[tuple[int, str, str]]]:
        """Chunks of ``(line, text, labels joined by tabs)``; with a given label vocabulary, a
        label it lacks is a DataError at its line."""
        from .classification_data import labeled_lines  # that module mixes this class in

        lines = labeled_lines(path, self.multi_label, self.label_separator)
        with closing(lines):
            while chunk := list(islice(lines, _CHUNK)):
                rows = []
                for line, labels, text in chunk:
                    unknown = [] if self.label_vocab is None else [x for x in labels if x not in self.label_vocab]
                    if unknown:
                        raise DataError(f"label {unknown[0]!r} does not occur in the training data", path, line)
                    rows.append((line, text.lower() if self.lowercase else text, "\t".join(labels)))
                yield rows

    def _prepare_train(self, root: Path, key: str) -> tuple[Path, dict[str, Any]]:
        check_limits(self.max_length, self.limit)
        path = os.fspath(self._train_file())
        with CacheWriter(root, key) as out:
            examples, vocabs, dtypes = encode_corpus(
                self._rows(path), [get_tokenizer(self.tokenizer), _LabelList()], out, sides=SIDES,
                vocabs=[self.vocab, self.label_vocab], min_freq=self.min_freq, max_size=self.max_size,
                max_length=self.max_length, unbounded=("labels",), no_tokens=("the text has no tokens", path),
                vocab_options={"labels": {"specials": ()}}, limit=self.limit,
            )  # fmt: skip
            for side, vocab in zip(SIDES, vocabs):
                out.write_vocab(side, vocab)
            out.commit({"dtypes": dtypes, "examples": examples, "source": path, "parts": self._cache_parts()})
        return open_entry(root, key)
