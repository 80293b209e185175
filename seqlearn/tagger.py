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

Logged metrics: ``train_loss`` each step and its epoch mean; ``val_loss`` (over the
sentences, CRF, or tokens, softmax), ``val_acc`` (token accuracy) and, with a scheme,
``val_f1``, ``val_precision``, ``val_recall`` -- seqeval in strict mode, micro-averaged
over entity types -- each validation epoch (``test_*`` likewise).

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
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
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
from .optim import check_optimization, configure_optimization
from .renamed import accepts_old_names
from .tag_results import TaggedText, TextSpan, tagging_metrics
from .tokenizers import get_tokenizer
from .training import BatchResult, TrainingModule, check_nonfinite_policy, evaluating
from .vocab import Vocab

__all__ = ["Tagger", "TaggedText", "TextSpan", "tagging_metrics", "datamodule_arguments"]

log = logging.getLogger(__name__)

HEADS = ("crf", "softmax")


def datamodule_arguments(datamodule: Any) -> dict[str, Any]:
    """The :class:`Tagger` arguments a :class:`~seqlearn.datamodules.TaggingDataModule`
    determines: vocabularies (as dicts), ``scheme`` (the one the batches use),
    ``data_scheme`` (the files') and ``lowercase``.  Sets the data module up for fitting,
    which reads the training split and builds the vocabularies."""
    datamodule.setup("fit")
    return {
        "word_vocab": datamodule.word_vocab.to_dict(),
        "tag_vocab": datamodule.tag_vocab.to_dict(),
        "char_vocab": None if datamodule.char_vocab is None else datamodule.char_vocab.to_dict(),
        "scheme": datamodule.tag_scheme,
        "data_scheme": datamodule.scheme,
        "lowercase": datamodule.lowercase,
    }


