"""The translation data module: parallel corpora read, encoded (once, into the corpus cache, for
training files) and batched for :class:`~seqlearn.Seq2Seq`.

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
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from .batching import collate_translation
from .corpus_cache import identifiable, open_side
from .default_task import make_default_task
from .errors import ConfigError
from .readers import ParallelExample, is_path_pair, read_parallel, read_tsv
from .splits_data import DEFAULT, SplitsDataModule
from .subwords import MODEL_TYPES, SampledPairs, SentencePieceTokenizer, is_sentencepiece_name, train_sentencepiece
from .tagging_data import TaggedSource, TaggingDataModule
from .token_arrays import EncodedPairs, TokenArray, token_dtype
from .tokenizers import get_tokenizer
from .translation_cache import CachedTrainingSplit
from .vocab import Vocab

# TaggingDataModule, SplitsDataModule and DEFAULT keep their 0.1.0 import path here
__all__ = ["TranslationDataModule", "TaggingDataModule", "SplitsDataModule", "ParallelSource", "TaggedSource", "DEFAULT"]

# A TSV path, a (source file, target file) pair, ready examples, or "default".
ParallelSource = Union[tuple[str, str], str, os.PathLike, Sequence[ParallelExample], None]
def _is_file_source(source: Any) -> bool:
    """Whether ``source`` names files (which the readers tokenize), not examples or "default"."""
    return isinstance(source, os.PathLike) or (isinstance(source, str) and source != DEFAULT) or is_path_pair(source)


class TranslationDataModule(CachedTrainingSplit, SplitsDataModule):
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
        self._warned_uncached = False

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
        """Whether the training split goes through the corpus cache: it is read from files by
        tokenizers the cache key can tell apart.  A tokenizer object with neither
        ``cache_identity()`` nor a telling ``repr`` keeps 0.1.0's in-memory path, with a
        warning, rather than risk a stale cache."""
        if not _is_file_source(self.sources["train"]):
            return False
        tokenizers = [get_tokenizer(t) for t in (self.src_tokenizer, self.tgt_tokenizer)]
        cacheable = identifiable(tokenizers, warn=not self._warned_uncached)
        self._warned_uncached = self._warned_uncached or not cacheable
        return cacheable

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
        if is_path_pair(source):
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
