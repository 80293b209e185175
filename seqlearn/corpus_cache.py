"""The on-disk corpus cache: one folder per prepared corpus, named by a hash of everything
its contents depend on, written atomically and memory-mapped when read.

A cache entry ``<cache_dir>/<key>/`` holds, per side, ``<side>.tokens`` (uint16 ids when
the vocabulary has at most 65,536 entries, else uint32), ``<side>.offsets`` (int64) and
``<side>.lengths`` (int32), fairseq-style; the vocabularies as JSON; whatever else the
preparation stores (a SentencePiece model); ``meta.json``; and ``COMPLETE``, written last.

The key hashes the input files (path, size and modification time), the tokenizers
(:func:`tokenizer_identity`: a SentencePiece model by its bytes), lowercasing, the length
filters and the vocabulary options: change any and the corpus is prepared again into a
new folder, never read stale.  Old entries stay until removed (``rm -r`` the folder, or
the whole ``cache_dir``).

Writing goes to a temporary sibling folder (``.tmp-<key>-<host>-<pid>-...``); every file is
fsynced, ``COMPLETE`` is written, and the folder is renamed into place in one step.  A
preparation killed midway leaves only a temporary folder, which is never read (and is
removed by the next preparation of that key once its process is gone).

Why flat numpy arrays and not Arrow files through Hugging Face ``datasets``
(``benchmarks/cache_format.py``, 464k sentences of 15-39 ids, pyarrow 26, this 2-core
machine): opening the store and reading its length index takes 1 ms and 2 MB of RSS
against 18 ms and 29 MB for a memory-mapped Arrow IPC file; gathering a padded batch of
64 random sentences takes 62-77 µs against 5.6-7.7 ms with Arrow's ``take`` (``datasets``
adds its own Python formatting on top); and no dependency comes with it.

>>> root = default_cache_dir()  # doctest: +SKIP
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import uuid
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

from .token_arrays import TokenArray, map_array
from .tokenizers import get_tokenizer

__all__ = ["default_cache_dir", "cache_key", "file_identity", "tokenizer_identity", "vocab_identity", "identifiable",
           "CacheWriter", "open_entry", "entry_for", "CachedTrainingFile", "FORMAT"]  # fmt: skip

#: the layout version, part of every key: a new layout never reads an old one's folders
FORMAT = "seqlearn.corpus-cache/1"
COMPLETE = "COMPLETE"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/seqlearn/corpora``, by default ``~/.cache/seqlearn/corpora``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seqlearn" / "corpora"


def cache_key(parts: dict[str, Any]) -> str:
    """A hex digest of ``parts`` (JSON-able) and :data:`FORMAT`: the folder name of an entry."""
    text = json.dumps({"format": FORMAT, **parts}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """A file as the key sees it: absolute path, size and modification time (nanoseconds)."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def tokenizer_identity(tokenizer: Any) -> str | None:
    """What a tokenizer's output depends on, for the key: the hash of its SentencePiece
    model bytes (``model_proto``), its ``cache_identity()`` when it has one (seqlearn's
    tokenizers have: spaCy's names its version), or else its ``repr`` when that says more
    than the object's address; None when nothing tells (its corpus is then not cached)."""
    kind = f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"
    proto = getattr(tokenizer, "model_proto", None)
    proto = proto() if callable(proto) else proto
    if isinstance(proto, (bytes, bytearray)):
        return f"{kind}:{hashlib.sha256(bytes(proto)).hexdigest()}"
    identity = getattr(tokenizer, "cache_identity", None)
    if callable(identity):
        return f"{kind}:{identity()}"
    if type(tokenizer).__repr__ is object.__repr__:
        return None
    return f"{kind}:{tokenizer!r}"


def identifiable(tokenizers: Sequence[Any], warn: bool = True) -> bool:
    """Whether the key can tell every one of ``tokenizers`` apart (:func:`tokenizer_identity`).
    When not, the training split is read in memory rather than risk a stale cache, and (with
    ``warn``) a warning says why."""
    opaque = [t for t in tokenizers if tokenizer_identity(t) is None]
    if opaque and warn:
        warnings.warn(f"the training split is read in memory, not prepared into the corpus cache: seqlearn cannot "
                      f"tell when tokenizer {opaque[0]!r} changes; give it a cache_identity() method returning a "
                      "string that changes with its output", stacklevel=3)  # fmt: skip
    return not opaque


