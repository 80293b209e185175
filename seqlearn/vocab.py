"""Token <-> index vocabularies with fixed special indices, saved as plain JSON.

>>> v = Vocab.build([["a", "b", "a"], ["c", "a"]], min_freq=1)
>>> v.itos[:4]
['<pad>', '<unk>', '<s>', '</s>']
>>> v.encode(["a", "zzz"], add_eos=True)
[4, 1, 3]
>>> v.decode([2, 4, 5, 3])
['a', 'b']
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Iterable, Sequence

from .errors import ConfigError, InputError, VocabError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
DEFAULT_SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """An ordered list of tokens; specials come first, so with the default specials
    ``pad_index == 0``, ``unk_index == 1``, ``bos_index == 2``, ``eos_index == 3``.

    Use ``specials=("<pad>",)`` for a tag vocabulary, which must never map anything
    to ``<unk>``: encoding an unknown tag then raises :class:`VocabError`.
    """

    def __init__(self, tokens: Iterable[str] = (), specials: Sequence[str] = DEFAULT_SPECIALS):
        self.specials = tuple(specials)
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for tok in (*self.specials, *tokens):
            if tok not in self.stoi:
                self.stoi[tok] = len(self.itos)
                self.itos.append(tok)

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = DEFAULT_SPECIALS,
    ) -> "Vocab":
        """Count tokens and keep those seen at least ``min_freq`` times, most frequent
        first (ties in first-seen order, so the result is deterministic), at most
        ``max_size`` of them besides the specials."""
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        return cls.from_counts(counts, min_freq, max_size, specials)

    @classmethod
    def from_counts(
        cls,
        counts: Counter[str],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = DEFAULT_SPECIALS,
    ) -> "Vocab":
        """:meth:`build` from token counts already made (ties keep the Counter's order)."""
        if min_freq < 1:
            raise VocabError(f"min_freq must be >= 1, got {min_freq}")
        kept = [t for t, c in counts.most_common() if c >= min_freq and t not in specials]
        if max_size is not None:
            kept = kept[:max_size]
        return cls(kept, specials)

    @classmethod
    def from_sentencepiece(cls, tokenizer_or_proto: Any) -> "Vocab":
        """The pieces of a SentencePiece model (a
        :class:`~seqlearn.subwords.SentencePieceTokenizer` or the serialized model's bytes),
        in SentencePiece id order, behind seqlearn's specials.

        SentencePiece's own pad/unk/bos/eos pieces become ``<pad>``, ``<unk>``, ``<s>``,
        ``</s>``; for a model trained by :func:`~seqlearn.subwords.train_sentencepiece`,
        which puts them at ids 0-3, every id is SentencePiece's.  A model with another
        layout (SentencePiece's default: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, no pad) keeps
        the order of its other pieces, shifted behind the specials.
        """
        from .subwords import SentencePieceTokenizer

        tok = tokenizer_or_proto
        if isinstance(tok, (bytes, bytearray)):
            tok = SentencePieceTokenizer(bytes(tok))
        if not isinstance(tok, SentencePieceTokenizer):
            raise VocabError(f"from_sentencepiece takes a SentencePieceTokenizer or model bytes, got {type(tok).__name__}")
        special_ids = {i for i in tok.special_ids().values() if i >= 0}
        return cls((p for i, p in enumerate(tok.pieces()) if i not in special_ids), DEFAULT_SPECIALS)

    # indices of the specials ------------------------------------------------------
    def _special(self, tok: str) -> int | None:
        return self.stoi.get(tok) if tok in self.specials else None

    @property
    def pad_index(self) -> int | None:
        return self._special(PAD)

    @property
    def unk_index(self) -> int | None:
        return self._special(UNK)

    @property
    def bos_index(self) -> int | None:
        return self._special(BOS)

    @property
    def eos_index(self) -> int | None:
        return self._special(EOS)

    # mapping --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        idx = self.stoi.get(token, self.unk_index)
        if idx is None:
            raise VocabError(f"token {token!r} is not in the vocabulary, which has no {UNK} entry")
        return idx

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos and self.specials == other.specials

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, specials={list(self.specials)})"

    def encode(self, tokens: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token strings to indices; unknown tokens become ``unk_index``."""
        ids = [self[t] for t in tokens]
        if add_bos:
            ids.insert(0, self._required(BOS))
        if add_eos:
            ids.append(self._required(EOS))
        return ids

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Indices to tokens; stops at the first ``</s>`` and drops pad/bos when
        ``strip_specials`` (``<unk>`` is kept: it is information for the reader)."""
        out = []
        eos, skip = self.eos_index, {self.pad_index, self.bos_index}
        for i in ids:
            i = int(i)
            if strip_specials and i == eos:
                break
            if strip_specials and i in skip:
                continue
            if not 0 <= i < len(self.itos):
                raise VocabError(f"index {i} is out of range for a vocabulary of {len(self.itos)} entries")
            out.append(self.itos[i])
        return out

    def _required(self, tok: str) -> int:
        idx = self._special(tok)
        if idx is None:
            raise VocabError(f"this vocabulary has no {tok} special")
        return idx

    def extend(self, tokens: Iterable[str]) -> list[str]:
        """Append unseen tokens at the end (existing indices never move, so rows of a
        trained embedding stay valid).  Returns the tokens that were added.  A token that
        is not a string raises :class:`~seqlearn.errors.InputError` and adds nothing."""
        tokens = list(tokens)
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str):
                raise InputError(f"vocabulary tokens are strings; token {i} to add is {type(tok).__name__} {repr(tok)[:40]}")
        added = []
        for tok in tokens:
            if tok not in self.stoi:
                self.stoi[tok] = len(self.itos)
                self.itos.append(tok)
                added.append(tok)
        return added

    # persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": "seqlearn.vocab/1", "specials": list(self.specials), "itos": self.itos}

    @classmethod
    def from_dict(cls, data: dict, source: str = "vocabulary") -> "Vocab":
        if not isinstance(data, dict) or data.get("format") != "seqlearn.vocab/1":
            raise VocabError(f"{source}: not a seqlearn vocabulary (missing format 'seqlearn.vocab/1')")
        specials, itos = data.get("specials"), data.get("itos")
        if not (isinstance(itos, list) and all(isinstance(t, str) for t in itos)):
            raise VocabError(f"{source}: 'itos' must be a list of strings")
        if not (isinstance(specials, list) and itos[: len(specials)] == specials):
            raise VocabError(f"{source}: 'specials' must be the first entries of 'itos'")
        if len(set(itos)) != len(itos):
            raise VocabError(f"{source}: 'itos' has duplicate tokens")
        vocab = cls(itos[len(specials):], specials)
        return vocab

    @classmethod
    def coerce(cls, value: "Vocab | dict | Sequence[str]", argument: str, *, tokens: bool = False,
               specials: Sequence[str] = DEFAULT_SPECIALS) -> "Vocab":  # fmt: skip
        """A model's vocabulary argument as a :class:`Vocab`: a Vocab as it is, or its
        :meth:`to_dict` read back (a dict in another format raises :class:`VocabError`);
        with ``tokens``, also a list of token strings (after ``specials``).  Anything else
        raises :class:`~seqlearn.errors.ConfigError` naming ``argument``::

            Vocab.coerce(["pos", "neg"], "label_vocab", tokens=True, specials=())   # Vocab(size=2, specials=[])
        """
        if isinstance(value, Vocab):
            return value
        if isinstance(value, dict):
            side = argument.removesuffix("_vocab")  # "src_vocab, the src vocabulary: not a seqlearn vocabulary"
            return cls.from_dict(value, source=argument if side == argument else f"{argument}, the {side} vocabulary")
        if tokens and isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value):
            return cls(value, specials)
        kinds = "a Vocab, its to_dict()" + (" or a list of token strings" if tokens else "")
        raise ConfigError(f"{argument} must be {kinds}; got {type(value).__name__} {repr(value)[:40]}")

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VocabError(f"{os.fspath(path)}: not a JSON vocabulary ({exc})") from exc
        return cls.from_dict(data, source=os.fspath(path))