class Tagger(SafeCheckpointLoading, TrainingModule):
    """BiLSTM tagger with a CRF or softmax head (see the module docstring).

    Vocabularies: ``word_vocab``, ``tag_vocab`` and ``char_vocab`` as :class:`Vocab` or
    ``Vocab.to_dict()`` (stored as dicts).  ``lowercase``: words are lowercased before the
    word-vocabulary lookup (characters always come from the original word).
    ``tokenizer``: registry name used by :meth:`predict` for string input.
    ``data_scheme``: the chunk scheme the data is written in, when the model trains in
    another ``scheme`` (a data module's ``target_scheme``); :meth:`predict` returns tags in
    it (default: ``scheme``).

    Layers: ``embedding_dim``-wide word embeddings, initialized from the word2vec/GloVe text
    file ``embeddings`` when given (see :func:`seqlearn.embeddings.load_embeddings`; the
    coverage is logged and kept in :attr:`embeddings_coverage`); ``char_features`` one of
    ``"cnn"``, ``"bilstm"`` or None, ``char_dim``-wide character embeddings to
    ``char_out_dim`` features per word; an encoder of ``num_layers`` bidirectional layers
    of the registered ``cell`` (built with ``cell_options``) with ``hidden_size`` units per
    direction (``bidirectional=False``: forward only, a causal tagger whose tag for a token
    depends on that token and those before it, which :meth:`step` tags as a stream comes
    in, see :class:`seqlearn.protocols.StreamingModel`; with the softmax head); ``dropout`` on the encoder's
    input and output (and between its layers); ``word_dropout``: the probability that a
    training word is replaced by ``<unk>``, so the model learns to tag unknown words
    from their characters and context; ``head`` ``"crf"`` or ``"softmax"``;
    ``constrain_training``: the CRF's partition function obeys the scheme as decoding does.

    Optimization: ``optimizer`` (``adam``, ``rmsprop``, ``sgd`` with ``momentum``) at ``lr``
    with ``weight_decay``; ``lr_scheduler`` with ``lr_gamma``, ``lr_step_size``,
    ``lr_patience``, ``lr_min`` (see :mod:`seqlearn.optim`; ``"inverse-time"`` divides the
    learning rate by ``1 + lr_gamma * epoch``, what 0.1.0's ``lr_decay`` did).  Clip
    gradients with the Trainer's ``gradient_clip_val``.

    ``on_nonfinite``: ``"stop"`` (default) raises :class:`~seqlearn.errors.NonFiniteLossError`
    naming the batch when the training loss is NaN or infinite, ``"skip"`` warns and
    trains on without that batch (see :mod:`seqlearn.training`).
    """

    @accepts_old_names
    def __init__(
        self,
        word_vocab: Vocab | dict,
        tag_vocab: Vocab | dict,
        char_vocab: Vocab | dict | None = None,
        *,
        scheme: str | None = None,
        data_scheme: str | None = None,
        lowercase: bool = False,
        tokenizer: str = "whitespace",
        embedding_dim: int = 100,
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
        lr_scheduler: str = "none",
        lr_gamma: float = 0.5,
        lr_step_size: int = 1,
        lr_patience: int = 1,
        lr_min: float = 0.0,
        on_nonfinite: str = "stop",
    ):
        super().__init__()
        # hyperparameters hold plain types only: checkpoints load with weights_only=True
        word_vocab, tag_vocab = Vocab.coerce(word_vocab, "word_vocab").to_dict(), Vocab.coerce(tag_vocab, "tag_vocab").to_dict()
        char_vocab = None if char_vocab is None else Vocab.coerce(char_vocab, "char_vocab").to_dict()
        scheme = None if scheme is None else tag_schemes.canonical_scheme(scheme)
        data_scheme = None if data_scheme is None or scheme is None else tag_schemes.canonical_scheme(data_scheme)
        embeddings = None if embeddings is None else str(embeddings)
        if head not in HEADS:
            raise ConfigError(f"Tagger head must be one of {', '.join(map(repr, HEADS))}, got {head!r}")
        check_optimization("Tagger", optimizer, lr_scheduler, lr_gamma, lr_step_size)
        check_hyperparameters("Tagger", positive={"embedding_dim": embedding_dim, "char_dim": char_dim, "char_out_dim": char_out_dim,
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

        self.word_embedding = nn.Embedding(len(self.word_vocab), embedding_dim, padding_idx=self.word_vocab.pad_index)
        self.char_encoder = None
        if char_features is not None:
            self.char_encoder = build_char_features(
                char_features, len(self.char_vocab), char_dim, char_out_dim, padding_idx=self.char_vocab.pad_index
            )
        input_size = embedding_dim + (char_out_dim if self.char_encoder is not None else 0)
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

    def batch_result(self, batch: TaggingBatch, split: str) -> BatchResult:
        """The loss -- a mean over sentences (CRF) or tokens (softmax) -- and, in evaluation,
        each sentence's gold and predicted tags for :meth:`epoch_metrics`."""
        mask = batch.words.mask
        emissions = self(batch.words, batch.chars)
        gold = self._gold(batch.tags, mask)
        count = torch.tensor(len(batch), device=mask.device) if self.crf is not None else mask.sum()
        result = BatchResult(self.loss(emissions, gold, mask), count)
        if split != "train":
            lengths = batch.words.lengths
            paths = self.best_paths(emissions, mask)
            result.outputs = list(zip(self._tag_strings(gold, lengths), self._tag_strings(paths, lengths)))
        return result

    def epoch_metrics(self, split: str, sums: dict[str, torch.Tensor], outputs: list[Any]) -> dict[str, float]:
        """Token accuracy and, with a scheme, seqeval's strict span scores (see :func:`tagging_metrics`)."""
        if not outputs:
            return {}
        gold, predicted = zip(*outputs)
        return {f"{split}_{k}": v for k, v in tagging_metrics(gold, predicted, self.scheme).items()}

    def predict_step(self, batch: TaggingBatch, batch_idx: int) -> list[list[str]]:
        """Predicted tags of a batch, in batch order (``batch.index`` gives the sentences), in
        the data's scheme (see :meth:`predict`)."""
        mask = batch.words.mask
        paths = self.best_paths(self(batch.words, batch.chars), mask)
        scheme = self.output_scheme()
        return [self._in_scheme(tags, scheme) for tags in self._tag_strings(paths, batch.words.lengths)]

    def configure_optimizers(self) -> Any:
        return configure_optimization(self)

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
        scheme: str | None = None,
    ) -> list[TaggedText]:
        """Tag sentences: each a string (split by the tagger's tokenizer) or a list of token
        strings (used as given).  A bare string is one sentence.  Returns one
        :class:`TaggedText` per sentence, in order, with one tag per token of
        ``TaggedText.tokens``.  Runs in eval mode (the module's mode is restored afterwards).

        Tags are in the chunk scheme of the training data (``data_scheme``: a tagger trained
        on BIO files in BIOUL returns BIO tags), or in ``scheme`` when given (``"BIOUL"``,
        ``"IOB1"``...; see :mod:`seqlearn.tag_schemes`).  The spans are the same whatever
        the scheme.

        Inputs (see :mod:`seqlearn.inputs`): a word the vocabulary does not know is looked
        up as ``<unk>`` (its characters still count) and keeps its own spelling in
        ``tokens``.  An empty or whitespace-only sentence gives an empty result (no tokens,
        no tags), not an error.  A sentence longer than ``max_input_length`` tokens (default
        :data:`~seqlearn.inputs.MAX_INPUT_TOKENS`, 512; None for no limit) is cut to that
        many -- ``tokens`` then holds the kept ones -- with a
        :class:`~seqlearn.errors.TruncationWarning`.  ``None``, numbers, bytes or token lists
        holding non-strings raise :class:`~seqlearn.errors.InputError`."""
        check_hyperparameters("Tagger", positive={"batch_size": batch_size})
        scheme = self.output_scheme(scheme)
        sentence_tokens = token_lists(sentences, self.tokenizer, caller="predict", max_length=max_input_length)
        results = [TaggedText([], [], [], []) for _ in sentence_tokens]
        with evaluating(self):
            for chunk in length_batches(sentence_tokens, batch_size):
                for i, result in zip(chunk, self._predict_batch([sentence_tokens[i] for i in chunk], scheme)):
                    results[i] = result
        return results

    def output_scheme(self, scheme: str | None = None) -> str | None:
        """The scheme :meth:`predict` returns tags in: ``scheme`` when given, else the data's
        (``data_scheme``), else the one the model was trained in."""
        if scheme is None:
            return self.hparams.get("data_scheme") or self.scheme
        if self.scheme is None:
            raise ConfigError(f"this tagger has no chunk scheme (its tags are plain labels), so it cannot tag in {scheme!r}")
        return tag_schemes.canonical_scheme(scheme)

    def _in_scheme(self, tags: list[str], scheme: str | None) -> list[str]:
        """``tags`` (in the model's scheme) re-encoded in ``scheme``; as they are when it is the model's."""
        return tags if scheme == self.scheme else tag_schemes.convert_tags(tags, self.scheme, scheme)

    def _predict_batch(self, token_lists: list[list[str]], scheme: str | None) -> list[TaggedText]:
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
            out.append(TaggedText(tokens, self._in_scheme(tags, scheme), spans, conf[: len(tokens)]))
        return out

    # -- streaming (causal taggers) -----------------------------------------------------------

    def _check_streamable(self) -> None:
        if self.encoder.layers[0].bidirectional or self.crf is not None:
            raise ConfigError("streaming needs a causal tagger, bidirectional=False with head='softmax': a backward "
                              "direction or a CRF reads the tokens after the one being tagged")

    @accepts_old_names
    def init_state(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        """The state before the first token of ``batch_size`` parallel streams, for :meth:`step`
        (the streaming protocol, :class:`seqlearn.protocols.StreamingModel`)."""
        self._check_streamable()
        weight = self.word_embedding.weight
        return self.encoder.init_state(batch_size, weight.device, weight.dtype)

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


def __getattr__(name: str) -> Callable[..., int]:
    if name == "tag_lines":  # where 0.1.0 had it
        warnings.warn("seqlearn.tagger.tag_lines moved to seqlearn.tagger_cli.tag_lines", FutureWarning, stacklevel=2)
        from .tagger_cli import tag_lines

        return tag_lines
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
