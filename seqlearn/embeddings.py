"""Pretrained word vectors from word2vec / GloVe text files, matched to a :class:`Vocab`.

Nothing is downloaded: the user names a file they have (plain text or ``.gz``).

Format: one word per line followed by its values, separated by spaces.  A first line
of exactly two integers is a word2vec header (``count dim``): the dimension must then
match, and so must the number of vectors.  GloVe files have no header; their first
line sets the dimension.  Every line must carry exactly ``dim`` values (checked on
every line); values are parsed only for the words the vocabulary asks for, so reading
a large file for a small vocabulary stays quick.  The first vector of a word wins.

Matching: a vocabulary token takes the vector of the same word in the file; failing
that (with ``lowercase_fallback``) the vector of its lowercased form, so ``Paris``
finds GloVe's ``paris``.  Specials (``<pad>``, ``<unk>`` ...) are never matched.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from typing import IO, Iterator

import torch
from torch import nn

from .errors import ConfigError, DataError
from .vocab import Vocab

__all__ = ["EmbeddingCoverage", "PretrainedEmbeddings", "load_embeddings"]


@dataclass(frozen=True)
class EmbeddingCoverage:
    """How much of a vocabulary (specials excluded) a vectors file covers."""

    path: str
    dim: int
    words: int
    exact: int
    lowercased: int

    @property
    def found(self) -> int:
        return self.exact + self.lowercased

    @property
    def coverage(self) -> float:
        """Fraction of the vocabulary's words that got a vector."""
        return self.found / self.words if self.words else 0.0

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.found} of {self.words} words ({self.coverage:.1%}) have a {self.dim}-d vector "
            f"({self.exact} exact, {self.lowercased} by lowercase), {self.words - self.found} keep their random init"
        )


@dataclass
class PretrainedEmbeddings:
    """``vectors (len(vocab), dim)``: the file's vector on rows where ``found (len(vocab),)``
    is True, zeros elsewhere."""

    vectors: torch.Tensor
    found: torch.Tensor
    coverage: EmbeddingCoverage

    @torch.no_grad()
    def copy_into(self, embedding: nn.Embedding) -> None:
        """Overwrite the rows of ``embedding`` whose word was found; the others keep
        their initialization."""
        if tuple(embedding.weight.shape) != tuple(self.vectors.shape):
            raise ConfigError(
                f"{self.coverage.path}: vectors of shape {tuple(self.vectors.shape)} do not fit an embedding of shape "
                f"{tuple(embedding.weight.shape)} (set the word dimension to {self.coverage.dim})"
            )
        rows = self.found.nonzero().squeeze(-1).to(embedding.weight.device)
        embedding.weight.index_copy_(0, rows, self.vectors[self.found].to(embedding.weight))


def _open_bytes(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _fields(raw: bytes, path: str, line: int) -> list[str]:
    # decoded line by line so that an encoding error names its line
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not UTF-8 text ({exc.reason}); binary word2vec files are not supported, convert them to text", path, line
        ) from None
    # split on spaces only: some vocabularies hold tokens with other whitespace (U+00A0)
    return text.rstrip("\r\n\t ").split(" ")


def _header(fields: list[str]) -> tuple[int, int] | None:
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    return None


def _parse(values: list[str], path: str, line: int) -> list[float]:
    out = []
    for value in values:
        try:
            out.append(float(value))
        except ValueError:
            raise DataError(f"value {value!r} is not a number", path, line) from None
    return out


def _vector_lines(path: str) -> Iterator[tuple[int, str, list[str]]]:
    """``(line number, word, value fields)`` for every vector line of the file, after
    checking that each has the dimension of the header or of the first line."""
    dim = declared = first_line = None
    count = lineno = 0
    try:
        with _open_bytes(path) as f:
            for lineno, raw in enumerate(f, start=1):
                fields = _fields(raw, path, lineno)
                if fields == [""]:
                    continue
                if lineno == 1 and _header(fields):
                    declared, dim = _header(fields)
                    first_line = 1
                    continue
                if dim is None:
                    dim, first_line = len(fields) - 1, lineno
                    if dim < 1:
                        raise DataError("a vector line needs a word and at least one value", path, lineno)
                if len(fields) != dim + 1:
                    where = "the header" if declared is not None else f"line {first_line}"
                    raise DataError(
                        f"expected a word and {dim} values (as on {where}), found {len(fields) - 1} values", path, lineno
                    )
                count += 1
                yield lineno, fields[0], fields[1:]
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read embeddings file: {exc}", path) from exc
    if count == 0:
        raise DataError("no vectors in embeddings file", path)
    if declared is not None and declared != count:
        raise DataError(f"the word2vec header declares {declared} vectors but the file has {count}", path, lineno)


def load_embeddings(path: str | os.PathLike, vocab: Vocab, *, lowercase_fallback: bool = True) -> PretrainedEmbeddings:
    """Read the vectors of ``vocab``'s words from a word2vec/GloVe text file.

    Raises :class:`~seqlearn.errors.DataError` naming the file and line for a line with
    the wrong number of values, a value that is not a number, a file with no vectors, a
    word2vec file whose vector count differs from its header, or a binary file.
    """
    path = os.fspath(path)
    specials = set(vocab.specials)
    exact_rows = {tok: i for i, tok in enumerate(vocab.itos) if tok not in specials}
    lower_rows: dict[str, list[int]] = {}
    if lowercase_fallback:
        for tok, i in exact_rows.items():
            if tok.lower() != tok:
                lower_rows.setdefault(tok.lower(), []).append(i)
    exact: dict[int, list[float]] = {}
    lowered: dict[int, list[float]] = {}
    dim = 0
    for lineno, word, values in _vector_lines(path):
        dim = len(values)
        row = exact_rows.get(word)
        if row is not None and row not in exact:
            exact[row] = _parse(values, path, lineno)
        for row in lower_rows.get(word, ()):
            if row not in lowered:
                lowered[row] = _parse(values, path, lineno)

    vectors = torch.zeros(len(vocab), dim)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    for rows in (lowered, exact):  # exact matches overwrite lowercase ones
        for row, vector in rows.items():
            vectors[row] = torch.tensor(vector)
            found[row] = True
    coverage = EmbeddingCoverage(path, dim, len(exact_rows), len(exact), int(found.sum()) - len(exact))
    return PretrainedEmbeddings(vectors, found, coverage)
