"""How :class:`~seqlearn.datamodules.TranslationDataModule` prepares a training split read
from files into the corpus cache (:mod:`seqlearn.corpus_cache`) and maps it back.

Preparation, once per set of files and options: with ``subwords``, train the
SentencePiece model(s) on a seeded sample of the training text (two reads of the files
for a joint model, one per side, with memory bounded by the sample); then tokenize and
encode the split on all cores (:func:`~seqlearn.corpus_encoding.encode_corpus`), building
word vocabularies from its counts when none were given; store the ids, the vocabularies
and the SentencePiece model bytes.  Mapping: the vocabularies and SentencePiece
tokenizers come from the entry, so validation and test text are segmented by the same
model, and a checkpoint carries its bytes.
"""
from __future__ import annotations

import os
import warnings
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from .corpus_cache import CacheWriter, entry_for, file_identity, open_entry, tokenizer_identity, vocab_identity
from .corpus_encoding import encode_corpus
from .readers import aligned_rows, check_limits, is_path_pair, Row, tsv_rows, text_chunks
from .subwords import SentencePieceTokenizer, train_sentencepiece
from .tokenizers import get_tokenizer
from .vocab import Vocab

__all__ = ["CachedTrainingSplit"]

SIDES = ("src", "tgt")


class CachedTrainingSplit:
    """Mixed into TranslationDataModule: the training split's cache entry, used when
    ``self._cached()`` (its files are ``self.sources["train"]``, a TSV path or a pair of
    paths, resolved by ``self._path``)."""

    def prepare_data(self) -> None:
        """Encode a training split read from files into the corpus cache (``cache_dir``),
        unless an entry for these files and options is there already.  Lightning calls
        this before ``setup``, in one process per node while the others wait
        (``prepare_data_per_node``); ``setup`` calls it when nobody did."""
        if self._cached():
            self._train_entry()

    def _train_entry(self) -> tuple[Path, dict[str, Any]]:
        """``(folder, meta)`` of the training split's entry, prepared if missing."""
        if self._entry is None:
            self._entry = entry_for(self.cache_dir, self._cache_parts(), self._prepare_train)
        return self._entry

    def _use_entry(self) -> None:
        """Vocabularies (those not given) and SentencePiece tokenizers from the entry."""
        folder, meta = self._train_entry()
        if meta.get("subwords"):
            src = SentencePieceTokenizer((folder / "src.model").read_bytes())
            self.src_tokenizer = src
            self.tgt_tokenizer = src if self.joint else SentencePieceTokenizer((folder / "tgt.model").read_bytes())
        if self.src_vocab is None:
            self.src_vocab = Vocab.load(folder / "src.vocab.json")
        if self.tgt_vocab is None:
            self.tgt_vocab = self.src_vocab if meta.get("subwords") and self.joint else Vocab.load(folder / "tgt.vocab.json")

    def _train_files(self) -> list[Path]:
        source = self.sources["train"]
        return [self._path(p) for p in (source if is_path_pair(source) else [source])]

    def _train_rows(self) -> tuple[Iterator[Row], str]:
        files = self._train_files()
        rows = aligned_rows(*files) if len(files) == 2 else tsv_rows(files[0])
        return rows, " / ".join(map(os.fspath, files))

    def _cache_parts(self) -> dict[str, Any]:
        """Everything the encoded training split depends on: what the key hashes."""
        from . import __version__

        subwords = None if self.subwords is None else {"model_type": self.subwords, "joint": self.joint,
                                                        **self.subword_options}  # fmt: skip
        return {
            "kind": "translation", "seqlearn": __version__, "files": [file_identity(p) for p in self._train_files()],
            "tsv": not is_path_pair(self.sources["train"]),
            "tokenizers": [tokenizer_identity(get_tokenizer(t)) for t in (self.src_tokenizer, self.tgt_tokenizer)],
            "lowercase": self.lowercase, "max_length": self.max_length, "limit": self.limit,
            "min_freq": self.min_freq, "max_size": self.max_size, "subwords": subwords,
            "vocabularies": [vocab_identity(self.src_vocab), vocab_identity(self.tgt_vocab)],
        }  # fmt: skip

    def _prepare_train(self, root: Path, key: str) -> tuple[Path, dict[str, Any]]:
        check_limits(self.max_length, self.limit)
        tokenizers = [get_tokenizer(self.src_tokenizer), get_tokenizer(self.tgt_tokenizer)]
        vocabs = [self.src_vocab, self.tgt_vocab]
        with CacheWriter(root, key) as out:
            if self.subwords is not None:
                protos = self._train_subwords_on_sample()
                for side, proto in zip(SIDES, protos):
                    out.write_bytes(f"{side}.model", proto)
                tokenizers = [SentencePieceTokenizer(proto) for proto in protos]
                vocabs = [Vocab.from_sentencepiece(tok) for tok in tokenizers]
            rows, where = self._train_rows()
            pairs, vocabs, dtypes = encode_corpus(
                text_chunks(rows, where, self.lowercase, skip_empty=True), tokenizers, out, sides=SIDES,
                vocabs=vocabs, min_freq=self.min_freq, max_size=self.max_size, max_length=self.max_length,
                limit=self.limit,
            )  # fmt: skip
            for side, vocab in zip(SIDES, vocabs):
                out.write_vocab(side, vocab)
            out.commit({"dtypes": dtypes, "pairs": pairs, "source": where, "subwords": self.subwords is not None,
                        "parts": self._cache_parts()})  # fmt: skip
        return open_entry(root, key)

    def _train_subwords_on_sample(self) -> list[bytes]:
        """The SentencePiece model bytes of each side (the same for a joint model), trained
        on the text the readers would tokenize: non-empty pairs, lowercased if asked, the
        first ``limit`` of them."""
        train = partial(train_sentencepiece, model_type=self.subwords, **self.subword_options)
        with warnings.catch_warnings():  # skipped empty pairs: reported once, by the encoding pass
            warnings.simplefilter("ignore", UserWarning)
            if self.joint:  # one read: each pair's source, then its target
                proto = train(self._train_texts(1, 2))
                return [proto, proto]
            return [train(self._train_texts(1)), train(self._train_texts(2))]

    def _train_texts(self, *columns: int) -> Iterator[str]:
        """The text of the training split's pairs, read anew: ``columns`` 1 (source) and/or 2
        (target) of each row."""
        rows, where = self._train_rows()
        chunks = text_chunks(rows, where, self.lowercase, skip_empty=True)
        left = self.limit
        with closing(chunks):
            for chunk in chunks:
                for row in chunk if left is None else chunk[:left]:
                    yield from (row[column] for column in columns)
                if left is not None:
                    left -= min(left, len(chunk))
                    if not left:
                        return
