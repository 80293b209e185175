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

Metrics (torchmetrics), logged per epoch as ``train_*``, ``val_*`` and ``test_*`` beside
``*_loss``:

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
``probs`` equals the batch forward on the prefix.

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
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelExactMatch,
    MultilabelF1Score,
)

from . import registry
from .batching import Padded, pad
from .cells import State
from .checkpoint_loading import SafeCheckpointLoading
from .batching import ClassificationBatch
from .encoder import RNNEncoder
from .errors import ConfigError, check_hyperparameters
from .inputs import MAX_INPUT_TOKENS, length_batches, token_lists
from .jordan import JordanEncoder, JordanState, step_cells
from .optim import OPTIMIZERS, build_optimizer
from .pooling import LastPooling
from .tokenizers import get_tokenizer
from .training import TrainingModule, check_nonfinite_policy, evaluating
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


def _label_vocab(labels: Vocab | dict | Sequence[str]) -> Vocab:
    if isinstance(labels, Vocab):
        return labels
    if isinstance(labels, dict):
        return Vocab.from_dict(labels, source="label_vocab")
    return Vocab(labels, specials=())


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
    ``weight_decay``, ``momentum``; clip gradients with the Trainer's ``gradient_clip_val``.

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
        on_nonfinite: str = "stop",
    ):
        super().__init__()
        check_nonfinite_policy(on_nonfinite)
        words = vocab if isinstance(vocab, Vocab) else Vocab.from_dict(vocab, source="vocab")
        labels = _label_vocab(label_vocab)
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
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
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
        self.train_metrics = self._metrics("train_")
        self.val_metrics = self._metrics("val_")
        self.test_metrics = self._metrics("test_")
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

    def _metrics(self, prefix: str) -> MetricCollection:
        k, threshold = len(self.labels), float(self.hparams.threshold)
        if self.hparams.multi_label:
            metrics = {
                "acc": MultilabelAccuracy(k, threshold, average="micro"),
                "exact_match": MultilabelExactMatch(k, threshold),
                "f1": MultilabelF1Score(k, threshold, average="macro"),
                "micro_f1": MultilabelF1Score(k, threshold, average="micro"),
            }
        else:
            metrics = {"acc": MulticlassAccuracy(k, average="micro"), "f1": MulticlassF1Score(k, average="macro")}
        return MetricCollection(metrics, prefix=prefix)

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

    def _shared_step(self, batch: ClassificationBatch, batch_idx: int, metrics: MetricCollection,
                     split: str) -> torch.Tensor:  # fmt: skip
        with self.memory_advice(batch, batch_idx):
            logits = self(batch.tokens)
            loss = self.loss(logits, batch.labels)
        if split == "train":
            # both losses are means over texts: under DDP, the mean over the global batch
            loss = self.global_mean(loss, torch.tensor(len(batch), device=loss.device))
            if not self.loss_is_finite(loss, batch, batch_idx):
                return self.skipped_batch_loss()
        metrics.update(self.probabilities(logits.detach()), batch.labels.long())
        self.log(f"{split}_loss", loss, prog_bar=True, on_step=split == "train", on_epoch=True, batch_size=len(batch),
                 sync_dist=self._distributed())  # fmt: skip
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split == "val", batch_size=len(batch))
        return loss

    def training_step(self, batch: ClassificationBatch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, batch_idx, self.train_metrics, "train")

    def validation_step(self, batch: ClassificationBatch, batch_idx: int) -> None:
        self._shared_step(batch, batch_idx, self.val_metrics, "val")

    def test_step(self, batch: ClassificationBatch, batch_idx: int) -> None:
        self._shared_step(batch, batch_idx, self.test_metrics, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return build_optimizer(self, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)

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
        """The state before the first token of ``batch_size`` parallel streams."""
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
