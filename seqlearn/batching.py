"""Padded tensors, the batches of every kind of data (translation, tagging, classification,
language-model stream windows), and the batch sampler that groups sentences of similar length.

>>> p = pad([[5, 6, 7], [8]], pad_index=0)
>>> p.ids.tolist(), p.lengths.tolist()
([[5, 6, 7], [8, 0, 0]], [3, 1])
>>> p.mask.tolist()
[[True, True, True], [True, False, False]]

Batches are dataclasses of tensors, so Lightning (and :meth:`to`) move them to a device
field by field.  :class:`BucketBatchSampler` yields lists of example indices whose
padded size fits a token budget:

>>> sampler = BucketBatchSampler([3, 9, 4, 8, 3], max_tokens=10, shuffle=False)
>>> list(sampler)
[[0, 4], [2], [3], [1]]
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .errors import ConfigError


class _TensorFields:
    """Moves or pins every tensor field of a dataclass (recursing into nested ones)."""

    def _map(self, fn: Any) -> Any:
        def apply(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return fn(value)
            if isinstance(value, _TensorFields):
                return value._map(fn)
            return value

        return dataclasses.replace(self, **{f.name: apply(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Any:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Any:
        """Called by ``DataLoader(pin_memory=True)`` so host-to-GPU copies can be asynchronous."""
        return self._map(lambda t: t.pin_memory())


@dataclass
class Padded(_TensorFields):
    """A batch of variable-length index sequences.

    ids: ``(batch, max_len)`` long, padded on the right with the vocabulary's pad index.
    lengths: ``(batch,)`` long, the true lengths.

    Nested sequences (characters of words) use the same class one dimension up:
    ids ``(batch, max_len, max_word_len)`` and lengths ``(batch, max_len)``.
    """

    ids: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """Shaped like ``ids``, bool, True on real tokens."""
        return torch.arange(self.ids.size(-1), device=self.ids.device) < self.lengths.unsqueeze(-1)

    def __len__(self) -> int:
        return self.ids.size(0)


def pad(sequences: Sequence[Sequence[int]], pad_index: int, min_len: int = 0) -> Padded:
    """Right-pad index lists into a :class:`Padded` (at least ``min_len`` columns)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = max(int(lengths.max()) if len(sequences) else 0, min_len)
    ids = torch.full((len(sequences), width), pad_index, dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return Padded(ids, lengths)


def pad_nested(sequences: Sequence[Sequence[Sequence[int]]], pad_index: int) -> Padded:
    """Right-pad lists of index lists (e.g. the characters of each word of each sentence).

    Returns ids ``(batch, max_len, max_word_len)`` and lengths ``(batch, max_len)``, where
    padding positions have length 0.

    >>> p = pad_nested([[[1, 2], [3]], [[4, 5, 6]]], pad_index=0)
    >>> p.ids.tolist()
    [[[1, 2, 0], [3, 0, 0]], [[4, 5, 6], [0, 0, 0]]]
    >>> p.lengths.tolist()
    [[2, 1], [3, 0]]
    """
    max_len = max((len(s) for s in sequences), default=0)
    max_word = max((len(w) for s in sequences for w in s), default=0)
    ids = torch.full((len(sequences), max_len, max_word), pad_index, dtype=torch.long)
    lengths = torch.zeros((len(sequences), max_len), dtype=torch.long)
    for i, sentence in enumerate(sequences):
        for j, word in enumerate(sentence):
            ids[i, j, : len(word)] = torch.as_tensor(word, dtype=torch.long)
            lengths[i, j] = len(word)
    return Padded(ids, lengths)


@dataclass
class TranslationBatch(_TensorFields):
    """A batch of sentence pairs.

    src: ids ``(batch, src_len)``: source tokens followed by ``</s>``.
    tgt: ids ``(batch, tgt_len)``: ``<s>`` + target tokens + ``</s>``; a model feeds
        ``tgt.ids[:, :-1]`` and predicts ``tgt.ids[:, 1:]``.
    index: ``(batch,)`` long, positions of the examples in their split, to look up
        raw references (e.g. for BLEU) after batching reordered them.
    """

    src: Padded
    tgt: Padded
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class TaggingBatch(_TensorFields):
    """A batch of tagged sentences.

    words: ids ``(batch, max_len)``.
    tags: ids ``(batch, max_len)``, the same shape and lengths as ``words``, padded with
        the tag vocabulary's pad index.
    chars: ids ``(batch, max_len, max_word_len)`` with lengths ``(batch, max_len)`` (0 on
        padding positions), from the original (not lowercased) words; None when the data
        module was built without character features.
    index: ``(batch,)`` long, positions of the sentences in their split.
    """

    words: Padded
    tags: Padded
    chars: Padded | None
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)


