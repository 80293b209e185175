"""SentencePiece subword vocabularies: train a BPE or unigram model, tokenize with it.

A model trained here has byte fallback (no input is ever ``<unk>``) and seqlearn's
specials at seqlearn's ids -- ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3 -- so the
piece ids of SentencePiece and of :meth:`Vocab.from_sentencepiece <seqlearn.vocab.Vocab.from_sentencepiece>`
are the same::

    proto = train_sentencepiece(open("train.txt", encoding="utf-8"), model_type="bpe", vocab_size=8000)
    tok = SentencePieceTokenizer(proto)
    tok.tokenize("ein Hund läuft")            # ['▁ein', '▁Hund', '▁l', 'äuft']
    tok.detokenize(tok.tokenize(text)) == text # for any text without U+2581 '▁' (see below)

Round trip: models trained here use the ``identity`` normalization and keep whitespace as
it is, so ``detokenize(tokenize(text)) == text`` for every string that does not contain
the meta symbol ``"▁"`` (U+2581, which SentencePiece uses for a space).  A model loaded
from a file keeps the normalization it was trained with (``nmt_nfkc`` by default in
SentencePiece, which folds compatibility characters and collapses spaces).

The registry name ``"sentencepiece:<path/to/x.model>"`` loads an existing model; the
tokenizer's :attr:`~SentencePieceTokenizer.model_proto` (the serialized model) is what a
checkpoint stores, so a model keeps working where the file is gone.
"""
from __future__ import annotations

import io
import math
import os
import random
from itertools import islice
from typing import Any, Iterable, Sequence

from torch.utils.data import Dataset

from . import registry
from .errors import ConfigError, DataError
from .readers import ParallelExample
from .tokenizers import Tokenizer, checked_text
from .vocab import Vocab

__all__ = ["train_sentencepiece", "SentencePieceTokenizer", "SampledPairs", "MODEL_TYPES", "sample_lines",
           "tokenizer_model", "tokenizer_from_model", "is_sentencepiece_name"]

MODEL_TYPES = ("bpe", "unigram")
#: the specials at seqlearn's ids (see seqlearn.vocab.DEFAULT_SPECIALS)
_SPECIALS = {"pad": (0, "<pad>"), "unk": (1, "<unk>"), "bos": (2, "<s>"), "eos": (3, "</s>")}


def sample_lines(lines: Iterable[str], size: int, seed: int = 0) -> list[str]:
    """At most ``size`` of ``lines``, a uniform sample drawn in one pass with ``O(size)``
    memory (reservoir sampling), the same for the same ``seed``; all lines, in order, when
    there are at most ``size``.  Empty (whitespace-only) lines are skipped."""
    rng = random.Random(seed)
    lines = filter(str.strip, lines)
    sample = list(islice(lines, size))
    if len(sample) < size:
        return sample
    # Li's "Algorithm L": jump over the lines that would not enter the sample, drawing a
    # random number per kept line instead of per line (the skipping runs at C speed)
    w = math.exp(math.log(1.0 - rng.random()) / size)
    while True:
        skip = int(math.log(1.0 - rng.random()) / math.log1p(-w)) if w < 1.0 else 0
        line = next(islice(lines, skip, None), None)
        if line is None:
            return sample
        sample[rng.randrange(size)] = line
        w *= math.exp(math.log(1.0 - rng.random()) / size)


