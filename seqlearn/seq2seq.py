"""The attention encoder-decoder as a Lightning module: train, fine-tune, translate, score.

::

    model = Seq2Seq(src_vocab, tgt_vocab, cell="gru", attention="bahdanau", decoder="bahdanau")
    pl.Trainer(max_epochs=10, gradient_clip_val=5).fit(model, datamodule)
    model.translate(["ein hund läuft"], beam_size=5)[0][0].tokens   # ['a', 'dog', 'runs']
    model.translate("ein hund läuft")[0][0].text                    # 'a dog runs'

With a SentencePiece tokenizer (``TranslationDataModule(..., subwords="bpe")``) tokens
are subword pieces and ``text`` is the detokenized sentence.

Sizes: ``hidden_size`` is the decoder's; the encoder has ``encoder_hidden_size`` units per
direction, by default ``hidden_size // 2`` when bidirectional (so the encoder outputs, the
attention memory, are ``hidden_size`` wide) and ``hidden_size`` otherwise.

Everything a checkpoint needs to rebuild the model is a plain hyperparameter (vocabularies
as dicts, tokenizer and component names), so ``Seq2Seq.load_from_checkpoint(path)`` restores
vocabularies and tokenizers with the weights, and checkpoints load with
``torch.load(path, weights_only=True)`` -- the only way seqlearn loads them (see
:mod:`seqlearn.checkpoint_loading`).  The provenance of every registry-built component
(name, distribution, version) is saved beside them under ``checkpoint["seqlearn"]``.

This module holds the network and its training; inference (``translate``, ``sample``,
``score``) is in :mod:`seqlearn.translation` and fine-tuning (``from_pretrained``,
``extend_vocab``) in :mod:`seqlearn.finetuning`, both parts of :class:`Seq2Seq`.  Search
drives the model through :class:`seqlearn.protocols.SearchModel`: :meth:`Seq2Seq.start`
and :meth:`Seq2Seq.search_step`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Sequence

import sacrebleu
import torch
from torch import nn

from . import registry, search
from .batching import Padded, TranslationBatch
from .checkpoint_loading import SafeCheckpointLoading
from .encoder import RNNEncoder
from .errors import ConfigError, check_hyperparameters
from .finetuning import FineTuningMethods
from .loss import label_smoothed_nll, linear_label_smoothed_nll
from .optim import check_optimization, configure_optimization
from .search import Hypothesis
from .subwords import SentencePieceTokenizer, tokenizer_from_model, tokenizer_model
from .tokenizers import get_tokenizer
from .training import BatchResult, TrainingModule, check_nonfinite_policy
from .translation import SEARCH_PRECISIONS, TranslationMethods, check_search_defaults, default_max_length
from .vocab import Vocab

__all__ = ["Seq2Seq", "TeacherForcing", "Hypothesis", "label_smoothed_nll", "default_max_length", "SEARCH_PRECISIONS",
           "tokenizer_hparams"]

FREEZABLE = ("encoder", "decoder", "embeddings", "src_embedding", "tgt_embedding")
#: when ``<pad>`` and ``<s>`` are kept from being predicted (``mask_specials``)
MASK_SPECIALS = ("before_softmax", "after_softmax", "none")


@dataclass(frozen=True)
class TeacherForcing:
    """The probability of feeding the gold previous token, as a function of the training step.

    Decided per token: each position of each sentence feeds the gold token with this
    probability and the model's own greedy prediction otherwise.  ``schedule``:

    * ``"none"``: ``ratio`` at every step (1.0 = classic teacher forcing);
    * ``"linear"``: ``max(minimum, k - c * step)`` (``k`` defaults to 1);
    * ``"exponential"``: ``max(minimum, k ** step)`` with ``k < 1`` (default 0.9999);
    * ``"inverse_sigmoid"``: ``max(minimum, k / (k + exp(step / k)))`` with ``k >= 1``
      (default 1000).

    The three decays are those of Bengio et al. (2015), "Scheduled Sampling for Sequence
    Prediction with Recurrent Neural Networks", whose epsilon_i is this probability.
    """

    schedule: str = "none"
    ratio: float = 1.0
    k: float | None = None
    c: float = 1e-4
    minimum: float = 0.0

    SCHEDULES = ("none", "linear", "exponential", "inverse_sigmoid")
    DEFAULT_K = {"linear": 1.0, "exponential": 0.9999, "inverse_sigmoid": 1000.0}

    def __post_init__(self) -> None:
        if self.schedule not in self.SCHEDULES:
            raise ConfigError(f"scheduled_sampling must be one of {', '.join(self.SCHEDULES)}; got {self.schedule!r}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"teacher_forcing must be in [0, 1], got {self.ratio}")
        k = self.k if self.k is not None else self.DEFAULT_K.get(self.schedule)
        if self.schedule == "exponential" and not 0.0 < k < 1.0:
            raise ConfigError(f"exponential scheduled sampling needs 0 < k < 1, got {k}")
        if self.schedule == "inverse_sigmoid" and k < 1.0:
            raise ConfigError(f"inverse_sigmoid scheduled sampling needs k >= 1, got {k}")

    def __call__(self, step: int) -> float:
        k = self.k if self.k is not None else self.DEFAULT_K.get(self.schedule)
        if self.schedule == "linear":
            p = k - self.c * step
        elif self.schedule == "exponential":
            p = k**step
        elif self.schedule == "inverse_sigmoid":
            p = k / (k + math.exp(min(step / k, 700.0)))
        else:
            return self.ratio
        return min(1.0, max(self.minimum, p))


def _tokenizer_name(tokenizer: Any, side: str) -> str:
    """The registry name a checkpoint stores for a tokenizer."""
    if isinstance(tokenizer, str):
        return tokenizer
    prov = registry.provenance(tokenizer)
    if prov is None and isinstance(tokenizer, SentencePieceTokenizer):
        return "sentencepiece"  # built from bytes, which the checkpoint carries beside the name
    if prov is None:
        raise ConfigError(
            f"{side}_tokenizer must be a registered tokenizer name (or built by the registry), so that a "
            f"checkpoint can restore it; got {tokenizer!r}"
        )
    return prov.name


def tokenizer_hparams(src_tokenizer: Any, tgt_tokenizer: Any, tokenizer_models: dict[str, Any] | None = None
                      ) -> tuple[str, str, dict[str, bytes] | None]:
    """What a checkpoint stores for the tokenizers (names or objects): their registry
    names, and the model bytes of those that carry a model (SentencePiece) by side, which
    rebuild them where the ``.model`` file is gone (``tokenizer_models``: the bytes a
    checkpoint gave, used for a side still named ``sentencepiece...``)."""
    models = {side: tokenizer_model(tok, (tokenizer_models or {}).get(side))
              for side, tok in (("src", src_tokenizer), ("tgt", tgt_tokenizer))}
    models = {side: proto for side, proto in models.items() if proto is not None}
    return _tokenizer_name(src_tokenizer, "src"), _tokenizer_name(tgt_tokenizer, "tgt"), models or None


class Seq2Seq(TranslationMethods, FineTuningMethods, SafeCheckpointLoading, TrainingModule):
    """Encoder-decoder RNN with attention; components are registry names.

    Architecture: ``cell`` (``rnn``/``lstm``/``gru`` or a plugin), ``attention``
    (``bahdanau``, ``luong-dot``, ``luong-general``, ``luong-concat``), ``decoder``
    (``bahdanau``, ``luong``, ``plain``); ``embedding_dim``; ``hidden_size`` (the decoder's;
    see the module docstring for the encoder's); ``encoder_layers``, ``decoder_layers``;
    ``bidirectional``; ``dropout`` on embeddings, between stacked layers (variational) and
    before the output layer; ``bridge`` (encoder final state -> decoder initial state through
    ``tanh(W s + b)``, or copied); ``tie_embeddings`` (target embeddings = output layer,
    the decoder output then has ``embedding_dim`` units); ``cell_options``,
    ``attention_options`` and ``decoder_options`` (e.g. ``{"input_feeding": False}`` for the
    fused Luong path) are passed to the components.  ``tgt_embedding_dim``: the target
    embeddings' size when it differs from the source's ``embedding_dim``.  ``output_bias``:
    whether the output layer has a bias (JoeyNMT's has none).

    Models converted from other tools (:mod:`seqlearn.convert`) keep those tools' conventions:
    ``src_eos`` (append ``</s>`` to every source; OpenNMT-py does not); ``mask_specials``,
    how ``<pad>`` and ``<s>`` are kept from being predicted: ``"before_softmax"`` (their
    logits are ``-inf``: left out of the softmax, in training too), ``"after_softmax"`` (the
    softmax covers the whole vocabulary, search then forbids them; JoeyNMT) or ``"none"``
    (they can be predicted; OpenNMT-py); ``search_defaults``, the model's own default search
    settings (length penalty, stopping rule, max-length rule...; see
    :data:`seqlearn.translation.SEARCH_SETTINGS`), which :meth:`translate` uses for the
    settings its caller does not pass.

    Training: ``label_smoothing``; ``teacher_forcing`` (probability of feeding the gold token,
    decided per token) or ``scheduled_sampling`` with ``sampling_k``, ``sampling_c``,
    ``sampling_min`` (see :class:`TeacherForcing`); ``optimizer`` (``adam``, ``rmsprop``,
    ``sgd``) with ``lr``, ``weight_decay``, ``momentum``; ``lr_scheduler`` (``none``,
    ``plateau`` on ``val_loss``, ``step``, ``exponential``, ``cosine``, ``inverse-time``; see
    :mod:`seqlearn.optim`) with ``lr_gamma``, ``lr_step_size``, ``lr_patience``,
    ``lr_min``; ``freeze`` (any of ``encoder``,
    ``decoder``, ``embeddings``, ``src_embedding``, ``tgt_embedding``).  Gradient clipping
    is the Trainer's (``gradient_clip_val``).  ``val_bleu``: greedy-decode the validation set
    and log standard sacreBLEU of the detokenized text (``val_bleu``) and BLEU of the
    tokens (``val_bleu_tok``) each epoch (see :meth:`epoch_metrics`).

    Faults: ``on_nonfinite`` ``"stop"`` (default: raise
    :class:`~seqlearn.errors.NonFiniteLossError` naming the batch, weights untouched) or
    ``"skip"`` (warn and train on without that batch); see :mod:`seqlearn.training`, which
    also makes checkpoints resume exactly and DDP train on the global batch.
    """

    def __init__(
        self,
        src_vocab: Vocab | dict[str, Any],
        tgt_vocab: Vocab | dict[str, Any],
        cell: str = "gru",
        attention: str = "bahdanau",
        decoder: str = "bahdanau",
        embedding_dim: int = 256,
        hidden_size: int = 512,
        encoder_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.2,
        decoder_layers: int = 1,
        encoder_hidden_size: int | None = None,
        bridge: bool = True,
        tie_embeddings: bool = False,
        cell_options: dict[str, Any] | None = None,
        attention_options: dict[str, Any] | None = None,
        decoder_options: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        teacher_forcing: float = 1.0,
        scheduled_sampling: str = "none",
        sampling_k: float | None = None,
        sampling_c: float = 1e-4,
        sampling_min: float = 0.0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        lr_scheduler: str = "none",
        lr_gamma: float = 0.5,
        lr_step_size: int = 1,
        lr_patience: int = 1,
        lr_min: float = 0.0,
        freeze: Sequence[str] = (),
        src_tokenizer: str = "whitespace",
        tgt_tokenizer: str = "whitespace",
        val_bleu: bool = True,
        on_nonfinite: str = "stop",
        tokenizer_models: dict[str, Any] | None = None,
        tgt_embedding_dim: int | None = None,
        src_eos: bool = True,
        mask_specials: str = "before_softmax",
        search_defaults: dict[str, Any] | None = None,
        output_bias: bool = True,
    ):
        super().__init__()
        src, tgt = Vocab.coerce(src_vocab, "src_vocab"), Vocab.coerce(tgt_vocab, "tgt_vocab")
        for side, vocab in (("src", src), ("tgt", tgt)):
            if vocab.pad_index is None or vocab.eos_index is None or vocab.unk_index is None:
                raise ConfigError(f"{side}_vocab needs the <pad>, <unk> and </s> specials")
        if tgt.bos_index is None:
            raise ConfigError("tgt_vocab needs the <s> special")
        unknown = set(freeze) - set(FREEZABLE)
        if unknown:
            raise ConfigError(f"cannot freeze {sorted(unknown)}; choose from {', '.join(FREEZABLE)}")
        check_optimization("Seq2Seq", optimizer, lr_scheduler, lr_gamma, lr_step_size)
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        sizes = {"embedding_dim": embedding_dim, "hidden_size": hidden_size, "encoder_layers": encoder_layers,
                 "decoder_layers": decoder_layers}
        if encoder_hidden_size is not None:
            sizes["encoder_hidden_size"] = encoder_hidden_size
        if tgt_embedding_dim is not None:
            sizes["tgt_embedding_dim"] = tgt_embedding_dim
        if mask_specials not in MASK_SPECIALS:
            raise ConfigError(f"Seq2Seq: mask_specials must be one of {', '.join(MASK_SPECIALS)}; got {mask_specials!r}")
        check_search_defaults(search_defaults)
        check_hyperparameters("Seq2Seq", positive=sizes, fraction={"dropout": dropout})
        check_nonfinite_policy(on_nonfinite)
        self.teacher_forcing = TeacherForcing(scheduled_sampling, teacher_forcing, sampling_k, sampling_c, sampling_min)
        self.src_vocab, self.tgt_vocab = src, tgt
        # hyperparameters hold plain types only: checkpoints load with weights_only=True
        src_vocab, tgt_vocab = src.to_dict(), tgt.to_dict()
        src_tokenizer, tgt_tokenizer, tokenizer_models = tokenizer_hparams(src_tokenizer, tgt_tokenizer, tokenizer_models)
        freeze = list(freeze)
        self.save_hyperparameters()

        if encoder_hidden_size is None:
            encoder_hidden_size = hidden_size // 2 if bidirectional else hidden_size
        tgt_dim = tgt_embedding_dim or embedding_dim
        self.src_embedding = nn.Embedding(len(src), embedding_dim, padding_idx=src.pad_index)
        self.tgt_embedding = nn.Embedding(len(tgt), tgt_dim, padding_idx=tgt.pad_index)
        self.encoder = RNNEncoder(
            embedding_dim, encoder_hidden_size, cell, encoder_layers, bidirectional, dropout, cell_options
        )
        output_size = tgt_dim if tie_embeddings else hidden_size
        self.decoder = registry.decoders.build(
            decoder,
            embedding_dim=tgt_dim,
            hidden_size=hidden_size,
            memory_size=self.encoder.output_size,
            encoder_state_size=self.encoder.output_size,
            output_size=output_size,
            cell=cell,
            num_layers=decoder_layers,
            attention=attention,
            dropout=dropout,
            cell_options=cell_options,
            attention_options=attention_options,
            bridge=bridge,
            **(decoder_options or {}),
        )
        self.generator = nn.Linear(output_size, len(tgt), bias=output_bias)
        # <pad> and <s> are never a next token: masking them keeps search from emitting them
        specials = torch.tensor([tgt.pad_index, tgt.bos_index])
        self.register_buffer("_never_next", specials if mask_specials == "before_softmax" else specials[:0],
                             persistent=False)
        self.register_buffer("_banned_in_search", specials if mask_specials == "after_softmax" else specials[:0],
                             persistent=False)
        self.dropout = nn.Dropout(dropout)
        self._reset_embeddings()
        if tie_embeddings:
            self.generator.weight = self.tgt_embedding.weight
        self._freeze(freeze)

    def _reset_embeddings(self) -> None:
        # N(0, 1/d): a tied output layer then starts with logits of unit scale
        for emb in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(emb.weight, std=emb.embedding_dim**-0.5)
            with torch.no_grad():
                emb.weight[emb.padding_idx].zero_()

    def _freeze(self, parts: Iterable[str]) -> None:
        modules = {
            "encoder": [self.encoder],
            "decoder": [self.decoder],
            "embeddings": [self.src_embedding, self.tgt_embedding],
            "src_embedding": [self.src_embedding],
            "tgt_embedding": [self.tgt_embedding],
        }
        for part in parts:
            for module in modules[part]:
                module.requires_grad_(False)

    # tokenizers and provenance ----------------------------------------------------------
    @cached_property
    def src_tokenizer(self) -> Any:
        return self._tokenizer("src")

    @cached_property
    def tgt_tokenizer(self) -> Any:
        return self._tokenizer("tgt")

    def _tokenizer(self, side: str) -> Any:
        """The ``side`` tokenizer: from the model bytes the hyperparameters carry, else by name."""
        proto = (self.hparams.get("tokenizer_models") or {}).get(side)
        name = self.hparams[f"{side}_tokenizer"]
        return get_tokenizer(name) if proto is None else tokenizer_from_model(proto)

    def on_fit_start(self) -> None:
        """Warn when the data module cuts SentencePiece pieces the model's own tokenizers do
        not know: validation BLEU and ``translate`` of raw text would then read and write
        text with other tokenizers than the ones the model was trained on."""
        datamodule = getattr(self.trainer, "datamodule", None)
        for side in ("src", "tgt"):
            theirs = tokenizer_model(getattr(datamodule, f"{side}_tokenizer", None))
            if theirs is not None and theirs != tokenizer_model(getattr(self, f"{side}_tokenizer")):
                warnings.warn(
                    f"the data module splits {side} text with a SentencePiece model, this Seq2Seq with "
                    f"{self.hparams[f'{side}_tokenizer']!r}: pass src_tokenizer=data.src_tokenizer, "
                    f"tgt_tokenizer=data.tgt_tokenizer to Seq2Seq, or val_bleu and translate() of text are wrong",
                    stacklevel=2,
                )

    def registered_components(self) -> dict[str, Any]:
        """The registry-built components whose provenance checkpoints record (see
        :class:`~seqlearn.training.TrainingModule`)."""
        return {
            "cell": self.encoder.layers[0].cells[0],
            "decoder": self.decoder,
            "attention": getattr(self.decoder, "attention", None),
            "src_tokenizer": self.src_tokenizer,
            "tgt_tokenizer": self.tgt_tokenizer,
        }

    # the model ------------------------------------------------------------------------
    def encode(self, src: Padded) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Encoder outputs ``(batch, src_len, memory)``, source mask ``(batch, src_len)`` and
        the final state of each encoder layer."""
        memory, finals = self.encoder(self.dropout(self.src_embedding(src.ids)), src.lengths)
        return memory, src.mask, finals

    def start(self, src: Padded) -> dict[str, torch.Tensor]:
        """Search protocol: the decoder state for ``src`` (every tensor batch-first)."""
        return self.decoder.init_state(*self.encode(src))

    def search_step(
        self, prev_tokens: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Search protocol: log-probabilities ``(N, V)`` (float32) of the token after
        ``prev_tokens`` ``(N,)``, the new state and the attention ``(N, src_len)`` (None for
        ``plain``)."""
        out, state, attn = self.decoder.step(self.dropout(self.tgt_embedding(prev_tokens)), state)
        log_probs = torch.log_softmax(self._logits(out), -1, dtype=torch.float32)
        if self._banned_in_search.numel():  # mask_specials="after_softmax"
            log_probs = log_probs.index_fill(-1, self._banned_in_search, float("-inf"))
        return log_probs, state, attn

    def step(
        self, prev_tokens: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Deprecated: :meth:`search_step` (``step`` is the streaming step of the other models)."""
        warnings.warn("Seq2Seq.step is deprecated, use Seq2Seq.search_step", FutureWarning, stacklevel=2)
        return self.search_step(prev_tokens, state)

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(..., V)`` from decoder outputs ``(..., out)``; ``-inf`` for
        ``<pad>`` and ``<s>`` (unless ``mask_specials`` says otherwise)."""
        return self.generator(self.dropout(out)).index_fill_(-1, self._never_next, float("-inf"))

    def forward(self, src: Padded, tgt_in: torch.Tensor, gold_probability: float = 1.0) -> torch.Tensor:
        """Logits ``(batch, tgt_len, V)`` for the next tokens after ``tgt_in`` ``(batch, tgt_len)``
        (``<s>`` first), feeding the gold token with ``gold_probability`` per token."""
        outputs = self._decoder_outputs(src, tgt_in, gold_probability)
        return outputs if gold_probability < 1.0 else self._logits(outputs)

    def _decoder_outputs(self, src: Padded, tgt_in: torch.Tensor, gold_probability: float) -> torch.Tensor:
        """Decoder outputs ``(batch, tgt_len, out)`` when teacher forcing is total, otherwise
        the logits ``(batch, tgt_len, V)`` of the step loop that feeds predictions back.

        The step loop calls ``tgt_embedding`` once per step on the tokens it feeds and
        ``generator`` once per step, so forward hooks on those two modules show what the
        decoder was fed and what it predicted (the tests check scheduled sampling this way).
        """
        state = self.start(src)
        if gold_probability >= 1.0:
            outputs, _ = self.decoder(self.dropout(self.tgt_embedding(tgt_in)), state)
            return outputs
        logits = []
        prev = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            out, state, _ = self.decoder.step(self.dropout(self.tgt_embedding(prev)), state)
            logits.append(self._logits(out))
            if t + 1 < tgt_in.size(1):
                gold = tgt_in[:, t + 1]
                use_gold = torch.rand(gold.shape, device=gold.device) < gold_probability
                prev = torch.where(use_gold, gold, logits[-1].detach().argmax(-1))
        return torch.stack(logits, 1)

    def gold_probability(self) -> float:
        """The probability of feeding gold tokens now: the schedule at ``global_step`` in
        training, 1 otherwise (validation and inference never sample)."""
        return self.teacher_forcing(self.global_step) if self.training else 1.0

    def batch_source(self, batch: TranslationBatch) -> Padded:
        """The sources of a data module's batch as the model reads them: without their
        ``</s>`` when the model was converted from a tool that appends none (``src_eos``)."""
        src = batch.src
        if self.hparams.src_eos:
            return src
        last = torch.arange(src.ids.size(1), device=src.ids.device) == (src.lengths - 1).to(src.ids.device)[:, None]
        return Padded(src.ids.masked_fill(last, self.src_vocab.pad_index), src.lengths - 1)

    def batch_loss(self, batch: TranslationBatch, gold_probability: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean label-smoothed loss per target token, summed NLL and the number of target
        tokens (``</s>`` included, padding excluded)."""
        tgt_in, gold = batch.tgt.ids[:, :-1], batch.tgt.ids[:, 1:]
        mask = gold != self.tgt_vocab.pad_index
        outputs = self._decoder_outputs(self.batch_source(batch), tgt_in, gold_probability)
        smoothing = self.hparams.label_smoothing
        if gold_probability >= 1.0:  # the output layer only where it counts, fused with the loss
            loss_sum, nll_sum = linear_label_smoothed_nll(
                self.dropout(outputs[mask]), self.generator.weight, self.generator.bias, gold[mask], smoothing,
                self._never_next,
            )
        else:
            loss_sum, nll_sum = label_smoothed_nll(outputs[mask], gold[mask], smoothing)
        n_tokens = mask.sum()
        return loss_sum / n_tokens.clamp(min=1), nll_sum, n_tokens

    # Lightning ----------------------------------------------------------------------------
    def batch_result(self, batch: TranslationBatch, split: str) -> BatchResult:
        """Label-smoothed token loss and NLL (for ``{split}_ppl``); in training the gold
        tokens are fed with the scheduled probability, and in validation with ``val_bleu``
        the greedy translations and their references are the outputs ``val_bleu`` is read from."""
        p = self.gold_probability()
        loss, nll, n = self.batch_loss(batch, p)
        if split == "train" and self.teacher_forcing.schedule != "none":
            self.log("gold_probability", p, on_step=True, on_epoch=False)
        outputs: list[tuple[str, str, str, str]] = []
        if split == "val" and self.hparams.val_bleu:
            hyps = [self._strings(h[0].tokens) for h in self._search(self.batch_source(batch), search.greedy_search)]
            ref_texts, ref_tokens = self._references(batch)
            detok = self.tgt_tokenizer.detokenize
            outputs = [(detok(h), r, " ".join(h), " ".join(rt)) for h, r, rt in zip(hyps, ref_texts, ref_tokens)]
        return BatchResult(loss, n, nll=nll, outputs=outputs)

    def epoch_metrics(self, split: str, sums: dict[str, torch.Tensor], outputs: list[Any]) -> dict[str, float]:
        """``val_bleu``: standard sacreBLEU (13a tokenization, cased) of the detokenized greedy
        translations of the validation set against the raw references; ``val_bleu_tok``: BLEU
        of the output tokens against the reference tokens as the data module split them (no
        further tokenization: the peers' metric for word models; subword pieces for a
        SentencePiece model)."""
        if split != "val" or not outputs:
            return {}
        hyps, refs, hyp_tokens, ref_tokens = (list(column) for column in zip(*outputs))
        return {"val_bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
                "val_bleu_tok": sacrebleu.corpus_bleu(hyp_tokens, [ref_tokens], tokenize="none").score}

    def _references(self, batch: TranslationBatch) -> tuple[list[str], list[list[str]]]:
        """The validation references of ``batch`` as text and as tokens: the data module's
        raw target sentences and their tokens when it has them, else the target ids decoded
        (then a reference's ``<unk>`` would match a hypothesis' ``<unk>`` and BLEU come out
        too high)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        index = batch.index.tolist()
        decoded = [self.tgt_vocab.decode(ids) for ids in batch.tgt.ids.tolist()]
        if hasattr(datamodule, "references"):
            texts = datamodule.references("valid")
            texts = [texts[i] for i in index]
        else:
            texts = [self.tgt_tokenizer.detokenize(t) for t in decoded]
        if hasattr(datamodule, "split"):
            examples = datamodule.split("valid")
            return texts, [examples[i].tgt for i in index]
        return texts, decoded

    def configure_optimizers(self) -> Any:
        return configure_optimization(self)
