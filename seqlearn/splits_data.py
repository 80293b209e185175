"""The base of seqlearn's data modules: named splits read once, vocabularies from the
training split, token-budget batches from length-sorted buckets (:class:`BucketBatchSampler`).

Vocabularies are built from the training split only (a word seen only in the validation
data is ``<unk>``), or passed in -- e.g. a trained model's, to fine-tune on new data.
``setup`` reads each split once; calling it again (Lightning calls it per stage) costs
nothing.  Subclasses: :class:`~seqlearn.datamodules.TranslationDataModule`,
:class:`~seqlearn.tagging_data.TaggingDataModule`,
:class:`~seqlearn.classification_data.ClassificationDataModule`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .batching import BucketBatchSampler, ResumableLoader
from .errors import ConfigError
from .readers import ParallelExample, TaggedSentence, is_path_pair
from .token_arrays import ready_batch

__all__ = ["SplitsDataModule", "SPLITS", "DEFAULT"]

SPLITS = ("train", "valid", "test")
DEFAULT = "default"

_Example = TypeVar("_Example", ParallelExample, TaggedSentence)


class SplitsDataModule(pl.LightningDataModule):
    """What both data modules share: splits read once, kept raw and encoded, and batched
    by a token budget.  Subclasses say how to read a source, build vocabularies, encode an
    example and collate a batch."""

    def __init__(
        self,
        sources: dict[str, Any],
        *,
        lowercase: bool,
        max_length: int | None,
        limit: int | None,
        min_freq: int,
        max_size: int | None,
        max_tokens: int | None,
        max_sentences: int | None,
        shuffle: bool,
        seed: int,
        data_dir: str | os.PathLike | None,
        num_workers: int,
        pin_memory: bool,
    ):
        super().__init__()
        if max_tokens is None and max_sentences is None:
            raise ConfigError("give max_tokens (a token budget) or max_sentences (a batch size), or both")
        if sources.get("train") is None:
            raise ConfigError("the training split is required: vocabularies are built from it")
        self.sources = sources
        self.lowercase = lowercase
        self.max_length = max_length
        self.limit = limit
        self.min_freq = min_freq
        self.max_size = max_size
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences
        self.shuffle = shuffle
        self.seed = seed
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        #: raw examples of each split, in file order (``batch.index`` points here), read on
        #: first access
        self.examples: dict[str, list] = _RawSplits(self.split)
        self._encoded: dict[str, Any] = {}
        self._train_sampler: BucketBatchSampler | None = None

    # -- subclass interface -----------------------------------------------------------
    def _read(self, source: Any, split: str) -> list:
        raise NotImplementedError

    def _has_vocabularies(self) -> bool:
        raise NotImplementedError

    def _build_vocabularies(self, train: list) -> None:
        raise NotImplementedError

    def _encode(self, index: int, example: Any, where: str) -> tuple:
        raise NotImplementedError

    def _lengths(self, encoded: list[tuple]) -> list:
        raise NotImplementedError

    def _collate(self) -> Callable:
        raise NotImplementedError

    # -- Lightning hooks ----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Nothing to download: every source is a local file, a list, or generated."""

    def setup(self, stage: str | None = None) -> None:
        """Read the splits ``stage`` needs ("fit": train and valid; "validate": valid;
        "test": test; None: all), building vocabularies from train if none were given."""
        needed = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ()}.get(stage, SPLITS)
        self._ensure_vocabularies()
        for split in needed:
            if self.sources.get(split) is not None:
                self.encoded(split)

    def split(self, name: str) -> list:
        """The raw examples of split ``name``, read on first use."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; expected one of {SPLITS}")
        if name not in self.examples:
            source = self.sources.get(name)
            if source is None:
                raise ConfigError(f"no {name} data was given to {type(self).__name__}")
            self.examples[name] = self._read(source, name)
        return self.examples[name]

    def encoded(self, name: str) -> list[tuple]:
        """Split ``name`` as ``(index, ids...)`` tuples, encoded once with the vocabularies."""
        if name not in self._encoded:
            self._ensure_vocabularies()
            where = self._where(self.sources[name], name)
            self._encoded[name] = [self._encode(i, ex, where) for i, ex in enumerate(self.split(name))]
        return self._encoded[name]

    def _ensure_vocabularies(self) -> None:
        if not self._has_vocabularies():
            self._build_vocabularies(self.split("train"))

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled token-budget batches of the training split; under DDP this process's
        share of each batch (see :class:`BucketBatchSampler`), and resumable mid-epoch
        (:class:`ResumableLoader`)."""
        sampler = self._train_sampler
        if sampler is None or (sampler.num_replicas, sampler.rank) != self._processes():
            sampler = self._train_sampler = self._sampler("train", shuffle=self.shuffle)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            # so that a run resumed from an end-of-epoch checkpoint continues with that
            # epoch's order (a mid-epoch one also restores the position, see ResumableLoader)
            sampler.set_epoch(trainer.current_epoch)
        return self._loader("train", sampler)

    def val_dataloader(self) -> ResumableLoader | list:
        """Batches of the validation split in length order; ``[]`` (Lightning then skips
        validation) when there is none."""
        return self._eval_loader("valid")

    def test_dataloader(self) -> ResumableLoader | list:
        return self._eval_loader("test")

    def _eval_loader(self, name: str) -> ResumableLoader | list:
        if self.sources.get(name) is None:
            return []
        # under DDP every example is evaluated once, by one process (metrics are summed
        # across processes by the models)
        sampler = self._sampler(name, shuffle=False, pad_shards=False)
        if len(sampler) == 0 and sampler.num_replicas > 1:
            raise ConfigError(f"the {name} split has fewer examples than the {sampler.num_replicas} processes "
                              "training: every process needs one to evaluate")
        return self._loader(name, sampler)

    # -- helpers ------------------------------------------------------------------------
    def _processes(self) -> tuple[int, int]:
        """(number of processes, this one's rank) of the trainer using this data module."""
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _sampler(self, name: str, shuffle: bool, pad_shards: bool = True) -> BucketBatchSampler:
        replicas, rank = self._processes()
        return BucketBatchSampler(
            self._lengths(self.encoded(name)), self.max_tokens, self.max_sentences, shuffle=shuffle, seed=self.seed,
            num_replicas=replicas, rank=rank, pad_shards=pad_shards,
        )  # fmt: skip

    def _dataset(self, name: str) -> Sequence[tuple]:
        """What the loader of split ``name`` reads: the encoded split."""
        return self.encoded(name)

    def _loader(self, name: str, sampler: BucketBatchSampler) -> ResumableLoader:
        dataset = self._dataset(name)
        return ResumableLoader(DataLoader(
            dataset,
            batch_sampler=sampler,
            # a dataset with __getitems__ (EncodedPairs) builds the batch itself
            collate_fn=ready_batch if hasattr(dataset, "__getitems__") else self._collate(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            # its own generator: creating an iterator then draws nothing from torch's global
            # RNG, whose state a resumed run restores from the checkpoint
            generator=torch.Generator().manual_seed(self.seed),
        ))  # fmt: skip

    def _path(self, path: str | os.PathLike) -> Path:
        """``path`` as given, or under ``data_dir`` when it is relative and one was given."""
        path = Path(path)
        return self.data_dir / path if self.data_dir is not None and not path.is_absolute() else path

    def _where(self, source: Any, split: str) -> str:
        """How error messages name a split: its file, or "<split> examples"."""
        if isinstance(source, (str, os.PathLike)) and source != DEFAULT:
            return os.fspath(self._path(source))
        if is_path_pair(source):
            return os.fspath(self._path(source[0]))
        return f"{split} examples"

    def _filter(self, examples: Sequence[_Example], split: str, length: Callable[[_Example], int],
                lower: Callable[[_Example], _Example]) -> list[_Example]:
        """Apply lowercase / max_length (training split only: held-out data is never
        filtered) / limit to examples that did not come through a reader."""
        out = []
        for ex in examples:
            if self.limit is not None and len(out) >= self.limit:
                break
            if split == "train" and self.max_length is not None and length(ex) > self.max_length:
                continue
            out.append(lower(ex) if self.lowercase else ex)
        return out


class _RawSplits(dict):
    """A dict of splits that reads a missing one when it is looked up (``examples["train"]``)."""

    def __init__(self, read: Callable[[str], list]):
        super().__init__()
        self._read = read

    def __missing__(self, name: str) -> list:
        return self._read(name)


