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

:class:`WindowLoader` serves the windows in order -- never shuffled, since the order is
what lets the state carry over -- and a run resumed mid-epoch continues with the next
window.  :class:`~seqlearn.language_model_data.LanguageModelDataModule` builds all this
from text files.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset

from .batching import StreamBatch
from .errors import ConfigError, DataError
from .vocab import Vocab

__all__ = ["StreamBatch", "StreamWindows", "WindowLoader", "batchify", "encode_stream"]


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


def __getattr__(name: str) -> Any:
    # seqlearn 0.1.0 defined the data module here; its home is now seqlearn.language_model_data
    if name in ("LanguageModelDataModule", "TextSource"):
        warnings.warn(f"seqlearn.streams.{name} moved to seqlearn.language_model_data.{name} "
                      "(or use seqlearn.LanguageModelDataModule)", DeprecationWarning, stacklevel=2)
        from . import language_model_data

        return getattr(language_model_data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