def vocab_identity(vocab: Any) -> str | None:
    """A given vocabulary as the key sees it: the hash of its JSON (None: built from the data)."""
    return None if vocab is None else hashlib.sha256(json.dumps(vocab.to_dict()).encode()).hexdigest()


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheWriter:
    """Writes one entry into a temporary folder; :meth:`commit` makes it visible.

    >>> with CacheWriter(root, key) as out:  # doctest: +SKIP
    ...     out.append("src", ids, lengths)
    ...     out.commit({"n": n})

    Leaving the ``with`` block without committing (an exception) removes the folder.
    """

    def __init__(self, root: str | os.PathLike, key: str):
        self.root, self.key = Path(root), key
        self.root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(self.root, key)
        self.folder = self.root / f"{_temporary_prefix(key)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir()
        self._files: dict[str, BinaryIO] = {}
        self.counts: dict[str, list[int]] = {}  # side -> [sequences, tokens]
        self._ends: dict[str, int] = {}

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        for f in self._files.values():
            f.close()
        if self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)

    def _file(self, name: str) -> BinaryIO:
        if name not in self._files:
            self._files[name] = open(self.folder / name, "wb")
        return self._files[name]

    def append(self, side: str, ids: np.ndarray, lengths: np.ndarray) -> None:
        """Append sequences to ``side``: their ids one after the other, and their lengths."""
        if side not in self.counts:
            self.counts[side], self._ends[side] = [0, 0], 0
            self._file(f"{side}.offsets").write(np.zeros(1, np.int64).tobytes())
        ends = self._ends[side] + np.cumsum(lengths, dtype=np.int64)
        self._file(f"{side}.tokens").write(np.ascontiguousarray(ids).tobytes())
        self._file(f"{side}.offsets").write(ends.tobytes())
        self._file(f"{side}.lengths").write(np.asarray(lengths, dtype=np.int32).tobytes())
        self.counts[side][0] += len(lengths)
        self.counts[side][1] += len(ids)
        self._ends[side] = int(ends[-1]) if len(ends) else self._ends[side]

    def rewrite(self, name: str, dtype: Any, fn: Callable[[np.ndarray], np.ndarray], block: int) -> None:
        """Replace file ``name``, an array of ``dtype``, by ``fn`` of it, ``block`` items at a time."""
        self._files.pop(name).close()
        path, new = self.folder / name, self.folder / f"{name}.new"
        old = map_array(path, dtype, path.stat().st_size // np.dtype(dtype).itemsize)
        with open(new, "wb") as f:
            for start in range(0, len(old), block):
                f.write(np.ascontiguousarray(fn(np.asarray(old[start : start + block]))).tobytes())
            f.flush()
            os.fsync(f.fileno())
        del old
        os.replace(new, path)

    def write_bytes(self, name: str, data: bytes) -> None:
        self._file(name).write(data)

    def write_vocab(self, name: str, vocab: Any) -> None:
        """``vocab`` as ``<name>.vocab.json`` (read back with ``Vocab.load``)."""
        self.write_bytes(f"{name}.vocab.json", json.dumps(vocab.to_dict(), ensure_ascii=False).encode("utf-8"))

    def commit(self, meta: dict[str, Any]) -> Path:
        """fsync everything, write ``meta.json`` and ``COMPLETE``, rename into place; the
        entry's final folder.  If another process committed the same key first, its entry
        is kept and this one dropped (both hold the same data)."""
        dtypes = {side: meta["dtypes"][side] for side in self.counts}
        meta = {**meta, "key": self.key, "dtypes": dtypes,
                "counts": {side: {"sequences": n, "tokens": t} for side, (n, t) in self.counts.items()}}  # fmt: skip
        self.write_bytes("meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8"))
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._files.clear()
        _commit_marker(self.folder / COMPLETE, self.key)
        _fsync_folder(self.folder)
        final = self.root / self.key
        try:
            os.rename(self.folder, final)
        except OSError:
            if not (final / COMPLETE).exists():
                raise
        _fsync_folder(self.root)
        return final


def _commit_marker(path: Path, key: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())


def _temporary_prefix(key: str) -> str:
    # the host too: on a shared file system a process id means something on its own host only
    return f".tmp-{key}-{socket.gethostname()}-"


def _remove_abandoned(root: Path, key: str) -> None:
    """Temporary folders of this key left by preparations on this host whose process is gone."""
    prefix = _temporary_prefix(key)
    for folder in root.glob(f"{glob.escape(prefix)}*"):
        try:
            os.kill(int(folder.name[len(prefix) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def open_entry(root: str | os.PathLike, key: str) -> tuple[Path, dict[str, Any]] | None:
    """``(folder, meta)`` of a complete entry, or None when there is none (a partial one
    never has its ``COMPLETE`` under the key's name)."""
    folder = Path(root) / key
    marker = folder / COMPLETE
    if not marker.is_file() or marker.read_text(encoding="utf-8") != key:
        return None
    return folder, json.loads((folder / "meta.json").read_text(encoding="utf-8"))


def entry_for(cache_dir: str | os.PathLike | None, parts: dict[str, Any],
              prepare: Callable[[Path, str], tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    """``(folder, meta)`` of the entry keyed by ``parts`` in ``cache_dir`` (None:
    :func:`default_cache_dir`), made by ``prepare(root, key)`` when there is none."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(parts)
    return open_entry(root, key) or prepare(root, key)


class CachedTrainingFile:
    """Mixed into a data module whose training split, one file, goes through the cache when
    ``self.cache_dir`` is given (the language-model and classifier data modules): it has
    ``sources``, ``tokenizer``, ``cache_dir``, ``_path``, ``_cacheable`` and ``_entry`` (both
    None at first), and gives ``_cache_parts()`` and ``_prepare_train(root, key)``."""

    def prepare_data(self) -> None:
        """Encode a training file into the corpus cache (``cache_dir``) unless an entry for
        this file and these options is there already.  Lightning calls this before
        ``setup``, in one process per node; ``setup`` prepares when nobody did."""
        if self._cached():
            self._train_entry()

    def _cached(self) -> bool:
        """Whether the training split goes through the cache: ``cache_dir`` is given, the
        split is a file, and the key can tell its tokenizer apart."""
        if self._cacheable is None:
            source = self.sources["train"]
            self._cacheable = (self.cache_dir is not None and isinstance(source, (str, os.PathLike))
                               and identifiable([get_tokenizer(self.tokenizer)]))  # fmt: skip
        return self._cacheable

    def _train_entry(self) -> tuple[Path, dict[str, Any]]:
        """``(folder, meta)`` of the training file's entry, prepared if missing."""
        if self._entry is None:
            self._entry = entry_for(self.cache_dir, self._cache_parts(), self._prepare_train)
        return self._entry

    def _train_file(self) -> Path:
        return self._path(self.sources["train"])


def open_side(folder: Path, meta: dict[str, Any], side: str) -> TokenArray:
    """Map one side of a complete entry."""
    counts = meta["counts"][side]
    return TokenArray.open(folder, side, np.dtype(meta["dtypes"][side]), counts["tokens"], counts["sequences"])
