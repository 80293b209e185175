"""Tokenizing and encoding a corpus to ids on all cores, into a corpus cache entry.

The main process reads the files (so a malformed line raises its
:class:`~seqlearn.errors.DataError` with file and line, as the readers do) and hands
chunks of ``(line, text, text...)`` rows to worker processes, which tokenize them (spaCy,
SentencePiece... each worker has its own copy of the tokenizers) and map tokens to ids.
At most a few chunks are in flight, so memory stays flat whatever the corpus size.

With a known vocabulary (given, or a SentencePiece model's pieces) the ids go straight to
the cache.  Otherwise each token gets a provisional id in first-seen order, the counts are
summed, and once the whole split is read the vocabulary is built exactly as
:meth:`Vocab.build <seqlearn.vocab.Vocab.build>` builds it from the token lists and the
ids are rewritten through it: one tokenization pass, no token strings kept.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter, deque
from contextlib import closing, nullcontext
from itertools import chain, islice
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .corpus_cache import CacheWriter
from .errors import DataError
from .readers import tokenize_batch
from .token_arrays import token_dtype
from .vocab import Vocab

__all__ = ["encode_corpus", "available_cores"]

# (tokenizers, vocabularies or None, per side (min_length, max_length) or None, which sides are SentencePiece
# ids, (message, file) of the DataError for a row without tokens or None), set in each worker by _init
_STATE: tuple | None = None
_BLOCK = 1 << 24  # ids rewritten at a time once a built vocabulary is known
_SHUTDOWN_WAIT = 30.0  # seconds the chunks in flight get to finish when encoding stops early


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init(*state: Any) -> None:
    global _STATE
    _STATE = state


def _encode_chunk(rows: Sequence[tuple], state: tuple | None = None) -> list:
    """Rows ``(line, text of side 0, text of side 1...)`` to, per side, ``(types, ids,
    lengths)`` of the rows whose every bounded side has ``min_length`` to ``max_length``
    tokens: ids of the vocabulary (types None), or indices into ``types``, this chunk's
    tokens in first-seen order.  With ``no_tokens``, the first row with a bounded side of no
    tokens ends the chunk, and its DataError follows the sides in the list."""
    tokenizers, vocabs, bounds, direct, no_tokens = state if state is not None else _STATE
    sides = []
    for k, (tokenizer, ids) in enumerate(zip(tokenizers, direct)):
        texts = [row[k + 1] for row in rows]
        # one thread each: the cores are busy with one worker process each
        sides.append(tokenizer.sp.encode(texts, num_threads=1) if ids else tokenize_batch(tokenizer, texts))
    error = None
    if no_tokens is not None:
        empty = next((i for i in range(len(rows)) if any(b and not side[i] for side, b in zip(sides, bounds))), None)
        if empty is not None:  # raised once the rows before it are taken: a limit may come first
            error = DataError(*no_tokens, rows[empty][0])
            sides = [side[:empty] for side in sides]
    keep = [i for i in range(len(sides[0])) if all(b is None or b[0] <= len(side[i]) <= b[1] for side, b in zip(sides, bounds))]
    if len(keep) < len(sides[0]):
        sides = [[side[i] for i in keep] for side in sides]
    encoded = [_ids(side, vocab, ids) for side, vocab, ids in zip(sides, vocabs, direct)]
    return encoded if error is None else [*encoded, error]


def _ids(token_lists: list[list], vocab: Vocab | None, direct: bool) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, token_lists), dtype=np.int32, count=len(token_lists))
    tokens = chain.from_iterable(token_lists)
    total = int(lengths.sum())
    if direct:  # already the vocabulary's ids
        return None, np.fromiter(tokens, dtype=np.uint32, count=total), lengths
    if vocab is not None:
        lookup = vocab.__getitem__ if vocab.unk_index is None else _getter(vocab.stoi, vocab.unk_index)
        return None, np.fromiter(map(lookup, tokens), dtype=np.uint32, count=total), lengths
    types: dict[str, int] = {}
    ids = np.fromiter((types.setdefault(t, len(types)) for t in tokens), dtype=np.uint32, count=total)
    return list(types), ids, lengths


def _getter(stoi: dict[str, int], unk: int) -> Any:
    return lambda token: stoi.get(token, unk)


def _sentencepiece_ids(tokenizer: Any, vocab: Vocab | None) -> bool:
    """Whether SentencePiece's own ids of ``tokenizer`` are those of ``vocab`` (a model
    trained by seqlearn, its pieces the vocabulary): then they are taken as they are,
    which spares making a string of every piece."""
    from .subwords import SentencePieceTokenizer

    if not isinstance(tokenizer, SentencePieceTokenizer) or vocab is None:
        return False
    specials = {"pad": vocab.pad_index, "unk": vocab.unk_index, "bos": vocab.bos_index, "eos": vocab.eos_index}
    return tokenizer.special_ids() == specials and vocab.itos == Vocab.from_sentencepiece(tokenizer).itos


class _Side:
    """One side being written.  Ids of a known vocabulary are appended as they come;
    otherwise provisional ids and counts, rewritten by :meth:`finish`."""

    def __init__(self, name: str, vocab: Vocab | None, out: CacheWriter):
        self.name, self.vocab, self.out = name, vocab, out
        self.dtype = token_dtype(len(vocab)) if vocab is not None else np.dtype(np.uint32)
        self.types: dict[str, int] = {}
        self.counts = np.zeros(0, dtype=np.int64)
        out.append(name, np.zeros(0, self.dtype), np.zeros(0, np.int32))  # the side exists even if empty

    def add(self, types: list[str] | None, ids: np.ndarray, lengths: np.ndarray) -> None:
        if types is not None:
            lut = np.fromiter((self.types.setdefault(t, len(self.types)) for t in types), np.uint32, len(types))
            ids = lut[ids]
            counts = np.bincount(ids, minlength=len(self.types))
            if len(counts) > len(self.counts):
                self.counts = np.concatenate([self.counts, np.zeros(len(counts) - len(self.counts), np.int64)])
            self.counts += counts
        self.out.append(self.name, ids.astype(self.dtype, copy=False), lengths)

    def finish(self, **options: Any) -> Vocab:
        """The vocabulary, built from the counts with ``options`` (of :meth:`Vocab.from_counts
        <seqlearn.vocab.Vocab.from_counts>`) when none was given, and the ids rewritten to it."""
        if self.vocab is not None:
            return self.vocab
        # a Counter in first-seen order, as Vocab.build counts: ties then keep that order
        counts = Counter(dict(zip(self.types, self.counts.tolist())))
        self.vocab = Vocab.from_counts(counts, **options)
        lut = np.fromiter(map(self.vocab.__getitem__, self.types), np.int64, len(self.types))
        dtype = token_dtype(len(self.vocab))
        self.out.rewrite(f"{self.name}.tokens", np.uint32, lambda block: lut[block].astype(dtype), _BLOCK)
        self.dtype = dtype
        return self.vocab


def encode_corpus(
    chunks: Iterable[list[tuple]],
    tokenizers: Sequence[Any],
    out: CacheWriter,
    *,
    sides: Sequence[str],
    vocabs: Sequence[Vocab | None],
    min_freq: int = 1,
    max_size: int | None = None,
    max_length: int | None = None,
    min_length: int = 0,
    unbounded: Sequence[str] = (),
    no_tokens: tuple[str, str] | None = None,
    vocab_options: dict[str, dict[str, Any]] | None = None,
    limit: int | None = None,
    processes: int | None = None,
) -> tuple[int, list[Vocab], dict[str, str]]:
    """Encode rows ``(line, text per side...)`` into ``out``, one side per tokenizer.

    vocabs: per side, the vocabulary to encode with, or None to build one from this
        split's counts (``min_freq``, ``max_size``; ``vocab_options[side]``, keyword
        arguments of :meth:`Vocab.from_counts <seqlearn.vocab.Vocab.from_counts>`, replace
        them for a side: ``{"labels": {"specials": ()}}``).
    max_length, min_length: drop rows with more (fewer) tokens than this on any side but
        the ``unbounded`` ones (labels); limit: stop after this many kept rows.
    no_tokens: ``(message, file)``: a row with a bounded side of no tokens raises
        ``DataError(message, file, line)``, as a reader would (unless the limit comes first).  processes: worker processes (default: every available core; 1
        encodes in this process).
    Returns the number of rows kept, the vocabularies and each side's id dtype.
    """
    direct = [_sentencepiece_ids(tok, vocab) for tok, vocab in zip(tokenizers, vocabs)]
    longest = float("inf") if max_length is None else max_length
    bounds = [None if name in unbounded else (min_length, longest) for name in sides]
    state = (list(tokenizers), list(vocabs), bounds, direct, no_tokens)
    written = [_Side(name, vocab, out) for name, vocab in zip(sides, vocabs)]
    kept = 0
    results = _encoded(chunks, state, available_cores() if processes is None else processes)
    try:
        for result in results:
            error = result.pop() if isinstance(result[-1], DataError) else None
            take = len(result[0][2]) if limit is None else min(len(result[0][2]), limit - kept)
            for side, (types, ids, lengths) in zip(written, result):
                side.add(types, ids[: int(lengths[:take].sum())], lengths[:take])
            kept += take
            if limit is not None and kept >= limit:
                break
            if error is not None:
                raise error
    finally:
        results.close()
    options = vocab_options or {}
    built = [side.finish(**options.get(side.name, {"min_freq": min_freq, "max_size": max_size})) for side in written]
    return kept, built, {side.name: side.dtype.name for side in written}


def _deferred(chunks: Iterable[list[tuple]]) -> Iterator[list[tuple] | DataError]:
    """The chunks; a DataError while reading ahead is yielded in its place and ends them,
    to be raised when its turn comes (a ``limit`` may be reached before)."""
    it = iter(chunks)
    with closing(it) if hasattr(it, "close") else nullcontext():  # a reader stopped early reports what it read
        while True:
            try:
                chunk = next(it)
            except StopIteration:
                return
            except DataError as exc:
                yield exc
                return
            if chunk:
                yield chunk


def _encoded(chunks: Iterable[list[tuple]], state: tuple, processes: int) -> Iterator[list]:
    """``_encode_chunk`` of each chunk, in order; on ``processes`` workers when there is
    more than one chunk, keeping at most two chunks per worker in flight."""
    with closing(_deferred(chunks)) as pulled:
        yield from _encoded_chunks(pulled, state, processes)


def _encoded_chunks(pulled: Iterator[list[tuple] | DataError], state: tuple, processes: int) -> Iterator[list]:
    head = list(islice(pulled, 2))
    if processes <= 1 or len(head) < 2 or isinstance(head[1], DataError):
        for chunk in chain(head, pulled):
            if isinstance(chunk, DataError):
                raise chunk
            yield _encode_chunk(chunk, state)
        return
    # fork shares the loaded tokenizers; elsewhere they are pickled to each worker
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(processes, _init, state)
    pending: deque = deque()
    try:
        for chunk in chain(head, pulled):
            pending.append(chunk if isinstance(chunk, DataError) else pool.apply_async(_encode_chunk, (chunk,)))
            while len(pending) > 2 * processes:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        # Pool.terminate() deadlocks when a worker is writing a large result that no one
        # reads any more (it holds the result pipe's lock), as when a limit or an error
        # stops early: let the chunks in flight finish, then shut the pool down in order.
        # A chunk whose worker was killed (a terminal's Ctrl-C reaches the workers too)
        # never comes: then terminating is the only way out.
        tasks = [task for task in pending if not isinstance(task, DataError)]
        deadline = time.monotonic() + _SHUTDOWN_WAIT
        for task in tasks:
            task.wait(max(0.0, deadline - time.monotonic()))
        if all(task.ready() for task in tasks):
            pool.close()
        else:
            pool.terminate()
        pool.join()


def _result(pending: Any) -> list:
    if isinstance(pending, DataError):
        raise pending
    return pending.get()