def collate_translation(items: Sequence[tuple[int, list[int], list[int]]], src_pad: int, tgt_pad: int) -> TranslationBatch:
    """``(index, src_ids, tgt_ids)`` triples, ids already carrying ``</s>`` / ``<s>..</s>``,
    into a :class:`TranslationBatch` (use with ``functools.partial`` as a ``collate_fn``)."""
    index, src, tgt = zip(*items)
    return TranslationBatch(pad(src, src_pad), pad(tgt, tgt_pad), torch.tensor(index, dtype=torch.long))


def collate_tagging(
    items: Sequence[tuple[int, list[int], list[int], list[list[int]] | None]],
    word_pad: int,
    tag_pad: int,
    char_pad: int,
) -> TaggingBatch:
    """``(index, word_ids, tag_ids, char_ids_per_word or None)`` into a :class:`TaggingBatch`."""
    index, words, tags, chars = zip(*items)
    return TaggingBatch(
        words=pad(words, word_pad),
        tags=pad(tags, tag_pad),
        chars=None if chars[0] is None else pad_nested(chars, char_pad),
        index=torch.tensor(index, dtype=torch.long),
    )


@dataclass
class ClassificationBatch(_TensorFields):
    """A batch of labeled texts.

    tokens: ids ``(batch, max_len)``.
    labels: ``(batch,)`` long class indices (single-label), or ``(batch, num_labels)``
        float 0/1 (multi-label).
    index: ``(batch,)`` long, positions of the examples in their split.
    """

    tokens: Padded
    labels: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)


