"""Corpus readers: parallel text (two aligned files or TSV) and tagged text (CoNLL, CoNLL-U).

Files may be plain or gzip-compressed (recognised by the gzip magic bytes, whatever the
name), and must be UTF-8 (a leading byte-order mark is dropped).  Lines end at ``\\n``;
a ``\\r`` before it is dropped too.

Malformed input raises :class:`~seqlearn.errors.DataError`, whose message starts with
``path:line:`` -- an empty file, a corrupt gzip stream, bytes that are not UTF-8, aligned
files of different lengths, a TSV line without a tab, a CoNLL line whose column count
differs from the file's first token line.  A file that cannot be opened raises the usual
:class:`OSError` (``FileNotFoundError``...).

Empty sides of a parallel pair are a policy choice (``skip_empty``): by default such
pairs are skipped and their number reported with :func:`warnings.warn`, naming the files;
with ``skip_empty=False`` the first one raises a DataError naming its file and line.

Options shared by the readers: ``lowercase`` (applied before tokenizing),
``max_length`` (drop examples with more tokens than this on either side) and ``limit``
(stop once that many examples are kept; the rest of the file is then not read, so a
length mismatch of aligned files past that point goes unnoticed).

>>> pairs = read_parallel("train.de.gz", "train.en.gz", src_tokenizer="spacy:de",
...                       tgt_tokenizer="spacy:en", max_length=50)  # doctest: +SKIP
"""
from __future__ import annotations

import gzip
import os
import re
import warnings
import zlib
from contextlib import closing
from dataclasses import dataclass
from itertools import islice, zip_longest
from typing import Any, Callable, Iterator

from .errors import ConfigError, DataError
from .tokenizers import get_tokenizer

__all__ = ["ParallelExample", "TaggedSentence", "read_parallel", "read_tsv", "read_text", "read_conll", "read_conllu"]

PathLike = str | os.PathLike

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 2048  # pairs tokenized per tokenize_batch call: large enough for spaCy's pipe


@dataclass(frozen=True)
class ParallelExample:
    """One sentence pair.  ``src_text``/``tgt_text`` are the lines as tokenized (surrounding
    whitespace stripped, lowercased if asked); ``line`` is the 1-based line number in the
    source file (or the TSV file)."""

    src_text: str
    tgt_text: str
    src: list[str]
    tgt: list[str]
    line: int


@dataclass(frozen=True)
class TaggedSentence:
    """One tagged sentence; ``line`` is the 1-based line of its first token."""

    tokens: list[str]
    tags: list[str]
    line: int