def train_sentencepiece(
    lines: Iterable[str],
    *,
    model_type: str = "bpe",
    vocab_size: int = 8000,
    input_sentence_size: int = 2_000_000,
    seed: int = 0,
    num_threads: int | None = None,
    character_coverage: float = 0.9995,
) -> bytes:
    """Train a SentencePiece model on a seeded sample of at most ``input_sentence_size`` of
    ``lines`` (raw text, one sentence each; line ends are stripped) and return the
    serialized model (what :class:`SentencePieceTokenizer` takes).

    Memory is bounded by the sample, not by the corpus: ``lines`` is read once, lazily.
    The model has byte fallback, seqlearn's specials at ids 0-3 (``<pad>``, ``<unk>``,
    ``<s>``, ``</s>``), the ``identity`` normalization and whitespace kept as written (so
    tokenization round-trips exactly).  ``vocab_size`` counts every piece, specials and the
    256 byte pieces included; it is an upper bound, which a small corpus may not reach.
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ConfigError(f"subword model_type must be one of {', '.join(MODEL_TYPES)}; got {model_type!r}")
    if vocab_size < 4 + 256 + 1:
        raise ConfigError(f"vocab_size must leave room for the 4 specials and 256 byte pieces; got {vocab_size}")
    if input_sentence_size < 1:
        raise ConfigError(f"input_sentence_size must be positive; got {input_sentence_size}")
    sample = [line.rstrip("\r\n") for line in sample_lines(lines, input_sentence_size, seed)]
    if not sample:
        raise DataError("cannot train a SentencePiece model: the training text is empty")
    model = io.BytesIO()
    options: dict[str, Any] = {f"{role}_id": i for role, (i, _) in _SPECIALS.items()}
    options.update({f"{role}_piece": piece for role, (_, piece) in _SPECIALS.items()})
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample), model_writer=model, model_type=model_type, vocab_size=vocab_size,
            input_sentence_size=0,  # already sampled
            byte_fallback=True, character_coverage=character_coverage, normalization_rule_name="identity",
            remove_extra_whitespaces=False, split_digits=False, hard_vocab_limit=False,
            num_threads=num_threads or os.cpu_count() or 1, minloglevel=2, **options,
        )  # fmt: skip
    except RuntimeError as exc:  # "Vocabulary size is too high (8000). Please set it to a value <= 1234."
        raise ConfigError(f"SentencePiece could not train a {model_type} model of {vocab_size} pieces on "
                          f"{len(sample)} sentences: {exc}") from None  # fmt: skip
    return model.getvalue()


@registry.tokenizers.register("sentencepiece")
class SentencePieceTokenizer(Tokenizer):
    """Subword pieces of a SentencePiece model: ``model`` is a ``.model`` path or the
    serialized model (``bytes``, as :func:`train_sentencepiece` returns).

    ``registry.tokenizers.build("sentencepiece:/path/to/x.model")`` loads a file.  ``alpha``
    and ``nbest`` configure :meth:`sample` (subword regularization: unigram sampling from
    the ``nbest`` best segmentations, ``-1`` for all, smoothed by ``alpha``; BPE-dropout
    with probability ``alpha`` for BPE); :meth:`tokenize` is always deterministic.

    Pickles (DataLoader workers) as its model bytes.
    """

    def __init__(self, model: str | os.PathLike | bytes | None = None, *, alpha: float | None = None, nbest: int = -1):
        import sentencepiece as spm

        if model is None or model == "":
            raise ConfigError("the SentencePiece tokenizer needs a model: name it 'sentencepiece:<path/to/x.model>' "
                              "or pass the model's bytes")  # fmt: skip
        if alpha is not None and alpha < 0:
            raise ConfigError(f"SentencePiece sampling alpha must be >= 0 (BPE-dropout: in [0, 1]); got {alpha}")
        self.path = None if isinstance(model, (bytes, bytearray)) else os.fspath(model)
        if self.path is not None:
            try:
                with open(self.path, "rb") as f:
                    model = f.read()
            except OSError as exc:
                raise ConfigError(f"cannot read the SentencePiece model {self.path}: {exc.strerror}") from None
        #: the serialized model: what checkpoints store
        self.model_proto: bytes = bytes(model)
        self.alpha = alpha
        self.nbest = nbest
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.load_from_serialized_proto(self.model_proto)
        except RuntimeError as exc:
            raise ConfigError(f"{self.path or 'these bytes'}: not a SentencePiece model ({exc})") from None

    def tokenize(self, text: str) -> list[str]:
        return self.sp.encode(checked_text(text, self), out_type=str)

    def tokenize_batch(self, texts: Iterable[str]) -> list[list[str]]:
        return self.sp.encode([checked_text(t, self) for t in texts], out_type=str)

    def sample(self, text: str) -> list[str]:
        """A sampled segmentation of ``text`` (subword regularization, for training only);
        the deterministic :meth:`tokenize` when ``alpha`` is None."""
        if self.alpha is None:
            return self.tokenize(text)
        return self.sp.encode(checked_text(text, self), out_type=str, enable_sampling=True, alpha=self.alpha,
                              nbest_size=self.nbest)  # fmt: skip

    def detokenize(self, pieces: Sequence[str]) -> str:
        return self.sp.decode_pieces(list(pieces))

    def pieces(self) -> list[str]:
        """Every piece, in id order."""
        return [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    def special_ids(self) -> dict[str, int]:
        """SentencePiece's ids of ``pad``, ``unk``, ``bos``, ``eos`` (-1 for one it lacks)."""
        return {"pad": self.sp.pad_id(), "unk": self.sp.unk_id(), "bos": self.sp.bos_id(), "eos": self.sp.eos_id()}

    def __repr__(self) -> str:
        where = self.path if self.path is not None else f"{self.sp.get_piece_size()} pieces"
        sampling = "" if self.alpha is None else f", alpha={self.alpha}, nbest={self.nbest}"
        return f"SentencePieceTokenizer({where!r}{sampling})"

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "sp"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import sentencepiece as spm

        self.__dict__.update(state)
        self.sp = spm.SentencePieceProcessor()
        self.sp.load_from_serialized_proto(self.model_proto)


