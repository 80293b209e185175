"""BiLSTM-CRF sequence tagger (named entities, parts of speech) as a LightningModule.

Architecture (Lample et al. 2016; Ma & Hovy 2016)::

    word embedding ⊕ char features (char-CNN or char-BiLSTM)  ->  dropout
    -> bidirectional RNNEncoder (any registered cell)         ->  dropout
    -> linear emission scores -> CRF (constrained by the tag scheme) or softmax

>>> tagger = Tagger.from_datamodule(dm, head="crf")                 # doctest: +SKIP
>>> pl.Trainer(max_epochs=30, gradient_clip_val=5.0).fit(tagger, dm)  # doctest: +SKIP
>>> tagger.predict(["EU rejects German call to boycott British lamb ."])[0].spans  # doctest: +SKIP
[TextSpan(type='ORG', start=0, end=1, text='EU'), TextSpan(type='MISC', start=2, end=3, text='German'), ...]

Tags: the tag vocabulary's specials (``<pad>``) are never scored; the model scores the
``K`` real tags.  ``scheme`` names the chunk scheme of the tags (``"BIO"``, ``"IOB1"``,
``"BIOUL"``, ``"BIOES"``; see :mod:`seqlearn.tag_schemes`) or is None for plain tags
such as POS.  With a scheme, the CRF never decodes an invalid sequence and span metrics
are logged; token accuracy is always logged.

Logged metrics: ``train_loss`` each step; ``val_loss``, ``val_acc`` (token accuracy)
and, with a scheme, ``val_f1``, ``val_precision``, ``val_recall`` -- seqeval in strict
mode with the data's scheme, micro-averaged over entity types -- each validation epoch.

Loss: CRF negative log-likelihood averaged over the sentences of a batch, or
token-averaged cross-entropy for the softmax head.

Checkpoints hold only plain hyperparameters (vocabularies as ``Vocab.to_dict()``,
component names), so they load with ``torch.load(weights_only=True)``; the provenance of
the cell, char features and tokenizer is saved beside them, so loading where a plugin is
missing names the distribution to install.  Pretrained vectors read at construction live
in the weights; a checkpoint therefore records ``embeddings=None`` and loading it never
reads the vectors file again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence, TextIO

import torch
import torch.nn.functional as F
from seqeval import metrics as seqeval_metrics
from seqeval import scheme as seqeval_scheme
from torch import nn

from . import registry, tag_schemes
from .batching import Padded, TaggingBatch, pad, pad_nested
from .char_features import build_char_features
from .checkpoint_loading import SafeCheckpointLoading
from .crf import CRF
from .embeddings import EmbeddingCoverage, load_embeddings
from .encoder import RNNEncoder
from .errors import ConfigError, check_hyperparameters
from .inputs import MAX_INPUT_TOKENS, length_batches, token_lists
from .optim import OPTIMIZERS, build_optimizer
from .tokenizers import get_tokenizer
from .training import TrainingModule, check_nonfinite_policy, evaluating
from .vocab import Vocab

__all__ = ["Tagger", "TaggedText", "TextSpan", "tagging_metrics", "datamodule_arguments", "tag_lines"]

log = logging.getLogger(__name__)

HEADS = ("crf", "softmax")
# seqlearn scheme name -> seqeval's scheme class for strict-mode span matching
_SEQEVAL_SCHEMES = {
    "BIO": seqeval_scheme.IOB2,
    "IOB1": seqeval_scheme.IOB1,
    "BIOUL": seqeval_scheme.BILOU,
    "BIOES": seqeval_scheme.IOBES,
}


class TextSpan(NamedTuple):
    """An entity of type ``type`` over tokens ``start`` to ``end - 1`` (``end`` exclusive);
    ``text`` is those tokens detokenized."""

    type: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class TaggedText:
    """One tagged sentence: a tag and a confidence (the model's probability of that tag
    at that token: the CRF marginal, or the softmax probability) per token, and the
    spans the tags form (empty for taggers without a chunk scheme)."""

    tokens: list[str]
    tags: list[str]
    spans: list[TextSpan]
    confidence: list[float]

    def to_conll(self, confidence: bool = False) -> str:
        """``token<TAB>tag[<TAB>confidence]`` lines, without a trailing newline."""
        if confidence:
            return "\n".join(f"{w}\t{t}\t{c:.4f}" for w, t, c in zip(self.tokens, self.tags, self.confidence))
        return "\n".join(f"{w}\t{t}" for w, t in zip(self.tokens, self.tags))


def datamodule_arguments(datamodule: Any) -> dict[str, Any]:
    """The :class:`Tagger` arguments a :class:`~seqlearn.datamodules.TaggingDataModule`
    determines: vocabularies (as dicts), ``scheme`` and ``lowercase``.  Sets the data
    module up for fitting, which reads the training split and builds the vocabularies."""
    datamodule.setup("fit")
    return {
        "word_vocab": datamodule.word_vocab.to_dict(),
        "tag_vocab": datamodule.tag_vocab.to_dict(),
        "char_vocab": None if datamodule.char_vocab is None else datamodule.char_vocab.to_dict(),
        "scheme": datamodule.tag_scheme,
        "lowercase": datamodule.lowercase,
    }


def tagging_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str | None) -> dict[str, float]:
    """Token accuracy ``acc``, and with a chunk ``scheme`` the span ``f1``, ``precision``
    and ``recall`` of seqeval in strict mode with that scheme (micro average)."""
    total = sum(len(g) for g in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    out = {"acc": correct / total if total else 0.0}
    if scheme is not None:
        kw = {"mode": "strict", "scheme": _SEQEVAL_SCHEMES[tag_schemes.canonical_scheme(scheme)], "zero_division": 0}
        gold, predicted = [list(g) for g in gold], [list(p) for p in predicted]
        out["f1"] = seqeval_metrics.f1_score(gold, predicted, **kw)
        out["precision"] = seqeval_metrics.precision_score(gold, predicted, **kw)
        out["recall"] = seqeval_metrics.recall_score(gold, predicted, **kw)
    return out


def _as_dict(vocab: Vocab | dict | None) -> dict | None:
    return vocab.to_dict() if isinstance(vocab, Vocab) else vocab


class Tagger(SafeCheckpointLoading, TrainingModule):
    """BiLSTM tagger with a CRF or softmax head (see the module docstring).

    Vocabularies: ``word_vocab``, ``tag_vocab`` and ``char_vocab`` as :class:`Vocab` or
    ``Vocab.to_dict()`` (stored as dicts).  ``lowercase``: words are lowercased before the
    word-vocabulary lookup (characters always come from the original word).
    ``tokenizer``: registry name used by :meth:`predict` for string input.

    Layers: ``word_dim``-wide word embeddings, initialized from the word2vec/GloVe text
    file ``embeddings`` when given (see :func:`seqlearn.embeddings.load_embeddings`; the
    coverage is logged and kept in :attr:`embeddings_coverage`); ``char_features`` one of
    ``"cnn"``, ``"bilstm"`` or None, ``char_dim``-wide character embeddings to
    ``char_out_dim`` features per word; an encoder of ``num_layers`` bidirectional layers
    of the registered ``cell`` (built with ``cell_options``) with ``hidden_size`` units per
    direction (``bidirectional=False``: forward only, a causal tagger whose tag for a token
    depends on that token and those before it, which :meth:`step` tags as a stream comes
    in; with the softmax head); ``dropout`` on the encoder's
    input and output (and between its layers); ``word_dropout``: the probability that a
    training word is replaced by ``<unk>``, so the model learns to tag unknown words
    from their characters and context; ``head`` ``"crf"`` or ``"softmax"``;
    ``constrain_training``: the CRF's partition function obeys the scheme as decoding does.

    Optimization: ``optimizer`` ``"adam"`` or ``"sgd"`` (with ``momentum``) at ``lr`` with
    ``weight_decay``; ``lr_decay`` > 0 divides the learning rate by ``1 + lr_decay * epoch``.
    Clip gradients with the Trainer's ``gradient_clip_val``.

    ``on_nonfinite``: ``"stop"`` (default) raises :class:`~seqlearn.errors.NonFiniteLossError`
    naming the batch when the training loss is NaN or infinite, ``"skip"`` warns and
    trains on without that batch (see :mod:`seqlearn.training`).
    """

    def __init__(
        self,
        word_vocab: Vocab | dict,
        tag_vocab: Vocab | dict,
        char_vocab: Vocab | dict | None = None,
        *,
        scheme: str | None = None,
        lowercase: bool = False,
        tokenizer: str = "whitespace",
        word_dim: int = 100,
        embeddings: str | None = None,
        embeddings_lowercase_fallback: bool = True,
        char_features: str | None = "cnn",
        char_dim: int = 30,
        char_out_dim: int = 50,
        cell: str = "lstm",
        cell_options: dict[str, Any] | None = None,
        hidden_size: int = 200,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.5,
        word_dropout: float = 0.0,
        head: str = "crf",
        constrain_training: bool = True,
        optimizer: str = "adam",
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lr_decay: float = 0.0,
        on_nonfinite: str = "stop",
    ):
        super().__init__()
        word_vocab, tag_vocab, char_vocab = _as_dict(word_vocab), _as_dict(tag_vocab), _as_dict(char_vocab)
        scheme = None if scheme is None else tag_schemes.canonical_scheme(scheme)
        embeddings = None if embeddings is None else str(embeddings)
        _check_choice("head", head, HEADS)
        _check_choice("optimizer", optimizer, OPTIMIZERS)
        check_hyperparameters("Tagger", positive={"word_dim": word_dim, "char_dim": char_dim, "char_out_dim": char_out_dim,
                                                  "hidden_size": hidden_size, "num_layers": num_layers},
                              fraction={"dropout": dropout, "word_dropout": word_dropout})
        check_nonfinite_policy(on_nonfinite)
        if char_features is not None:
            registry.char_features.get(char_features)  # an unknown name fails here, with suggestions
            if char_vocab is None:
                raise ConfigError(f"char_features={char_features!r} needs a char_vocab (or set char_features=None)")
        self.save_hyperparameters()

        self.word_vocab = Vocab.from_dict(word_vocab, source="word_vocab")
        self.tag_vocab = Vocab.from_dict(tag_vocab, source="tag_vocab")
        self.char_vocab = None if char_vocab is None else Vocab.from_dict(char_vocab, source="char_vocab")
        self.tag_names = self.tag_vocab.itos[len(self.tag_vocab.specials):]
        if not self.tag_names:
            raise ConfigError("tag_vocab holds no tags besides its specials")
        for name, vocab in (("word_vocab", self.word_vocab), ("char_vocab", self.char_vocab)):
            if vocab is not None and (vocab.pad_index is None or vocab.unk_index is None):
                raise ConfigError(f"{name} needs <pad> and <unk> specials (padding, and symbols unseen in training)")

        self.word_embedding = nn.Embedding(len(self.word_vocab), word_dim, padding_idx=self.word_vocab.pad_index)
        self.char_encoder = None
        if char_features is not None:
            self.char_encoder = build_char_features(
                char_features, len(self.char_vocab), char_dim, char_out_dim, padding_idx=self.char_vocab.pad_index
            )
        input_size = word_dim + (char_out_dim if self.char_encoder is not None else 0)
        self.dropout = nn.Dropout(dropout)
        self.encoder = RNNEncoder(input_size, hidden_size, cell=cell, num_layers=num_layers,
                                  bidirectional=bidirectional, dropout=dropout, cell_options=cell_options)  # fmt: skip
        self.emission = nn.Linear(self.encoder.output_size, len(self.tag_names))
        self.crf = None
        if head == "crf":
            self.crf = CRF(len(self.tag_names), scheme=scheme, tag_names=self.tag_names, constrain_training=constrain_training)

        self.embeddings_coverage: EmbeddingCoverage | None = None
        if embeddings is not None:
            vectors = load_embeddings(embeddings, self.word_vocab, lowercase_fallback=embeddings_lowercase_fallback)
            vectors.copy_into(self.word_embedding)
            self.embeddings_coverage = vectors.coverage
            log.info("%s", vectors.coverage)

        self._tokenizer: Any = None
        self._val_gold: list[list[str]] = []
        self._val_pred: list[list[str]] = []
        self._val_loss_sums: list[torch.Tensor] = []

    @classmethod
    def from_datamodule(cls, datamodule: Any, **kwargs: Any) -> "Tagger":
        """A tagger for the vocabularies, tag scheme and lowercasing of a
        :class:`~seqlearn.datamodules.TaggingDataModule` (set up for fitting first, which
        builds its vocabularies); ``kwargs`` as for the constructor."""
        return cls(**datamodule_arguments(datamodule), **kwargs)

    # -- the network ----------------------------------------------------------------------

    @property
    def scheme(self) -> str | None:
        return self.hparams.scheme

    def forward(self, words: Padded, chars: Padded | None = None) -> torch.Tensor:
        """Emission scores ``(batch, len, K)`` for word ids ``(batch, len)`` and, when the
        tagger has char features, char ids ``(batch, len, max_word_len)``."""
        ids = words.ids
        if self.training and self.hparams.word_dropout > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.hparams.word_dropout
            ids = ids.masked_fill(drop & words.mask, self.word_vocab.unk_index)
        h, _ = self.encoder(self.dropout(self._features(ids, None if chars is None else chars.ids)), words.lengths)
        return self.emission(self.dropout(h))

    def _features(self, ids: torch.Tensor, chars: torch.Tensor | None) -> torch.Tensor:
        """The encoder's input ``(batch, len, input)`` for word ids ``(batch, len)`` and char ids
        ``(batch, len, max_word_len)``: word embeddings ⊕ char features."""
        x = self.word_embedding(ids)
        if self.char_encoder is not None:
            if chars is None:
                raise ConfigError("this tagger uses char features: the batch must carry chars")
            x = torch.cat([x, self.char_encoder(chars)], -1)
        return x

    def loss(self, emissions: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """CRF NLL (mean over sentences) or token-mean cross-entropy; ``gold (batch, len)``
        holds tag indices ``0..K-1`` (any value at padding)."""
        if self.crf is not None:
            return self.crf(emissions, gold, mask, reduction="mean")
        return F.cross_entropy(emissions[mask], gold[mask])

    def best_paths(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted tag indices ``(batch, len)``, -1 at padding: Viterbi for the CRF head
        (never breaking the scheme), the per-token argmax for the softmax head."""
        if self.crf is not None:
            return self.crf.viterbi(emissions, mask).tags[:, 0]
        return emissions.argmax(-1).masked_fill(~mask, -1)

    def tag_probabilities(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token tag probabilities ``(batch, len, K)``: CRF marginals or softmax."""
        if self.crf is not None:
            return self.crf.marginals(emissions, mask)
        return emissions.softmax(-1) * mask.unsqueeze(-1)

    def _gold(self, tags: Padded, mask: torch.Tensor) -> torch.Tensor:
        """Tag-vocabulary ids to model tag indices (specials dropped), 0 at padding."""
        return (tags.ids - len(self.tag_vocab.specials)).masked_fill(~mask, 0)

    def _tag_strings(self, paths: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        return [[self.tag_names[i] for i in row[:n]] for row, n in zip(paths.tolist(), lengths.tolist())]

    # -- Lightning hooks --------------------------------------------------------------------

    def training_step(self, batch: TaggingBatch, batch_idx: int) -> torch.Tensor:
        mask = batch.words.mask
        with self.memory_advice(batch, batch_idx):
            loss = self.loss(self(batch.words, batch.chars), self._gold(batch.tags, mask), mask)
        # the items the loss averages over: sentences (CRF) or tokens (softmax)
        loss = self.global_mean(loss, torch.tensor(len(batch)) if self.crf is not None else mask.sum())
        if not self.loss_is_finite(loss, batch, batch_idx):
            return self.skipped_batch_loss()
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=self._distributed())
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_gold, self._val_pred, self._val_loss_sums = [], [], []

    def validation_step(self, batch: TaggingBatch, batch_idx: int) -> None:
        mask = batch.words.mask
        with self.memory_advice(batch, batch_idx):
            emissions = self(batch.words, batch.chars)
            gold = self._gold(batch.tags, mask)
            self._val_loss_sums.append(self.loss(emissions, gold, mask).detach() * len(batch))
            paths = self.best_paths(emissions, mask)
        lengths = batch.words.lengths
        self._val_gold.extend(self._tag_strings(gold, lengths))
        self._val_pred.extend(self._tag_strings(paths, lengths))

    def on_validation_epoch_end(self) -> None:
        """``val_loss`` (sentence-weighted mean) and the tagging metrics, over the
        sentences of all processes."""
        loss_sum = torch.stack(self._val_loss_sums).sum() if self._val_loss_sums else torch.zeros((), device=self.device)
        loss_sum, sentences = self.sum_across_processes([loss_sum, torch.tensor(float(len(self._val_gold)), device=self.device)])
        gold, pred = self.gather_across_processes(self._val_gold), self.gather_across_processes(self._val_pred)
        sync = self._distributed()  # the values are global already; this keeps Lightning quiet
        if sentences > 0:
            self.log("val_loss", (loss_sum / sentences).item(), sync_dist=sync)
        scores = tagging_metrics(gold, pred, self.scheme)
        self.log_dict({f"val_{k}": v for k, v in scores.items()}, prog_bar=True, sync_dist=sync)
        self._val_gold, self._val_pred, self._val_loss_sums = [], [], []

    def predict_step(self, batch: TaggingBatch, batch_idx: int) -> list[list[str]]:
        """Predicted tags of a batch, in batch order (``batch.index`` gives the sentences)."""
        mask = batch.words.mask
        return self._tag_strings(self.best_paths(self(batch.words, batch.chars), mask), batch.words.lengths)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = build_optimizer(self, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        if hp.lr_decay <= 0:
            return opt
        decay = hp.lr_decay
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 / (1.0 + decay * epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def registered_components(self) -> dict[str, Any]:
        """The registry-built components whose provenance checkpoints record (see
        :class:`~seqlearn.training.TrainingModule`)."""
        return {"cell": self.encoder.layers[0].cells[0], "char_features": self.char_encoder,
                "tokenizer": self.tokenizer}  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY]
        # The vectors are in the state dict: loading must not read (or need) the file.
        if hparams.get("embeddings") is not None:
            checkpoint["seqlearn_pretrained_embeddings"] = hparams["embeddings"]
            hparams["embeddings"] = None

    # -- inference ----------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = get_tokenizer(self.hparams.tokenizer)
        return self._tokenizer

    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[Padded, Padded | None]:
        """Token lists to word ids ``(batch, len)`` and char ids ``(batch, len, max_word_len)``
        (None without char features), on the tagger's device."""
        lowercase = self.hparams.lowercase
        words = pad([self.word_vocab.encode([t.lower() if lowercase else t for t in s]) for s in sentences],
                    self.word_vocab.pad_index)
        chars = None
        if self.char_encoder is not None:
            chars = pad_nested([[self.char_vocab.encode(list(t)) for t in s] for s in sentences],
                               self.char_vocab.pad_index).to(self.device)
        return words.to(self.device), chars

    def predict(
        self,
        sentences: str | Sequence[str | Sequence[str]],
        batch_size: int = 64,
        *,
        max_input_length: int | None = MAX_INPUT_TOKENS,
    ) -> list[TaggedText]:
        """Tag sentences: each a string (split by the tagger's tokenizer) or a list of token
        strings (used as given).  A bare string is one sentence.  Returns one
        :class:`TaggedText` per sentence, in order, with one tag per token of
        ``TaggedText.tokens``.  Runs in eval mode (the module's mode is restored afterwards).

        Inputs (see :mod:`seqlearn.inputs`): a word the vocabulary does not know is looked
        up as ``<unk>`` (its characters still count) and keeps its own spelling in
        ``tokens``.  An empty or whitespace-only sentence gives an empty result (no tokens,
        no tags), not an error.  A sentence longer than ``max_input_length`` tokens (default
        :data:`~seqlearn.inputs.MAX_INPUT_TOKENS`, 512; None for no limit) is cut to that
        many -- ``tokens`` then holds the kept ones -- with a
        :class:`~seqlearn.errors.TruncationWarning`.  ``None``, numbers, bytes or token lists
        holding non-strings raise :class:`~seqlearn.errors.InputError`."""
        check_hyperparameters("Tagger", positive={"batch_size": batch_size})
        sentence_tokens = token_lists(sentences, self.tokenizer, caller="predict", max_length=max_input_length)
        results = [TaggedText([], [], [], []) for _ in sentence_tokens]
        with evaluating(self):
            for chunk in length_batches(sentence_tokens, batch_size):
                for i, result in zip(chunk, self._predict_batch([sentence_tokens[i] for i in chunk])):
                    results[i] = result
        return results

    def _predict_batch(self, token_lists: list[list[str]]) -> list[TaggedText]:
        words, chars = self.encode(token_lists)
        mask = words.mask
        emissions = self(words, chars)
        paths = self.best_paths(emissions, mask)
        confidence = self.tag_probabilities(emissions, mask).gather(-1, paths.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        out = []
        for tokens, tags, conf in zip(token_lists, self._tag_strings(paths, words.lengths), confidence.tolist()):
            spans = []
            if self.scheme is not None:
                spans = [TextSpan(s.label, s.start, s.end, self.tokenizer.detokenize(tokens[s.start : s.end]))
                         for s in tag_schemes.spans(tags, self.scheme)]
            out.append(TaggedText(tokens, tags, spans, conf[: len(tokens)]))
        return out

    # -- streaming (causal taggers) -----------------------------------------------------------

    def _check_streamable(self) -> None:
        if self.encoder.layers[0].bidirectional or self.crf is not None:
            raise ConfigError("streaming needs a causal tagger, bidirectional=False with head='softmax': a backward "
                              "direction or a CRF reads the tokens after the one being tagged")

    def init_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """The state before the first token of ``batch`` parallel streams, for :meth:`step`."""
        self._check_streamable()
        weight = self.word_embedding.weight
        return self.encoder.init_state(batch, weight.device, weight.dtype)

    @torch.no_grad()
    def step(
        self,
        words: str | Sequence[str] | torch.Tensor,
        state: dict[str, torch.Tensor],
        chars: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Tag the next token of each stream as it comes in (a causal tagger; see :meth:`init_state`).

        ``words``: a token string, a list of one token per stream, or word ids ``(N,)`` with,
        when the tagger has char features, their char ids ``chars`` ``(N, max_word_len)``.
        Returns the tag probabilities -- ``(K,)`` for a single string, ``(N, K)`` otherwise;
        ``self.tag_names[i]`` names tag ``i`` -- and the new state.  Inference: no dropout,
        no gradient; the probabilities are those of :meth:`forward` over the whole stream.
        """
        self._check_streamable()
        if torch.is_tensor(words):
            ids = words.to(self.device).reshape(-1, 1)
            chars = None if chars is None else chars.to(self.device)[:, None]
        else:
            encoded, char_batch = self.encode([[w] for w in ([words] if isinstance(words, str) else words)])
            ids, chars = encoded.ids, None if char_batch is None else char_batch.ids
        out, state = self.encoder.step(self._features(ids, chars)[:, 0], state)
        probs = self.emission(out).softmax(-1)
        return (probs[0] if isinstance(words, str) else probs), state


def tag_lines(tagger: Tagger, lines: Iterable[str], out: TextIO, *, batch_size: int = 64, confidence: bool = False) -> int:
    """Tag one sentence per input line (split by the tagger's tokenizer) and write
    ``token<TAB>tag`` lines (``<TAB>confidence`` added with ``confidence``), a blank line
    after each sentence -- an empty input line gives just the blank line.  Sentences are
    tagged ``batch_size`` at a time and written as soon as they are tagged.  Returns the
    number of sentences.  This is ``seqlearn tag``."""
    count = 0
    pending: list[str] = []

    def flush() -> None:
        for result in tagger.predict(pending, batch_size=batch_size):
            out.write(result.to_conll(confidence) + "\n\n" if result.tokens else "\n")
        out.flush()
        pending.clear()

    for line in lines:
        pending.append(line.rstrip("\r\n"))
        count += 1
        if len(pending) == batch_size:
            flush()
    flush()
    return count


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"Tagger {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