# -- lines of a file ---------------------------------------------------------------------


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for each line of a plain or gzip file, without the line
    ending.  Decoding line by line lets an encoding error name its line."""
    path = os.fspath(path)
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if not magic:
            raise DataError("file is empty", path, 1)
        if magic == _GZIP_MAGIC:
            stream: Any = gzip.GzipFile(fileobj=raw)
        elif path.endswith(".gz"):
            raise DataError("not a gzip file (no gzip magic bytes) although the name ends in .gz", path, 1)
        else:
            stream = raw
        line = 0
        try:
            for line, data in enumerate(stream, 1):
                yield line, _decode(data, path, line)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"corrupt gzip data after line {line}: {exc}", path, line + 1) from exc
        if line == 0:
            raise DataError("file is empty (after decompression)", path, 1)


def _decode(data: bytes, path: str, line: int) -> str:
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"invalid UTF-8 at byte {exc.start + 1} of the line ({data[exc.start:exc.start + 4]!r}...): {exc.reason}",
            path, line,
        ) from None
    return text[1:] if line == 1 and text.startswith("\ufeff") else text


# -- parallel corpora --------------------------------------------------------------------


def read_parallel(
    src_path: PathLike,
    tgt_path: PathLike,
    *,
    src_tokenizer: Any = "whitespace",
    tgt_tokenizer: Any = "whitespace",
    lowercase: bool = False,
    max_length: int | None = None,
    limit: int | None = None,
    skip_empty: bool = True,
) -> list[ParallelExample]:
    """Sentence pairs from two line-aligned files (plain or gzip), line ``i`` of one
    translating line ``i`` of the other.

    Tokenizers are registry names (``"spacy:de"``) or tokenizer objects.  Files with
    different line counts raise a DataError naming both counts.  A pair with an empty
    (blank) side is skipped with a warning counting them, or raises a DataError at its
    file and line when ``skip_empty=False``.  See the module docstring for the options.
    """
    rows = aligned_rows(src_path, tgt_path)
    where = f"{os.fspath(src_path)} / {os.fspath(tgt_path)}"
    return _examples(rows, where, src_tokenizer, tgt_tokenizer, lowercase, max_length, limit, skip_empty)


def read_tsv(
    path: PathLike,
    *,
    src_tokenizer: Any = "whitespace",
    tgt_tokenizer: Any = "whitespace",
    lowercase: bool = False,
    max_length: int | None = None,
    limit: int | None = None,
    skip_empty: bool = True,
) -> list[ParallelExample]:
    """Sentence pairs from ``source<TAB>target[<TAB>...]`` lines (the Tatoeba/ManyThings
    format; columns after the second, such as attributions, are ignored).

    A non-blank line without a tab raises a DataError; a blank line counts as a pair with
    empty sides (see ``skip_empty`` in :func:`read_parallel`).
    """
    return _examples(tsv_rows(path), os.fspath(path), src_tokenizer, tgt_tokenizer, lowercase, max_length, limit,
                     skip_empty)


def is_path_pair(source: Any) -> bool:
    """Whether ``source`` is a (source file, target file) pair of paths."""
    return (
        isinstance(source, (tuple, list))
        and len(source) == 2
        and all(isinstance(p, (str, os.PathLike)) for p in source)
    )


# a row: (line, source text, target text, path of the source side, path of the target side)
Row = tuple[int, str, str, str, str]


def aligned_rows(src_path: PathLike, tgt_path: PathLike) -> Iterator[Row]:
    src, tgt = os.fspath(src_path), os.fspath(tgt_path)
    src_lines, tgt_lines = iter_lines(src), iter_lines(tgt)
    with closing(src_lines), closing(tgt_lines):
        count = 0
        for a, b in zip_longest(src_lines, tgt_lines):
            if a is None or b is None:
                longer, rest = (src_lines, a) if b is None else (tgt_lines, b)
                total = rest[0]
                for total, _ in longer:
                    pass
                n_src, n_tgt = (total, count) if b is None else (count, total)
                raise DataError(
                    f"line-aligned files differ in length: {src} has {n_src} lines, {tgt} has {n_tgt} lines",
                    tgt if b is None else src, count + 1,
                )
            count = a[0]
            yield count, a[1].strip(), b[1].strip(), src, tgt


def tsv_rows(path: PathLike) -> Iterator[Row]:
    path = os.fspath(path)
    for line, text in iter_lines(path):
        if "\t" in text:
            src, tgt = text.split("\t", 2)[:2]
            yield line, src.strip(), tgt.strip(), path, path
        elif text.strip():
            raise DataError("TSV line has no tab (expected source<TAB>target)", path, line)
        else:
            yield line, "", "", path, path


def _examples(
    rows: Iterator[Row],
    where: str,
    src_tokenizer: Any,
    tgt_tokenizer: Any,
    lowercase: bool,
    max_length: int | None,
    limit: int | None,
    skip_empty: bool,
) -> list[ParallelExample]:
    """Filter, tokenize (a chunk at a time, through ``tokenize_batch``) and collect rows."""
    check_limits(max_length, limit)
    src_tok, tgt_tok = get_tokenizer(src_tokenizer), get_tokenizer(tgt_tokenizer)
    out: list[ParallelExample] = []
    chunks = text_chunks(rows, where, lowercase, skip_empty)
    with closing(chunks):
        for kept in chunks:
            if limit is not None and len(out) >= limit:
                break
            src_tokens = tokenize_batch(src_tok, [k[1] for k in kept])
            tgt_tokens = tokenize_batch(tgt_tok, [k[2] for k in kept])
            for (line, src, tgt), s, t in zip(kept, src_tokens, tgt_tokens):
                if max_length is None or (len(s) <= max_length and len(t) <= max_length):
                    out.append(ParallelExample(src, tgt, s, t, line))
    return out[:limit] if limit is not None else out


def text_chunks(rows: Iterator[Row], where: str, lowercase: bool, skip_empty: bool) -> Iterator[list[tuple[int, str, str]]]:
    """``(line, source text, target text)`` of the rows with both sides non-empty
    (lowercased if asked), a list of up to ``_CHUNK`` at a time; what the readers tokenize,
    and what :mod:`seqlearn.corpus_encoding` tokenizes on all cores.  Empty pairs raise,
    or are counted and reported in one warning once the rows are exhausted."""
    skipped, first_skipped = 0, ""

    def report() -> None:
        if skipped:
            warnings.warn(f"{where}: skipped {skipped} pair(s) with an empty source or target line (first at "
                          f"{first_skipped}); pass skip_empty=False to raise instead", stacklevel=5)

    with closing(rows):
        try:
            while chunk := list(islice(rows, _CHUNK)):
                kept = []
                for line, src, tgt, src_path, tgt_path in chunk:
                    if src and tgt:
                        kept.append((line, src.lower(), tgt.lower()) if lowercase else (line, src, tgt))
                        continue
                    side, path = ("source", src_path) if not src else ("target", tgt_path)
                    if not skip_empty:
                        raise DataError(f"empty {side} line (pass skip_empty=True to skip such pairs)", path, line)
                    skipped += 1
                    first_skipped = first_skipped or f"{path}:{line}"
                yield kept
        except GeneratorExit:  # the reader stopped early (limit): report what it read
            report()
            raise
    report()


def tokenize_batch(tokenizer: Any, texts: list[str]) -> list[list[str]]:
    """The tokens of each text, through the tokenizer's own ``tokenize_batch`` when it has one."""
    batch = getattr(tokenizer, "tokenize_batch", None)  # plugin tokenizers may only have tokenize
    return list(batch(texts)) if batch is not None else [tokenizer.tokenize(t) for t in texts]