def collate_classification(
    items: Sequence[tuple[int, list[int], list[int]]], pad_index: int, num_labels: int, multi_label: bool
) -> ClassificationBatch:
    """``(index, token_ids, label_ids)`` triples into a :class:`ClassificationBatch`."""
    index, tokens, label_ids = zip(*items)
    if multi_label:
        labels = torch.zeros(len(items), num_labels)
        for row, ids in enumerate(label_ids):
            labels[row, ids] = 1.0
    else:
        labels = torch.tensor([ids[0] for ids in label_ids], dtype=torch.long)
    return ClassificationBatch(pad(tokens, pad_index), labels, torch.tensor(index, dtype=torch.long))


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


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of example indices, by token budget and/or sentence count.

    lengths: one size per example, or a tuple of sizes (e.g. source and target length
        with their specials): a list, or an ``(n,)`` / ``(n, sizes)`` integer array such as
        the length index of a memory-mapped corpus.  An example's padded cost is the largest of its sizes.
    max_tokens: budget on the padded size of a batch, ``n_sentences * max_cost <= max_tokens``.
        A single example costlier than the budget still forms a batch of its own.
    max_sentences: cap on sentences per batch.  With ``max_tokens=None`` this is plain
        sentence-count batching.
    bucket: sort examples by length before cutting batches, so that each batch holds
        sentences of (nearly) the same length and padding is small.  Examples with equal
        length keys form a bucket whose order is shuffled each epoch; the sorted sequence
        of keys, hence every batch's size, is the same in every epoch, which keeps
        ``len(sampler)`` exact for Lightning's progress tracking.
    shuffle: shuffle the order of the batches (and the examples within each bucket, or
        all examples when ``bucket=False``).  Without shuffling, the batches come in a
        fixed order (by length when bucketing), for evaluation.
    seed, set_epoch: the order of epoch ``e`` depends only on ``(seed, e)``.  Each full
        iteration advances the epoch by one, because Lightning calls ``set_epoch`` only on a
        DataLoader's sampler, not on its batch sampler; call :meth:`set_epoch` to pin it.
    num_replicas, rank: data-parallel training (DDP).  The batches are cut for all
        ``num_replicas`` processes at once, with ``num_replicas`` times the budgets, and
        process ``rank`` gets every ``num_replicas``-th example of each (``batch[rank::n]``,
        similar lengths since the batch is sorted), so one step of all processes trains
        on the batch that one process with the multiplied budget would see.
    pad_shards: when a batch has fewer examples than processes, the short processes
        repeat one of its examples, so every process has the same number of batches (a
        DDP step needs all of them); without it (evaluation: every example counts once)
        they skip that batch.

    :meth:`state_dict` / :meth:`load_state_dict` hold the epoch and the number of its
    batches already delivered, which the next iteration skips: a run resumed from a
    mid-epoch checkpoint continues with the batch the interrupted run would have trained
    on next (see :class:`ResumableLoader`).
    """

    def __init__(
        self,
        lengths: Sequence[int] | Sequence[tuple[int, ...]],
        max_tokens: int | None = None,
        max_sentences: int | None = None,
        *,
        bucket: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad_shards: bool = True,
    ):
        if max_tokens is None and max_sentences is None:
            raise ConfigError("give max_tokens (a token budget) or max_sentences (a batch size), or both")
        for name, value in (("max_tokens", max_tokens), ("max_sentences", max_sentences)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"rank must be in [0, num_replicas), got rank {rank} of {num_replicas}")
        sizes = np.asarray(lengths, dtype=np.int32)
        if sizes.ndim == 1:
            sizes = sizes[:, None]
        # sort key: the padded cost first, then the individual sizes; one (n, 1 + sizes)
        # array, so that millions of examples cost bytes each, not Python tuples
        self.keys = np.concatenate([sizes.max(axis=1, initial=0, keepdims=True), sizes], axis=1)
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences
        self.bucket = bucket
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.pad_shards = pad_shards
        self.epoch = 0
        #: batches of ``epoch`` already delivered: the next iteration starts after them
        self.start = 0
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """Where the next iteration starts: ``{"epoch": e, "start": batches of e to skip}``."""
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, start = int(state["epoch"]), int(state["start"])
        if start >= len(self.batches(epoch)):  # saved after the epoch's last batch
            epoch, start = epoch + 1, 0
        self.epoch, self.start = epoch, start

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This process's batches of epoch ``epoch`` (arrays of example indices), in the
        order they are yielded."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        # Python's generator, as seqlearn 0.1.0 drew them: the same seed gives the same
        # batches as then (a run resumed from a 0.1.0 checkpoint goes on as it would have)
        rng = random.Random(f"{self.seed}/{epoch}")
        n = len(self.keys)
        order = list(range(n))
        if self.shuffle:
            rng.shuffle(order)
        order = np.array(order, dtype=np.int64)
        if self.bucket:  # stable: equal keys keep their shuffled order
            order = order[np.lexsort(self.keys[order].T[::-1])]
        batches = np.split(order, self._cuts(self.keys[order, 0].tolist())) if n else []
        if self.shuffle:
            rng.shuffle(batches)
        if self.num_replicas > 1:
            batches = [shard for shard in map(self._shard, batches) if len(shard)]
        self._cached = (epoch, batches)
        return batches

    def _shard(self, batch: np.ndarray) -> np.ndarray:
        if self.pad_shards and len(batch) <= self.rank:
            return batch[self.rank % len(batch) :][:1]
        return batch[self.rank :: self.num_replicas]

    def _cuts(self, costs: list[int]) -> list[int]:
        """Where batches start (after the first) in a sequence of examples of these padded
        costs, filled greedily up to the budgets of all ``num_replicas`` processes."""
        n = self.num_replicas
        max_tokens = None if self.max_tokens is None else self.max_tokens * n
        max_sentences = None if self.max_sentences is None else self.max_sentences * n
        cuts: list[int] = []
        start, widest = 0, 0
        for i, cost in enumerate(costs):
            wider = max(widest, cost)
            size = i - start + 1
            over_tokens = max_tokens is not None and size * wider > max_tokens
            over_sentences = max_sentences is not None and size > max_sentences
            if size > 1 and (over_tokens or over_sentences):
                cuts.append(i)
                start, wider = i, cost
            widest = wider
        return cuts

    def __iter__(self) -> Iterator[list[int]]:
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        for batch in self.batches(epoch)[start:]:
            yield batch.tolist()

    def __len__(self) -> int:
        """The batches of a whole epoch, also when resuming mid-epoch: Lightning counts the
        ones delivered before the checkpoint."""
        return len(self.batches(self.epoch))


class ResumableLoader:
    """The batches of a DataLoader driven by a :class:`BucketBatchSampler`, resumable
    mid-epoch: Lightning saves :meth:`state_dict` (the epoch and the batches delivered so
    far) in every checkpoint and passes it to :meth:`load_state_dict` when resuming
    (``trainer.fit(..., ckpt_path=...)``), so the resumed run trains on exactly the batches
    the interrupted one had still to see.  Counting here, where batches leave the loader,
    rather than in the sampler keeps the count right when workers prefetch.

    Not a DataLoader subclass on purpose: under DDP Lightning replaces the sampler of a
    DataLoader by a ``DistributedSampler``, while these batches are sharded by the batch
    sampler itself (``num_replicas``, ``rank``).
    """

    def __init__(self, loader: DataLoader):
        if not isinstance(loader.batch_sampler, BucketBatchSampler):
            raise ConfigError("ResumableLoader needs a DataLoader whose batch_sampler is a BucketBatchSampler")
        self.loader = loader
        self.batch_sampler: BucketBatchSampler = loader.batch_sampler
        self._position: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        position = self._position = self.batch_sampler.state_dict()
        for batch in self.loader:
            position["start"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "start": batches of e delivered}``: where a resumed run goes on."""
        return dict(self._position if self._position is not None else self.batch_sampler.state_dict())

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)
        self._position = None
