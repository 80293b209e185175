"""Many-to-one RNNs: a sequence classifier for single- and multi-label tasks, with streaming.

Architecture::

    embeddings -> dropout -> RNNEncoder (any registered cell; BiRNN or forward)
                          or JordanEncoder (forward; previous output fed back, see seqlearn.jordan)
    -> pooling (registered: last, mean, max, attention; see seqlearn.pooling)
    -> dropout -> linear output layer -> softmax (single-label) or sigmoids (multi-label)

>>> dm = ClassificationDataModule("train.tsv", "valid.tsv")                     # doctest: +SKIP
>>> model = SequenceClassifier.from_datamodule(dm, pooling="attention")         # doctest: +SKIP
>>> pl.Trainer(max_epochs=10, gradient_clip_val=5.0).fit(model, dm)              # doctest: +SKIP
>>> model.predict(["what a lovely film"])[0]                                     # doctest: +SKIP
Classification(tokens=['what', 'a', 'lovely', 'film'], labels=['pos'], probabilities={'pos': 0.97, 'neg': 0.03})

Losses: cross-entropy (single-label), or binary cross-entropy with logits summed over
labels and averaged over texts (multi-label); a multi-label prediction is every label
whose probability is above ``threshold``.

Metrics, logged per epoch as ``train_*``, ``val_*`` and ``test_*`` beside ``*_loss``
(from per-label counts summed over the epoch's batches of all processes, see
:class:`~seqlearn.training.TrainingModule`):

* single-label: ``acc`` (fraction of texts whose class is right) and ``f1`` (macro-F1:
  the mean over classes of per-class F1, counting only classes that occur in the gold
  labels or the predictions);
* multi-label: ``acc`` (fraction of right label decisions, i.e. 1 - Hamming loss),
  ``exact_match`` (fraction of texts whose label set is exactly right), ``f1`` (macro-F1
  over all labels, a label that is neither gold nor predicted counting 0) and
  ``micro_f1`` (F1 of all label decisions pooled).

Streaming (forward encoders with ``last`` pooling)::

    state = model.init_state()
    for token in stream:
        probs, state = model.step(token, state)   # probs of the prefix read so far

The state is the recurrent state only (constant memory whatever the stream's length);
``probs`` equals the batch forward on the prefix (:class:`seqlearn.protocols.StreamingModel`).

Checkpoints hold only plain hyperparameters (vocabularies as dicts, component names), so
``SequenceClassifier.load_from_checkpoint(path)`` restores the vocabularies and loads with
``torch.load(weights_only=True)``; the provenance of the cell, pooling and tokenizer is
saved beside them, so loading where a plugin is missing names the distribution to install.
Training stops or skips on a non-finite loss, resumes exactly and trains on the global
batch under DDP (see :mod:`seqlearn.training`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .batching import Padded, pad
from .cells import State
from .checkpoint_loading import SafeCheckpointLoading
from .batching import ClassificationBatch
from .encoder import RNNEncoder
from .errors import ConfigError, check_hyperparameters
from .inputs import MAX_INPUT_TOKENS, length_batches, token_lists
from .jordan import JordanEncoder, JordanState, step_cells
from .optim import check_optimization, configure_optimization
from .pooling import LastPooling
from .tokenizers import get_tokenizer
from .training import BatchResult, TrainingModule, check_nonfinite_policy, evaluating
from .vocab import Vocab

__all__ = ["SequenceClassifier", "Classification", "StreamState"]

#: the recurrent state of a streaming classifier: each layer's cell state, or a JordanState
StreamState = Union[list[State], JordanState]


@dataclass(frozen=True)
class Classification:
    """The prediction for one text: its ``tokens``, the predicted ``labels`` (single-label:
    the most probable class; multi-label: every label above the threshold, most probable
    first, possibly none) and every label's probability.  A text without tokens has none
    of these: ``Classification([], [], {})``."""

    tokens: list[str]
    labels: list[str]
    probabilities: dict[str, float]

    @property
    def label(self) -> str | None:
        """The first predicted label (None when a multi-label prediction has none)."""
        return self.labels[0] if self.labels else None


class SequenceClassifier(SafeCheckpointLoading, TrainingModule):
    """RNN sequence classifier (see the module docstring).

    Vocabularies: ``vocab`` (words: :class:`Vocab` or its ``to_dict()``, with ``<pad>`` and
    ``<unk>``) and ``label_vocab`` (a Vocab without specials, its dict, or a list of label
    names).  ``multi_label``: sigmoid outputs and BCE loss, labels above ``threshold``
    predicted.  ``tokenizer`` (registry name) and ``lowercase`` are what :meth:`predict`
    and :meth:`step` apply to raw text.

    Layers: ``embedding_dim``-wide embeddings; ``num_layers`` layers of the registered
    ``cell`` (built with ``cell_options``), ``hidden_size`` units per direction,
    ``bidirectional`` or forward; ``pooling`` a registered pooling name (built with
    ``pooling_options``); ``dropout`` on the embeddings, between layers (variational) and
    before the output layer.  ``jordan``: a forward Jordan network instead, feeding the
    previous step's output distribution back into the bottom layer, with Jordan's state
    decay ``jordan_decay`` (see :mod:`seqlearn.jordan`).

    Optimization: ``optimizer`` (``adam``, ``rmsprop``, ``sgd``) with ``lr``,
    ``weight_decay``, ``momentum``; ``lr_scheduler`` with ``lr_gamma``, ``lr_step_size``,
    ``lr_patience``, ``lr_min`` (see :mod:`seqlearn.optim`); clip gradients with the
    Trainer's ``gradient_clip_val``.

    ``on_nonfinite``: ``"stop"`` (default) raises :class:`~seqlearn.errors.NonFiniteLossError`
    naming the batch when the training loss is NaN or infinite, ``"skip"`` warns and
    trains on without that batch (see :mod:`seqlearn.training`).
    """

    def __init__(
        self,
        vocab: Vocab | dict,
        label_vocab: Vocab | dict | Sequence[str],
        *,
        multi_label: bool = False,
        threshold: float = 0.5,
        tokenizer: str = "whitespace",
        lowercase: bool = False,
        embedding_dim: int = 64,
        hidden_size: int = 64,
        cell: str = "gru",
        cell_options: dict[str, Any] | None = None,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "last",
        pooling_options: dict[str, Any] | None = None,
        jordan: bool = False,
        jordan_decay: float = 0.0,
        dropout: float = 0.2,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        lr_scheduler: str = "none",
        lr_gamma: float = 0.5,
        lr_step_size: int = 1,
        lr_patience: int = 1,
        lr_min: float = 0.0,
        on_nonfinite: str = "stop",
    ):
        super().__init__()
        check_nonfinite_policy(on_nonfinite)
        words = Vocab.coerce(vocab, "vocab")
        labels = Vocab.coerce(label_vocab, "label_vocab", tokens=True, specials=())
        if words.pad_index is None or words.unk_index is None:
            raise ConfigError("vocab needs <pad> and <unk> specials (padding, and words unseen in training)")
        if labels.specials:
            raise ConfigError(f"label_vocab must have no specials, got {list(labels.specials)}")
        if len(labels) < (1 if multi_label else 2):
            raise ConfigError(f"a {'multi' if multi_label else 'single'}-label classifier needs at least "
                              f"{1 if multi_label else 2} labels, got {len(labels)}")  # fmt: skip
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        if jordan and bidirectional:
            raise ConfigError("a Jordan network feeds its previous output back, so it runs forward only: "
                              "set bidirectional=False")  # fmt: skip
        check_optimization("SequenceClassifier", optimizer, lr_scheduler, lr_gamma, lr_step_size)
        vocab, label_vocab = words.to_dict(), labels.to_dict()  # plain hyperparameters
        self.save_hyperparameters()
        self.vocab, self.label_vocab = words, labels
        self.labels: list[str] = list(labels.itos)
        num_labels = len(labels)

        self.embedding = nn.Embedding(len(words), embedding_dim, padding_idx=words.pad_index)
        self.encoder: nn.Module
        if jordan:
            self.encoder = JordanEncoder(embedding_dim, hidden_size, num_labels, cell, num_layers, dropout,
                                         jordan_decay, cell_options)  # fmt: skip
        else:
            self.encoder = RNNEncoder(embedding_dim, hidden_size, cell, num_layers, bidirectional, dropout, cell_options)
        self.pooling = registry.poolings.build(
            pooling, self.encoder.output_size, directions=2 if bidirectional else 1, **(pooling_options or {})
        )
        if jordan and self.pooling.output_size != self.encoder.output_size:
            raise ConfigError(f"pooling {pooling!r} changes the state width, but a Jordan network's output layer "
                              "reads the states themselves at every step")  # fmt: skip
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(self.pooling.output_size, num_labels)
        self._tokenizer: Any = None

    @classmethod
    def from_datamodule(cls, datamodule: Any, **kwargs: Any) -> "SequenceClassifier":
        """A classifier for the vocabularies, label mode, tokenizer and lowercasing of a
        :class:`~seqlearn.classification_data.ClassificationDataModule` (set up for fitting
        here, which builds its vocabularies); ``kwargs`` as for the constructor."""
        datamodule.setup("fit")
        tokenizer = datamodule.tokenizer
        if not isinstance(tokenizer, str):
            prov = registry.provenance(tokenizer)
            if prov is None:
                raise ConfigError("the data module's tokenizer was not built by the registry: give the data module "
                                  "a tokenizer name, so that predict() and checkpoints can rebuild it")  # fmt: skip
            tokenizer = prov.name
        args = dict(vocab=datamodule.vocab, label_vocab=datamodule.label_vocab, multi_label=datamodule.multi_label,
                    lowercase=datamodule.lowercase, tokenizer=tokenizer)  # fmt: skip
        return cls(**{**args, **kwargs})

    # -- the network ----------------------------------------------------------------------

    @property
    def multi_label(self) -> bool:
        return self.hparams.multi_label

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Label probabilities ``(..., num_labels)`` from logits: softmax or sigmoids."""
        return torch.sigmoid(logits) if self.multi_label else logits.softmax(-1)

    def _cells(self) -> list[nn.Module]:
        """The forward cell of each encoder layer, bottom first."""
        if self.hparams.jordan:
            return list(self.encoder.cells)
        return [layer.cells[0] for layer in self.encoder.layers]

    def _fed_back(self, h: torch.Tensor) -> torch.Tensor:
        """What a Jordan encoder feeds back: the output units' activation ``(batch, num_labels)``."""
        return self.probabilities(self.output(h))

    def forward(self, tokens: Padded) -> torch.Tensor:
        """Logits ``(batch, num_labels)`` for word ids ``(batch, len)`` (every length >= 1)."""
        x = self.dropout(self.embedding(tokens.ids))
        if self.hparams.jordan:
            states, _ = self.encoder(x, tokens.lengths, self._fed_back)
        else:
            states, _ = self.encoder(x, tokens.lengths)
        return self.output(self.dropout(self.pooling(states, tokens.mask)))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against class indices ``(batch,)``, or BCE with logits against
        0/1 targets ``(batch, num_labels)`` summed over labels and averaged over texts."""
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="sum") / len(labels)
        return F.cross_entropy(logits, labels)

    # -- Lightning hooks --------------------------------------------------------------------

    def batch_result(self, batch: ClassificationBatch, split: str) -> BatchResult:
        """The loss (a mean over texts) and the per-label decision counts of :meth:`epoch_metrics`."""
        logits = self(batch.tokens)
        count = torch.tensor(len(batch), device=logits.device)
        return BatchResult(self.loss(logits, batch.labels), count, sums=self._decision_counts(logits.detach(), batch.labels))

    def _decision_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per label ``(num_labels,)``: true positives ``tp``, false positives ``fp``, false
        negatives ``fn``; and ``exact``, the texts whose labels are all right."""
        k = len(self.labels)
        if self.multi_label:
            predicted, gold = self.probabilities(logits) > self.hparams.threshold, labels.bool()
        else:  # one-hot decisions: one label per text
            predicted, gold = F.one_hot(logits.argmax(-1), k).bool(), F.one_hot(labels.long(), k).bool()
        return {"tp": (predicted & gold).sum(0), "fp": (predicted & ~gold).sum(0), "fn": (~predicted & gold).sum(0),
                "exact": (predicted == gold).all(-1).sum()}  # fmt: skip

    def epoch_metrics(self, split: str, sums: dict[str, torch.Tensor], outputs: list[Any]) -> dict[str, float]:
        """``acc`` and macro ``f1`` (single-label: over the labels that occur in the gold labels
        or the predictions), plus ``exact_match`` and ``micro_f1`` for multi-label (see the
        module docstring), from the decision counts of the epoch."""
        tp, fp, fn = (sums[key].double() for key in ("tp", "fp", "fn"))
        texts = float(sums["count"])
        f1 = (2 * tp / (2 * tp + fp + fn)).nan_to_num(0.0)  # a label neither gold nor predicted: 0
        if not self.multi_label:
            occurs = (tp + fp + fn) > 0
            metrics = {"acc": float(sums["exact"]) / texts, "f1": float(f1[occurs].mean())}
        else:
            micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
            metrics = {"acc": 1.0 - float((fp + fn).sum()) / (texts * len(self.labels)),
                       "exact_match": float(sums["exact"]) / texts, "f1": float(f1.mean()),
                       "micro_f1": float(micro.nan_to_num(0.0))}  # fmt: skip
        return {f"{split}_{name}": value for name, value in metrics.items()}

    def configure_optimizers(self) -> Any:
        return configure_optimization(self)

    def registered_components(self) -> dict[str, Any]:
        """The registry-built components whose provenance checkpoints record (see
        :class:`~seqlearn.training.TrainingModule`)."""
        return {"cell": self._cells()[0], "pooling": self.pooling, "tokenizer": self.tokenizer}

    # -- inference ----------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = get_tokenizer(self.hparams.tokenizer)
        return self._tokenizer

    def predict(
        self,
        texts: str | Sequence[str | Sequence[str]],
        batch_size: int = 64,
        *,
        max_input_length: int | None = MAX_INPUT_TOKENS,
    ) -> list[Classification]:
        """Classify texts: each a string (split by the model's tokenizer, lowercased first if
        the model is) or a token list; a bare string is one text.  Returns one
        :class:`Classification` per text, in order.  Runs in eval mode (the module's mode is
        restored afterwards).

        Inputs (see :mod:`seqlearn.inputs`): a word the vocabulary does not know is read as
        ``<unk>`` and keeps its spelling in ``tokens``.  An empty or whitespace-only text
        gives an empty result, ``Classification([], [], {})`` (``label`` None), not an
        error.  A text longer than ``max_input_length`` tokens (default
        :data:`~seqlearn.inputs.MAX_INPUT_TOKENS`, 512; None for no limit) is classified by
        its first that many -- ``tokens`` then holds the kept ones -- with a
        :class:`~seqlearn.errors.TruncationWarning`.  ``None``, numbers, bytes or token lists
        holding non-strings raise :class:`~seqlearn.errors.InputError`."""
        check_hyperparameters("SequenceClassifier", positive={"batch_size": batch_size})
        text_tokens = token_lists(texts, self.tokenizer, caller="predict", max_length=max_input_length,
                                  lowercase=self.hparams.lowercase)  # fmt: skip
        results = [Classification([], [], {}) for _ in text_tokens]
        with evaluating(self):
            for chunk in length_batches(text_tokens, batch_size):
                ids = pad([self.vocab.encode(text_tokens[i]) for i in chunk], self.vocab.pad_index).to(self.device)
                for i, probs in zip(chunk, self.probabilities(self(ids)).float().cpu()):
                    results[i] = self._classification(text_tokens[i], probs)
        return results

    def _classification(self, tokens: list[str], probs: torch.Tensor) -> Classification:
        ranked = probs.argsort(descending=True).tolist()
        if self.multi_label:
            chosen = [self.labels[i] for i in ranked if probs[i] > self.hparams.threshold]
        else:
            chosen = [self.labels[ranked[0]]]
        return Classification(tokens, chosen, dict(zip(self.labels, probs.tolist())))

    # -- streaming ---------------------------------------------------------------------------

    def _check_streamable(self) -> None:
        if self.hparams.bidirectional or not isinstance(self.pooling, LastPooling):
            raise ConfigError("streaming needs a forward encoder (bidirectional=False) with 'last' pooling; this "
                              f"classifier has bidirectional={self.hparams.bidirectional}, "
                              f"pooling={self.hparams.pooling!r}")  # fmt: skip

    def init_state(self, batch_size: int = 1) -> StreamState:
        """The state before the first token of ``batch_size`` parallel streams, for :meth:`step`
        (the streaming protocol, :class:`seqlearn.protocols.StreamingModel`)."""
        self._check_streamable()
        device, dtype = self.device, self.output.weight.dtype
        if self.hparams.jordan:
            return self.encoder.init_state(batch_size, device, dtype)
        return [cell.init_state(batch_size, device, dtype) for cell in self._cells()]

    @torch.no_grad()
    def step(self, token: str | int | torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Read one token and return the label probabilities of the prefix read so far and
        the new state (the old one is left untouched).  ``token``: a token string (lowercased
        if the model is), a word id, or word ids ``(batch,)`` for parallel streams; the
        probabilities are ``(num_labels,)`` for a single token, ``(batch, num_labels)`` for ids.
        Inference only: no dropout, no gradients."""
        self._check_streamable()
        if isinstance(token, torch.Tensor):
            ids = token.to(self.device)
        else:
            if isinstance(token, str):
                word = self.vocab[token.lower() if self.hparams.lowercase else token]
            else:
                word = int(token)
            ids = torch.tensor([word], device=self.device)
        x = self.embedding(ids)
        if self.hparams.jordan:
            h, state = self.encoder.step(x, state, self._fed_back)
        else:
            h, state = step_cells(self._cells(), x, state)
        probs = self.probabilities(self.output(h))
        return (probs if isinstance(token, torch.Tensor) else probs[0]), state