def check_limits(max_length: int | None, limit: int | None) -> None:
    """Raise ConfigError unless ``max_length`` is None or >= 1 and ``limit`` None or >= 0."""
    if max_length is not None and max_length < 1:
        raise ConfigError(f"max_length must be >= 1 or None, got {max_length}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0 or None, got {limit}")


# -- plain text ----------------------------------------------------------------------------


def read_text(
    path: PathLike,
    *,
    tokenizer: Any = "whitespace",
    lowercase: bool = False,
    limit: int | None = None,
) -> list[list[str]]:
    """The tokens of each non-blank line of a plain or gzip text file (one sentence per
    line, as for a language model); blank lines are skipped.  ``lowercase`` applies before
    tokenizing; ``limit`` stops after that many sentences.  A file without any text
    raises a DataError."""
    check_limits(None, limit)
    path = os.fspath(path)
    tok = get_tokenizer(tokenizer)
    out: list[list[str]] = []
    lines = nonblank_lines(path, lowercase)
    with closing(lines):
        texts = (text for _, text in lines)
        while limit is None or len(out) < limit:
            chunk = list(islice(texts, _CHUNK if limit is None else min(_CHUNK, limit - len(out))))
            if not chunk:
                break
            out.extend(tokens for tokens in tokenize_batch(tok, chunk) if tokens)
    if not out and limit != 0:
        raise DataError("no text: every line is blank", path)
    return out


def nonblank_lines(path: PathLike, lowercase: bool) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of the non-blank lines of a text file, stripped and lowercased if
    asked: what :func:`read_text` tokenizes, and the language model's corpus cache encodes."""
    lines = iter_lines(path)
    with closing(lines):
        for line, text in lines:
            if text := text.strip():
                yield line, text.lower() if lowercase else text


# -- tagged corpora ----------------------------------------------------------------------

_COLUMN_SEP = re.compile(r"[ \t]+")


def read_conll(
    path: PathLike,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    lowercase: bool = False,
    max_length: int | None = None,
    limit: int | None = None,
) -> list[TaggedSentence]:
    """Tagged sentences from a CoNLL file: one token per line, columns separated by
    spaces or tabs, a blank line between sentences, ``-DOCSTART-`` lines skipped (for
    CoNLL-2003 NER, ``tag_column=-1`` is the NER tag and ``tag_column=1`` the POS tag).

    Every token line must have as many columns as the file's first token line.
    ``lowercase`` applies to tokens, not tags; ``max_length`` drops longer sentences.
    """
    path = os.fspath(path)
    n_columns = 0

    def fields(line: int, text: str) -> tuple[str, str] | None:
        nonlocal n_columns, token_column, tag_column
        if text.startswith("-DOCSTART-"):
            return None
        cols = _COLUMN_SEP.split(text.strip(" \t"))
        if not n_columns:
            n_columns = len(cols)
            for name, col in (("token_column", token_column), ("tag_column", tag_column)):
                if not -n_columns <= col < n_columns:
                    raise DataError(f"{name}={col} is out of range: the first token line has {n_columns} columns",
                                    path, line)
            token_column, tag_column = token_column % n_columns, tag_column % n_columns
        elif len(cols) != n_columns:
            raise DataError(f"line has {len(cols)} columns, but the first token line of the file has {n_columns}",
                            path, line)
        return cols[token_column], cols[tag_column]

    return _sentences(path, fields, lowercase, max_length, limit)


