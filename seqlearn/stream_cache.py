"""How :class:`~seqlearn.language_model_data.LanguageModelDataModule` prepares a training
text file into the corpus cache (:mod:`seqlearn.corpus_cache`) and maps it back as the id
stream its windows are cut from.

Preparation, once per file and options: the non-blank lines are tokenized and encoded on
all cores (:func:`~seqlearn.corpus_encoding.encode_corpus`; a line without tokens is
dropped, as :func:`~seqlearn.readers.read_text` drops it), and the vocabulary is built from
the counts unless one was given; the entry holds the sentences as its ``text`` side and the
vocabulary.  Mapping lays the mapped ids out as the stream, ``</s>`` after every sentence,
in one vectorized pass (:meth:`~seqlearn.token_arrays.TokenArray.joined`): no Python object
per token, and no tokenizing on a second run.
"""
from __future__ import annotations

import os
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import torch

from .corpus_cache import CachedTrainingFile, CacheWriter, file_identity, open_entry, open_side, tokenizer_identity
from .corpus_cache import vocab_identity
from .corpus_encoding import encode_corpus
from .errors import DataError
from .readers import check_limits, nonblank_lines
from .tokenizers import get_tokenizer
from .vocab import Vocab

__all__ = ["CachedTrainingStream"]

_CHUNK = 2048  # lines per chunk handed to an encoding worker


def _chunks(lines: Iterator[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    with closing(lines):
        while chunk := list(islice(lines, _CHUNK)):
            yield chunk


class CachedTrainingStream(CachedTrainingFile):
    """Mixed into LanguageModelDataModule: the training file's cache entry, used when
    ``self.cache_dir`` is given, the training split is a file and the key can tell its
    tokenizer apart (:meth:`_cached`)."""

    def _cached_vocab(self) -> Vocab:
        return Vocab.load(self._train_entry()[0] / "text.vocab.json")

    def _cached_stream(self) -> torch.Tensor:
        """The training stream ``(n_tokens,)`` from the mapped entry, ``</s>`` after every sentence."""
        text = open_side(*self._train_entry(), "text")
        return torch.from_numpy(text.joined(self.vocab.eos_index))

    def _cache_parts(self) -> dict[str, Any]:
        """Everything the encoded training file depends on: what the key hashes."""
        from . import __version__

        return {
            "kind": "language-model", "seqlearn": __version__, "files": [file_identity(self._train_file())],
            "tokenizer": tokenizer_identity(get_tokenizer(self.tokenizer)), "lowercase": self.lowercase,
            "limit": self.limit, "min_freq": self.min_freq, "max_size": self.max_size,
            "vocabulary": vocab_identity(self.vocab),
        }  # fmt: skip

    def _prepare_train(self, root: Path, key: str) -> tuple[Path, dict[str, Any]]:
        check_limits(None, self.limit)
        path = self._train_file()
        with CacheWriter(root, key) as out:
            sentences, (vocab,), dtypes = encode_corpus(
                _chunks(nonblank_lines(path, self.lowercase)), [get_tokenizer(self.tokenizer)], out, sides=("text",),
                vocabs=[self.vocab], min_freq=self.min_freq, max_size=self.max_size, min_length=1, limit=self.limit,
            )  # fmt: skip
            if not sentences and self.limit != 0:
                raise DataError("no text: every line is blank", os.fspath(path))
            out.write_vocab("text", vocab)
            out.commit({"dtypes": dtypes, "sentences": sentences, "source": os.fspath(path),
                        "parts": self._cache_parts()})  # fmt: skip
        return open_entry(root, key)
