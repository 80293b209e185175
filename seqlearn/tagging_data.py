"""The tagging data module: CoNLL / CoNLL-U files or ready sentences, for :class:`~seqlearn.Tagger`."""
from __future__ import annotations

import dataclasses
import os
import warnings
from functools import partial
from typing import Callable, Sequence, Union

from .batching import collate_tagging
from .errors import ConfigError, DataError, VocabError
from .readers import TaggedSentence, read_conll, read_conllu
from .splits_data import SplitsDataModule
from .tag_schemes import canonical_scheme, convert_tags, find_violation
from .vocab import Vocab

__all__ = ["TaggingDataModule", "TaggedSource"]

# A CoNLL / CoNLL-U path, or ready sentences.
TaggedSource = Union[str, os.PathLike, Sequence[TaggedSentence], None]

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


class TaggingDataModule(SplitsDataModule):
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

    Unlike the other data modules it has no ``cache_dir``: reading and encoding CoNLL-2003's
    training split in memory costs less than one epoch of its batches (README, "Data").
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
