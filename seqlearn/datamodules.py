"""LightningDataModules for translation and tagging: read, build vocabularies, batch.

Vocabularies are built from the training split only (a word seen only in the validation
data is ``<unk>``), or passed in -- e.g. a trained model's, to fine-tune on new data.
Batches are cut by a token budget from length-sorted buckets (:class:`BucketBatchSampler`).

>>> dm = TranslationDataModule("default", max_tokens=512)
>>> dm.setup("fit")
>>> batch = next(iter(dm.train_dataloader()))
>>> batch.src.ids.shape[0] == batch.tgt.ids.shape[0] == len(batch.index)
True
>>> dm.src_vocab.decode(batch.src.ids[0]) == dm.examples["train"][int(batch.index[0])].src
True

``setup`` reads each split once; calling it again (Lightning calls it per stage) costs
nothing.

A translation training split read from files is prepared once into the corpus cache
(:mod:`seqlearn.corpus_cache`): :meth:`~TranslationDataModule.prepare_data` tokenizes and
encodes it on all cores, and ``setup`` then only maps the ids; its raw text
(``data.examples["train"]``) is read only if asked for.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar, Union

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .batching import BucketBatchSampler, ResumableLoader, collate_tagging, collate_translation
from .corpus_cache import open_side
from .default_task import make_default_task
from .errors import ConfigError, DataError, VocabError
from .readers import ParallelExample, TaggedSentence, _is_path_pair, read_conll, read_conllu, read_parallel, read_tsv
from .subwords import MODEL_TYPES, SampledPairs, SentencePieceTokenizer, is_sentencepiece_name, train_sentencepiece
from .tag_schemes import canonical_scheme, convert_tags, find_violation
from .token_arrays import EncodedPairs, TokenArray, ready_batch, token_dtype
from .tokenizers import get_tokenizer
from .translation_cache import CachedTrainingSplit
from .vocab import Vocab

__all__ = ["TranslationDataModule", "TaggingDataModule", "ParallelSource", "TaggedSource"]

SPLITS = ("train", "valid", "test")
DEFAULT = "default"

# A TSV path, a (source file, target file) pair, ready examples, or "default".
ParallelSource = Union[tuple[str, str], str, os.PathLike, Sequence[ParallelExample], None]
# A CoNLL / CoNLL-U path, or ready sentences.
TaggedSource = Union[str, os.PathLike, Sequence[TaggedSentence], None]

_Example = TypeVar("_Example", ParallelExample, TaggedSentence)


class _SplitsDataModule(pl.LightningDataModule):
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
        if _is_path_pair(source):
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


def _is_file_source(source: Any) -> bool:
    """Whether ``source`` names files (which the readers tokenize), not examples or "default"."""
    return isinstance(source, os.PathLike) or (isinstance(source, str) and source != DEFAULT) or _is_path_pair(source)


def _encode_tags(vocab: Vocab, sentence: TaggedSentence, where: str) -> list[int]:
    """Tag ids; a tag the training data never had is a DataError naming the sentence."""
    try:
        return vocab.encode(sentence.tags)
    except VocabError:
        position, tag = next((i, t) for i, t in enumerate(sentence.tags) if t not in vocab)
        raise DataError(
            f"tag {tag!r} of token {position + 1} ({sentence.tokens[position]!r}) of the sentence starting on this "
            f"line does not occur in the training data", where, sentence.line,
        ) from None


class TranslationDataModule(CachedTrainingSplit, _SplitsDataModule):
    """Parallel data for :class:`~seqlearn.Seq2Seq`.

    train, valid, test: each a TSV path (``source<TAB>target``), a pair of line-aligned
        files ``("train.de.gz", "train.en.gz")`` (source first), a list of
        :class:`~seqlearn.readers.ParallelExample`, or ``"default"`` for the embedded
        English -> German number task (:mod:`seqlearn.default_task`).  When train is
        ``"default"``, valid and test left as None come from the default task too.
        Relative paths are taken under ``data_dir`` when it is given.
    src_tokenizer, tgt_tokenizer: registry names or tokenizer objects, used on files;
        ready examples and the default task come tokenized (by whitespace).  A trained
        model's ``model.src_tokenizer``/``model.tgt_tokenizer`` with its vocabularies
        fine-tune it on new data (a SentencePiece model then segments new words into
        known pieces).
    subwords, vocab_size, joint, subword_sample_size: with ``subwords`` ``"bpe"`` or
        ``"unigram"``, a SentencePiece model of ``vocab_size`` pieces (at most) is trained
        on a seeded sample of at most ``subword_sample_size`` training sentences
        (:func:`~seqlearn.subwords.train_sentencepiece`); it replaces both tokenizers and
        its pieces are the vocabularies (``joint``: one model and vocabulary for both
        sides, else one per side).  ``max_length`` then counts pieces.
    subword_alpha, subword_nbest: subword regularization of the training batches, which
        segment each sentence anew every time they are drawn (SentencePiece sampling;
        see :class:`~seqlearn.subwords.SentencePieceTokenizer`); validation and test
        batches always use the one deterministic segmentation.  Needs SentencePiece
        tokenizers (``subwords``, or given ones).  The token budget is reckoned on the
        deterministic segmentation, which sampled ones exceed somewhat.
    lowercase, limit: as in the readers, on every split.  max_length: drops longer training
        pairs only; validation and test sentences are never filtered.
    min_freq, max_size: of the vocabularies, built from train.  Pass ``src_vocab`` and
        ``tgt_vocab`` to use existing ones instead (tokens they lack become ``<unk>``).
    max_tokens, max_sentences: batch budget (padded tokens of the longer side, with
        specials) and/or sentences per batch.  shuffle, seed: training order.
    cache_dir: where a training split read from files is prepared once as memory-mapped
        ids (:meth:`prepare_data`); by default :func:`~seqlearn.corpus_cache.default_cache_dir`,
        ``~/.cache/seqlearn/corpora``.  Splits given as examples, the default task, and the
        (small) validation and test splits are encoded in memory.

    Batches are :class:`~seqlearn.batching.TranslationBatch` (src ends with ``</s>``, tgt is
    ``<s> ... </s>``); ``batch.index`` points into ``self.examples[split]`` and
    :meth:`references`.
    """

    def __init__(
        self,
        train: ParallelSource = DEFAULT,
        valid: ParallelSource = None,
        test: ParallelSource = None,
        *,
        src_tokenizer: Any = "whitespace",
        tgt_tokenizer: Any = "whitespace",
        lowercase: bool = False,
        max_length: int | None = None,
        limit: int | None = None,
        min_freq: int = 1,
        max_size: int | None = None,
        max_tokens: int | None = 1024,
        max_sentences: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        src_vocab: Vocab | None = None,
        tgt_vocab: Vocab | None = None,
        data_dir: str | os.PathLike | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        subwords: str | None = None,
        vocab_size: int = 8000,
        joint: bool = True,
        subword_sample_size: int = 2_000_000,
        subword_alpha: float | None = None,
        subword_nbest: int = -1,
        cache_dir: str | os.PathLike | None = None,
    ):
        if subwords is not None and subwords not in MODEL_TYPES:
            raise ConfigError(f"subwords must be None, {' or '.join(map(repr, MODEL_TYPES))}; got {subwords!r}")
        if subwords is not None and (src_vocab is not None or tgt_vocab is not None):
            raise ConfigError("subwords trains new vocabularies: pass either subwords or src_vocab/tgt_vocab "
                              "(with a trained model's tokenizers)")  # fmt: skip
        if train == DEFAULT:
            valid = DEFAULT if valid is None else valid
            test = DEFAULT if test is None else test
        super().__init__(
            {"train": train, "valid": valid, "test": test},
            lowercase=lowercase, max_length=max_length, limit=limit, min_freq=min_freq, max_size=max_size,
            max_tokens=max_tokens, max_sentences=max_sentences, shuffle=shuffle, seed=seed, data_dir=data_dir,
            num_workers=num_workers, pin_memory=pin_memory,
        )  # fmt: skip
        # a SentencePiece model is loaded once: the splits are segmented by it, also ready examples
        self.src_tokenizer = get_tokenizer(src_tokenizer) if is_sentencepiece_name(src_tokenizer) else src_tokenizer
        self.tgt_tokenizer = get_tokenizer(tgt_tokenizer) if is_sentencepiece_name(tgt_tokenizer) else tgt_tokenizer
        self.src_vocab = src_vocab
        self.tgt_vocab = tgt_vocab
        self.subwords = subwords
        self.subword_options = {"vocab_size": vocab_size, "input_sentence_size": subword_sample_size, "seed": seed}
        self.joint = joint
        self.subword_alpha = subword_alpha
        self.subword_nbest = subword_nbest
        self.cache_dir = cache_dir
        self._default_task: dict[str, list[ParallelExample]] | None = None
        self._entry: tuple[Path, dict[str, Any]] | None = None  # the training split's cache entry

    def encoded(self, name: str) -> EncodedPairs:
        """Split ``name`` as ids (:class:`~seqlearn.token_arrays.EncodedPairs`): the
        training split mapped from the corpus cache, others encoded once in memory."""
        if name not in self._encoded:
            self._ensure_vocabularies()
            if name == "train" and self._cached():
                folder, meta = self._train_entry()
                src, tgt = open_side(folder, meta, "src"), open_side(folder, meta, "tgt")
            else:
                examples = self.split(name)
                src = TokenArray.from_sequences([self.src_vocab.encode(ex.src) for ex in examples],
                                                token_dtype(len(self.src_vocab)))  # fmt: skip
                tgt = TokenArray.from_sequences([self.tgt_vocab.encode(ex.tgt) for ex in examples],
                                                token_dtype(len(self.tgt_vocab)))  # fmt: skip
            self._encoded[name] = EncodedPairs(
                src, tgt, (self.src_vocab.pad_index, self.src_vocab.eos_index),
                (self.tgt_vocab.pad_index, self.tgt_vocab.bos_index, self.tgt_vocab.eos_index),
            )  # fmt: skip
        return self._encoded[name]

    def _ensure_vocabularies(self) -> None:
        if not self._has_vocabularies() and self._cached():
            self._use_entry()
        super()._ensure_vocabularies()

    def _cached(self) -> bool:
        """Whether the training split goes through the corpus cache: it is read from files."""
        return _is_file_source(self.sources["train"])

    def references(self, split: str) -> list[str]:
        """The target sentences of ``split`` as text (lowercased if asked), indexed like
        ``batch.index``: the references for BLEU."""
        return [ex.tgt_text for ex in self.split(split)]

    def _read(self, source: ParallelSource, split: str) -> list[ParallelExample]:
        if self.subwords is not None and not self._has_vocabularies():
            if split == "train" and not self._cached():  # files: trained when they are prepared
                return self._train_subwords(source)
            self._ensure_vocabularies()  # every split is segmented by the model trained on train
        if isinstance(self.src_tokenizer, SentencePieceTokenizer) and not _is_file_source(source):
            # ready examples and the default task come tokenized by whitespace
            return self._segmented(self._read_tokenized(source, split, None), split)
        return self._read_tokenized(source, split, self.max_length if split == "train" else None)

    def _train_subwords(self, source: ParallelSource) -> list[ParallelExample]:
        """Train the SentencePiece model(s) on the training ``source`` and make them the
        tokenizers and vocabularies; returns the training pairs segmented by them."""
        texts = self._read_tokenized(source, "train", None, tokenizers=("whitespace", "whitespace"))
        train = partial(train_sentencepiece, model_type=self.subwords, **self.subword_options)
        src_lines, tgt_lines = (ex.src_text for ex in texts), (ex.tgt_text for ex in texts)
        if self.joint:  # each pair's source then its target: the order a single read of files gives
            both = (text for ex in texts for text in (ex.src_text, ex.tgt_text))
            self.src_tokenizer = self.tgt_tokenizer = SentencePieceTokenizer(train(both))
        else:
            self.src_tokenizer = SentencePieceTokenizer(train(src_lines))
            self.tgt_tokenizer = SentencePieceTokenizer(train(tgt_lines))
        self.src_vocab = Vocab.from_sentencepiece(self.src_tokenizer)
        self.tgt_vocab = self.src_vocab if self.joint else Vocab.from_sentencepiece(self.tgt_tokenizer)
        return self._segmented(texts, "train")

    def _segmented(self, examples: Sequence[ParallelExample], split: str) -> list[ParallelExample]:
        """``examples`` tokenized anew from their text by the (SentencePiece) tokenizers,
        without training pairs longer than ``max_length`` pieces."""
        src = self.src_tokenizer.tokenize_batch([ex.src_text for ex in examples])
        tgt = self.tgt_tokenizer.tokenize_batch([ex.tgt_text for ex in examples])
        longest = self.max_length if split == "train" and self.max_length is not None else float("inf")
        return [dataclasses.replace(ex, src=s, tgt=t) for ex, s, t in zip(examples, src, tgt)
                if len(s) <= longest and len(t) <= longest]  # fmt: skip

    def _dataset(self, name: str) -> Sequence[tuple]:
        if name != "train" or self.subword_alpha is None:
            return self.encoded(name)
        tokenizers = (self.src_tokenizer, self.tgt_tokenizer)
        if not all(isinstance(t, SentencePieceTokenizer) for t in tokenizers):
            raise ConfigError("subword_alpha (subword sampling) needs SentencePiece tokenizers: set subwords, or "
                              "pass a subword model's tokenizers")  # fmt: skip
        sampling = [SentencePieceTokenizer(t.model_proto, alpha=self.subword_alpha, nbest=self.subword_nbest)
                    for t in tokenizers]  # fmt: skip
        return SampledPairs(self.split("train"), *sampling, self.src_vocab, self.tgt_vocab)

    def _read_tokenized(self, source: ParallelSource, split: str, max_length: int | None,
                        tokenizers: tuple[Any, Any] | None = None) -> list[ParallelExample]:
        src_tokenizer, tgt_tokenizer = tokenizers or (self.src_tokenizer, self.tgt_tokenizer)
        options = dict(
            src_tokenizer=src_tokenizer, tgt_tokenizer=tgt_tokenizer, lowercase=self.lowercase,
            max_length=max_length, limit=self.limit,
        )  # fmt: skip
        if isinstance(source, str) and source == DEFAULT:
            if self._default_task is None:
                self._default_task = make_default_task(seed=self.seed)
            return self._filter_pairs(self._default_task[split], split)
        if isinstance(source, (str, os.PathLike)):
            return read_tsv(self._path(source), **options)
        if _is_path_pair(source):
            return read_parallel(self._path(source[0]), self._path(source[1]), **options)
        if isinstance(source, Sequence) and all(isinstance(ex, ParallelExample) for ex in source):
            return self._filter_pairs(source, split)
        raise ConfigError(
            f"{split}: expected a TSV path, a (source, target) pair of paths, a list of ParallelExample "
            f"or 'default', got {type(source).__name__}"
        )

    def _filter_pairs(self, examples: Sequence[ParallelExample], split: str) -> list[ParallelExample]:
        def lower(ex: ParallelExample) -> ParallelExample:
            return dataclasses.replace(
                ex, src_text=ex.src_text.lower(), tgt_text=ex.tgt_text.lower(),
                src=[t.lower() for t in ex.src], tgt=[t.lower() for t in ex.tgt],
            )  # fmt: skip

        return self._filter(examples, split, lambda ex: max(len(ex.src), len(ex.tgt)), lower)

    def _has_vocabularies(self) -> bool:
        return self.src_vocab is not None and self.tgt_vocab is not None

    def _build_vocabularies(self, train: list[ParallelExample]) -> None:
        if self.src_vocab is None:
            self.src_vocab = Vocab.build((ex.src for ex in train), self.min_freq, self.max_size)
        if self.tgt_vocab is None:
            self.tgt_vocab = Vocab.build((ex.tgt for ex in train), self.min_freq, self.max_size)

    def _lengths(self, encoded: EncodedPairs) -> Any:
        return encoded.lengths()

    def _collate(self) -> Callable:
        return partial(collate_translation, src_pad=self.src_vocab.pad_index, tgt_pad=self.tgt_vocab.pad_index)


class TaggingDataModule(_SplitsDataModule):
    """Tagged sentences for :class:`~seqlearn.Tagger`, from CoNLL or CoNLL-U files.

    train, valid, test: each a path (CoNLL-U when the name ends in ``.conllu`` or
        ``.conllu.gz``, CoNLL otherwise; ``format`` overrides) or a list of
        :class:`~seqlearn.readers.TaggedSentence`.  Relative paths are taken under
        ``data_dir`` when it is given.
    token_column, tag_column: CoNLL columns; tag_field: CoNLL-U ``"upos"`` or ``"xpos"``.
    scheme, target_scheme: the chunk scheme of the files' tags and, if different, the one
        to train with (e.g. ``scheme="IOB1", target_scheme="BIOUL"`` for CoNLL-2003); the
        conversion repairs malformed chunks as :func:`~seqlearn.tag_schemes.convert_tags`
        documents.  :attr:`tag_scheme` is the scheme the batches use.
    repair_tags: with ``scheme`` and no conversion, a sentence whose tags break the scheme
        (``I-PER`` after ``O`` in strict BIO) raises :class:`DataError` naming the file and the
        line of the offending token; with ``repair_tags=True`` it is repaired instead (as
        ``convert_tags(tags, scheme, scheme)`` does: a stray ``I-`` opens a chunk) and one
        warning counts the repaired sentences.
    lowercase: lowercases words for the word vocabulary only; characters keep their case.
    min_freq, max_size: of the word vocabulary (the tag vocabulary keeps every training tag,
        with ``<pad>`` only, and the character vocabulary every training character).
        A tag absent from training raises :class:`DataError` naming the file and line.
    char_features: also batch the characters of each word.
    max_tokens, max_sentences, shuffle, seed, limit, max_length: as for translation.

    Batches are :class:`~seqlearn.batching.TaggingBatch`.
    """

    def __init__(
        self,
        train: TaggedSource,
        valid: TaggedSource = None,
        test: TaggedSource = None,
        *,
        format: str | None = None,
        token_column: int = 0,
        tag_column: int = -1,
        tag_field: str = "upos",
        scheme: str | None = None,
        target_scheme: str | None = None,
        repair_tags: bool = False,
        lowercase: bool = False,
        max_length: int | None = None,
        limit: int | None = None,
        min_freq: int = 1,
        max_size: int | None = None,
        char_features: bool = True,
        max_tokens: int | None = 2048,
        max_sentences: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        word_vocab: Vocab | None = None,
        tag_vocab: Vocab | None = None,
        char_vocab: Vocab | None = None,
        data_dir: str | os.PathLike | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(
            {"train": train, "valid": valid, "test": test},
            lowercase=lowercase, max_length=max_length, limit=limit, min_freq=min_freq, max_size=max_size,
            max_tokens=max_tokens, max_sentences=max_sentences, shuffle=shuffle, seed=seed, data_dir=data_dir,
            num_workers=num_workers, pin_memory=pin_memory,
        )  # fmt: skip
        if format not in (None, "conll", "conllu"):
            raise ConfigError(f"format must be 'conll', 'conllu' or None (from the file name), got {format!r}")
        if target_scheme is not None and scheme is None:
            raise ConfigError("target_scheme needs scheme, the scheme the data is written in")
        self.format = format
        self.token_column = token_column
        self.tag_column = tag_column
        self.tag_field = tag_field
        self.scheme = None if scheme is None else canonical_scheme(scheme)
        self.target_scheme = None if target_scheme is None else canonical_scheme(target_scheme)
        self.repair_tags = repair_tags
        self.char_features = char_features
        self.word_vocab = word_vocab
        self.tag_vocab = tag_vocab
        self.char_vocab = char_vocab

    @property
    def tag_scheme(self) -> str | None:
        """The chunk scheme of the tags in the batches (None: not a chunking task)."""
        return self.target_scheme or self.scheme

    def _read(self, source: TaggedSource, split: str) -> list[TaggedSentence]:
        one_token_per_line = False  # then a token's line is its sentence's line plus its index
        if isinstance(source, (str, os.PathLike)):
            path = self._path(source)
            max_length = self.max_length if split == "train" else None
            # words are lowercased at encoding time, so characters keep their case
            one_token_per_line = (self.format or ("conllu" if path.name.endswith((".conllu", ".conllu.gz")) else "conll")) == "conll"
            if one_token_per_line:
                sentences = read_conll(path, token_column=self.token_column, tag_column=self.tag_column,
                                       max_length=max_length, limit=self.limit)  # fmt: skip
            else:
                sentences = read_conllu(path, tag_field=self.tag_field, max_length=max_length, limit=self.limit)
        elif isinstance(source, Sequence) and all(isinstance(s, TaggedSentence) for s in source):
            sentences = self._filter(source, split, lambda s: len(s.tokens), lambda s: s)
        else:
            raise ConfigError(f"{split}: expected a CoNLL/CoNLL-U path or a list of TaggedSentence, "
                              f"got {type(source).__name__}")  # fmt: skip
        if self.target_scheme is not None and self.target_scheme != self.scheme:
            sentences = [
                dataclasses.replace(s, tags=convert_tags(s.tags, self.scheme, self.target_scheme)) for s in sentences
            ]
        elif self.scheme is not None:
            sentences = self._check_scheme(sentences, self._where(source, split), one_token_per_line)
        return sentences

    def _check_scheme(self, sentences: list[TaggedSentence], where: str, one_token_per_line: bool) -> list[TaggedSentence]:
        checked, repaired = [], 0
        for s in sentences:
            bad = find_violation(s.tags, self.scheme)
            if bad is None:
                checked.append(s)
            elif self.repair_tags:
                checked.append(dataclasses.replace(s, tags=convert_tags(s.tags, self.scheme, self.scheme)))
                repaired += 1
            else:
                what = (f"tag {s.tags[bad]!r} of token {s.tokens[bad]!r} may not follow "
                        f"{s.tags[bad - 1] if bad else 'the sentence start'!r}" if bad < len(s.tags)
                        else f"the sentence may not end with {s.tags[-1]!r}")  # fmt: skip
                line = s.line + min(bad, len(s.tags) - 1) if one_token_per_line else s.line
                raise DataError(f"{what} in the {self.scheme} scheme (pass repair_tags=True to repair such "
                                "sentences, or target_scheme to convert them)", where, line)  # fmt: skip
        if repaired:
            warnings.warn(f"{where}: repaired the tags of {repaired} sentences that broke the {self.scheme} scheme",
                          stacklevel=2)  # fmt: skip
        return checked

    def _words(self, tokens: Sequence[str]) -> list[str]:
        return [t.lower() for t in tokens] if self.lowercase else list(tokens)

    def _has_vocabularies(self) -> bool:
        return self.word_vocab is not None and self.tag_vocab is not None and (
            self.char_vocab is not None or not self.char_features
        )

    def _build_vocabularies(self, train: list[TaggedSentence]) -> None:
        if self.word_vocab is None:
            self.word_vocab = Vocab.build((self._words(s.tokens) for s in train), self.min_freq, self.max_size)
        if self.tag_vocab is None:
            self.tag_vocab = Vocab.build((s.tags for s in train), specials=("<pad>",))
        if self.char_vocab is None and self.char_features:
            self.char_vocab = Vocab.build(t for s in train for t in s.tokens)

    def _encode(self, index: int, s: TaggedSentence, where: str) -> tuple:
        tags = _encode_tags(self.tag_vocab, s, where)
        chars = [self.char_vocab.encode(t) for t in s.tokens] if self.char_features else None
        return index, self.word_vocab.encode(self._words(s.tokens)), tags, chars

    def _lengths(self, encoded: list[tuple]) -> list[int]:
        return [len(words) for _, words, _, _ in encoded]

    def _collate(self) -> Callable:
        return partial(
            collate_tagging,
            word_pad=self.word_vocab.pad_index,
            tag_pad=self.tag_vocab.pad_index,
            char_pad=self.char_vocab.pad_index if self.char_features else 0,
        )