_UPOS, _XPOS = 3, 4
_TAG_FIELDS = {"upos": _UPOS, "xpos": _XPOS}
_WORD_ID = re.compile(r"[1-9][0-9]*")
_SKIPPED_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*|[0-9]+\.[1-9][0-9]*")  # multiword ranges, empty nodes


def read_conllu(
    path: PathLike,
    *,
    tag_field: str = "upos",
    lowercase: bool = False,
    max_length: int | None = None,
    limit: int | None = None,
) -> list[TaggedSentence]:
    """Tagged sentences from a CoNLL-U file (Universal Dependencies): the FORM column
    with the ``"upos"`` or ``"xpos"`` column as tags.

    Comment lines (``#``) are skipped, and so are multiword-token ranges (``1-2``) and
    empty nodes (``8.1``): tokens are the syntactic words.  Every other line must have the
    10 tab-separated columns of the format and an integer ID, the IDs of a sentence
    counting 1, 2, 3... (a restart without a blank line is an error: a missing sentence
    break would otherwise glue two sentences together).
    """
    if tag_field not in _TAG_FIELDS:
        raise ConfigError(f"tag_field must be one of {sorted(_TAG_FIELDS)}, got {tag_field!r}")
    tag_index = _TAG_FIELDS[tag_field]
    path = os.fspath(path)
    last_line, next_id = 0, 1

    def fields(line: int, text: str) -> tuple[str, str] | None:
        nonlocal last_line, next_id
        if line != last_line + 1:  # blank lines in between (they never reach here): a new sentence
            next_id = 1
        last_line = line
        if text.startswith("#"):
            return None
        cols = text.split("\t")
        if len(cols) != 10:
            raise DataError(f"CoNLL-U line has {len(cols)} tab-separated columns, expected 10", path, line)
        if _WORD_ID.fullmatch(cols[0]):
            if int(cols[0]) != next_id:
                raise DataError(f"CoNLL-U word ID {cols[0]} out of sequence: expected {next_id} (is a blank line "
                                "missing between two sentences?)", path, line)
            next_id += 1
            return cols[1], cols[tag_index]
        if _SKIPPED_ID.fullmatch(cols[0]):
            return None
        raise DataError(f"bad CoNLL-U ID {cols[0]!r} (expected 7, 1-2 or 8.1)", path, line)

    return _sentences(path, fields, lowercase, max_length, limit)


def _sentences(
    path: str,
    fields: Callable[[int, str], tuple[str, str] | None],
    lowercase: bool,
    max_length: int | None,
    limit: int | None,
) -> list[TaggedSentence]:
    """Group lines into sentences at blank lines; ``fields(line, text)`` gives a line's
    ``(token, tag)``, or None for a line to skip."""
    check_limits(max_length, limit)
    out: list[TaggedSentence] = []
    blocks = _blocks(iter_lines(path), fields)
    with closing(blocks):
        for first, tokens, tags in blocks:
            if limit is not None and len(out) >= limit:
                break
            if max_length is None or len(tokens) <= max_length:
                out.append(TaggedSentence([t.lower() for t in tokens] if lowercase else tokens, tags, first))
    return out


def _blocks(
    lines: Iterator[tuple[int, str]], fields: Callable[[int, str], tuple[str, str] | None]
) -> Iterator[tuple[int, list[str], list[str]]]:
    with closing(lines):
        first, tokens, tags = 0, [], []
        for line, text in lines:
            if not text.strip(" \t"):
                if tokens:
                    yield first, tokens, tags
                first, tokens, tags = 0, [], []
                continue
            pair = fields(line, text)
            if pair is None:
                continue
            first = first or line
            tokens.append(pair[0])
            tags.append(pair[1])
        if tokens:
            yield first, tokens, tags
