"""Token ids of a corpus as flat arrays with offset and length indexes (fairseq-style), in
memory or memory-mapped from a corpus cache, and the dataset that batches sentence pairs
from them without a Python object per sentence.

>>> side = TokenArray.from_sequences([[5, 6, 7], [8]])
>>> side.tokens.tolist(), side.offsets.tolist(), side.lengths.tolist()
([5, 6, 7, 8], [0, 3, 4], [3, 1])
>>> side.padded([1, 0], pad_index=0, eos=3).ids.tolist()
[[8, 3, 0, 0], [5, 6, 7, 3]]

Mapped arrays pickle as their file names, so DataLoader workers and DDP processes map the
same pages instead of each holding a copy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .batching import Padded, TranslationBatch

__all__ = ["TokenArray", "EncodedPairs", "EncodedSequences", "token_dtype"]


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type holding every id of a vocabulary of this size."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def map_array(path: Path, dtype: Any, count: int) -> np.ndarray:
    # an empty file cannot be mapped
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)


class TokenArray:
    """The id sequences of one side of a corpus.

    tokens: ``(total_tokens,)`` uint16/uint32, every sequence one after the other.
    offsets: ``(n + 1,)`` int64, sequence ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
    lengths: ``(n,)`` int32, ``offsets[i + 1] - offsets[i]``: what batching sorts by.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, lengths: np.ndarray):
        self.tokens, self.offsets, self.lengths = tokens, offsets, lengths
        self._files: tuple[str, str, int, int] | None = None  # (folder, name, total, n) when mapped

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], dtype: Any = np.uint32) -> "TokenArray":
        lengths = np.fromiter(map(len, sequences), dtype=np.int32, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter((t for s in sequences for t in s), dtype=dtype, count=int(offsets[-1]))
        return cls(tokens, offsets, lengths)

    @classmethod
    def open(cls, folder: str | os.PathLike, name: str, dtype: Any, total: int, n: int) -> "TokenArray":
        """Map ``name.tokens``, ``name.offsets`` and ``name.lengths`` of a cache folder (read-only)."""
        folder = Path(folder)
        out = cls(map_array(folder / f"{name}.tokens", dtype, total), map_array(folder / f"{name}.offsets", np.int64, n + 1),
                  map_array(folder / f"{name}.lengths", np.int32, n))  # fmt: skip
        out._files = (os.fspath(folder), name, total, n)
        return out

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def joined(self, separator: int) -> np.ndarray:
        """Every sequence followed by ``separator``, one after the other: ``(total + n,)``
        int64, laid out in one vectorized pass (a language model's stream, ``</s>`` after
        every sentence).

        >>> TokenArray.from_sequences([[5, 6], [7]]).joined(3).tolist()
        [5, 6, 3, 7, 3]
        """
        ends = self.offsets[1:] + np.arange(len(self), dtype=np.int64)  # where each separator goes
        out = np.empty(len(self.tokens) + len(self), dtype=np.int64)
        is_token = np.ones(len(out), dtype=bool)
        is_token[ends] = False
        out[is_token] = self.tokens
        out[ends] = separator
        return out

    def padded(self, indices: Sequence[int], pad_index: int, bos: int | None = None, eos: int | None = None) -> Padded:
        """Sequences ``indices`` as a :class:`Padded` batch ``(batch, width)``, each between
        ``bos`` and ``eos`` when given, gathered from the flat array in one step."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx].astype(np.int64)
        first = int(bos is not None)
        longest = int(lengths.max(initial=0))
        columns = np.arange(longest)
        inside = columns < lengths[:, None]
        ids = np.full((len(idx), longest + first + int(eos is not None)), pad_index, dtype=np.int64)
        ids[:, first : first + longest][inside] = self.tokens[(self.offsets[idx][:, None] + columns)[inside]]
        if bos is not None:
            ids[:, 0] = bos
        if eos is not None:
            ids[np.arange(len(idx)), lengths + first] = eos
        return Padded(torch.from_numpy(ids), torch.from_numpy(lengths + ids.shape[1] - longest))

    # mapped arrays travel to other processes as file names; in-memory ones as arrays
    def __getstate__(self) -> dict[str, Any]:
        if self._files is None:
            return self.__dict__
        return {"_files": self._files, "dtype": self.tokens.dtype.str}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "dtype" in state:
            folder, name, total, n = state["_files"]
            self.__dict__.update(TokenArray.open(folder, name, np.dtype(state["dtype"]), total, n).__dict__)
        else:
            self.__dict__.update(state)


class EncodedPairs(Dataset):
    """Sentence pairs of one split as ids: source + ``</s>``, ``<s>`` + target + ``</s>``.

    ``pairs[i]`` is ``(i, source ids, target ids)`` as lists (the tuples
    :func:`~seqlearn.batching.collate_translation` takes); a DataLoader with a batch
    sampler fetches ``pairs.__getitems__(indices)``, a ready
    :class:`~seqlearn.batching.TranslationBatch` (pass ``collate_fn=ready_batch``).
    specials: ``(pad, eos)`` of the source vocabulary and ``(pad, bos, eos)`` of the target's.
    """

    def __init__(self, src: TokenArray, tgt: TokenArray, src_specials: tuple[int, int],
                 tgt_specials: tuple[int, int, int]):  # fmt: skip
        self.src, self.tgt = src, tgt
        self.src_pad, self.src_eos = src_specials
        self.tgt_pad, self.tgt_bos, self.tgt_eos = tgt_specials

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[int, list[int], list[int]]:
        return i, [*self.src[i].tolist(), self.src_eos], [self.tgt_bos, *self.tgt[i].tolist(), self.tgt_eos]

    def __getitems__(self, indices: Sequence[int]) -> TranslationBatch:
        return TranslationBatch(
            self.src.padded(indices, self.src_pad, eos=self.src_eos),
            self.tgt.padded(indices, self.tgt_pad, bos=self.tgt_bos, eos=self.tgt_eos),
            torch.as_tensor(np.asarray(indices, dtype=np.int64)),
        )

    def lengths(self) -> np.ndarray:
        """``(n, 2)``: the source and target lengths with their specials, for batching."""
        return np.stack([self.src.lengths + 1, self.tgt.lengths + 2], axis=1)


class EncodedSequences(Dataset):
    """Examples of one split as ids, one :class:`TokenArray` per field: ``examples[i]`` is
    ``(i, ids of field 0, ids of field 1...)`` as lists, the tuples a data module's collate
    function takes (a classifier's ``(index, token ids, label ids)``), gathered from mapped
    arrays instead of a Python list per example.

    >>> data = EncodedSequences(TokenArray.from_sequences([[5, 6], [7]]), TokenArray.from_sequences([[1], [0]]))
    >>> data[1], data.lengths().tolist()
    ((1, [7], [0]), [2, 1])
    """

    def __init__(self, *fields: TokenArray):
        self.fields = fields
        self._views: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.fields[0])

    def __getitem__(self, i: int) -> tuple:
        if self._views is None:
            # plain ndarray views of the maps: slicing a np.memmap costs several times more
            self._views = [(np.asarray(f.tokens), np.asarray(f.offsets)) for f in self.fields]
        return (i, *(tokens[offsets[i] : offsets[i + 1]].tolist() for tokens, offsets in self._views))

    # the views are made anew in each process: the fields travel as file names
    def __getstate__(self) -> dict[str, Any]:
        return {"fields": self.fields, "_views": None}

    def lengths(self) -> np.ndarray:
        """``(n,)``: the lengths of the first field, for batching."""
        return self.fields[0].lengths


def ready_batch(batch: Any) -> Any:
    """The collate function of a dataset whose ``__getitems__`` builds the batch itself."""
    return batch