def is_sentencepiece_name(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is a registry name of the SentencePiece tokenizer."""
    return isinstance(tokenizer, str) and tokenizer.split(":", 1)[0] == "sentencepiece"


def tokenizer_model(tokenizer: Any, given: bytes | None = None) -> bytes | None:
    """The model bytes a checkpoint carries for ``tokenizer`` (an object or a registry
    name): a SentencePiece tokenizer's :attr:`~SentencePieceTokenizer.model_proto`, the
    ``given`` bytes for a ``sentencepiece`` name (a checkpoint being loaded, its file
    perhaps gone), or the named file's bytes; None for a tokenizer without a model."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        return tokenizer.model_proto
    if not is_sentencepiece_name(tokenizer):
        return None
    if given is not None:
        return bytes(given)
    return registry.tokenizers.build(tokenizer).model_proto


def tokenizer_from_model(proto: bytes) -> SentencePieceTokenizer:
    """The tokenizer of model bytes that :func:`tokenizer_model` gave, stamped with its
    registry provenance (``sentencepiece``) as a checkpoint records it."""
    return registry.tokenizers.build("sentencepiece", bytes(proto))


class SampledPairs(Dataset):
    """Training pairs segmented anew at every access by sampling tokenizers (subword
    regularization): item ``i`` is ``(i, source ids + </s>, <s> + target ids + </s>)`` of
    ``examples[i]``'s text, like the encoded split it stands in for.  The draws come from
    SentencePiece's own random generator, so they differ from epoch to epoch (and are not
    replayed by a resumed run)."""

    def __init__(self, examples: Sequence[ParallelExample], src_tokenizer: SentencePieceTokenizer,
                 tgt_tokenizer: SentencePieceTokenizer, src_vocab: Vocab, tgt_vocab: Vocab):
        self.examples = examples
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[int, list[int], list[int]]:
        ex = self.examples[index]
        return (
            index,
            self.src_vocab.encode(self.src_tokenizer.sample(ex.src_text), add_eos=True),
            self.tgt_vocab.encode(self.tgt_tokenizer.sample(ex.tgt_text), add_bos=True, add_eos=True),
        )
