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
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterable, Sequence

import sacrebleu
import torch
from torch import nn

from . import registry, search
from .batching import Padded, TranslationBatch, pad
from .checkpoint_loading import SafeCheckpointLoading, load_checkpoint
from .encoder import RNNEncoder
from .errors import CheckpointError, ConfigError, check_hyperparameters
from .inputs import MAX_INPUT_TOKENS, length_batches, token_lists
from .loss import label_smoothed_nll, linear_label_smoothed_nll
from .optim import OPTIMIZERS, build_optimizer
from .search import Hypothesis
from .subwords import SentencePieceTokenizer, tokenizer_model, tokenizer_from_model
from .tokenizers import get_tokenizer
from .training import TrainingModule, check_nonfinite_policy, evaluating
from .vocab import Vocab

__all__ = ["Seq2Seq", "TeacherForcing", "label_smoothed_nll", "tokenizer_hparams"]

FREEZABLE = ("encoder", "decoder", "embeddings", "src_embedding", "tgt_embedding")
#: ``precision`` of search -> autocast dtype ("32": no autocast)
SEARCH_PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


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


def default_max_length(longest_source: int) -> int:
    """Decoding steps allowed when the caller names none: 100, or twice the longest source
    plus 10 when that is more.  A constant for ordinary sentences keeps a translation the
    same whatever batch it is decoded in."""
    return max(100, 2 * longest_source + 10)


def _as_vocab(vocab: Vocab | dict[str, Any], side: str) -> Vocab:
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, dict):
        return Vocab.from_dict(vocab, source=f"{side} vocabulary")
    raise ConfigError(f"{side}_vocab must be a Vocab or its to_dict(), got {type(vocab).__name__}")


def _tokenizer_name(tokenizer: Any, side: str) -> str:
    """The registry name a checkpoint stores for a tokenizer."""
    if isinstance(tokenizer, str):
        return tokenizer
    if isinstance(tokenizer, SentencePieceTokenizer) and registry.provenance(tokenizer) is None:
        return "sentencepiece"  # built from bytes, which the checkpoint carries beside the name
    prov = registry.provenance(tokenizer)
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


def _remap_rows(fresh: torch.Tensor, old: torch.Tensor, old_itos: Sequence[str], new_stoi: dict[str, int]) -> torch.Tensor:
    """``fresh`` with the rows of tokens known to ``old_itos`` copied from ``old``, by token string."""
    pairs = [(i, new_stoi[t]) for i, t in enumerate(old_itos) if t in new_stoi]
    out = fresh.clone()
    if pairs:
        old_rows, new_rows = zip(*pairs)
        out[list(new_rows)] = old[list(old_rows)].to(out.dtype)
    return out


class Seq2Seq(SafeCheckpointLoading, TrainingModule):
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
    fused Luong path) are passed to the components.

    Training: ``label_smoothing``; ``teacher_forcing`` (probability of feeding the gold token,
    decided per token) or ``scheduled_sampling`` with ``sampling_k``, ``sampling_c``,
    ``sampling_min`` (see :class:`TeacherForcing`); ``optimizer`` (``adam``, ``rmsprop``,
    ``sgd``) with ``lr``, ``weight_decay``, ``momentum``; ``lr_scheduler`` (``none``,
    ``plateau`` on ``val_loss``, ``step``, ``exponential``, ``cosine``) with ``lr_gamma``,
    ``lr_step_size``, ``lr_patience``, ``lr_min``; ``freeze`` (any of ``encoder``,
    ``decoder``, ``embeddings``, ``src_embedding``, ``tgt_embedding``).  Gradient clipping
    is the Trainer's (``gradient_clip_val``).  ``val_bleu``: greedy-decode the validation set
    and log standard sacreBLEU of the detokenized text (``val_bleu``) and BLEU of the
    tokens (``val_bleu_tok``) each epoch (see :meth:`on_validation_epoch_end`).

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
    ):
        super().__init__()
        src, tgt = _as_vocab(src_vocab, "src"), _as_vocab(tgt_vocab, "tgt")
        for side, vocab in (("src", src), ("tgt", tgt)):
            if vocab.pad_index is None or vocab.eos_index is None or vocab.unk_index is None:
                raise ConfigError(f"{side}_vocab needs the <pad>, <unk> and </s> specials")
        if tgt.bos_index is None:
            raise ConfigError("tgt_vocab needs the <s> special")
        unknown = set(freeze) - set(FREEZABLE)
        if unknown:
            raise ConfigError(f"cannot freeze {sorted(unknown)}; choose from {', '.join(FREEZABLE)}")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be adam, rmsprop or sgd; got {optimizer!r}")
        if lr_scheduler not in ("none", "plateau", "step", "exponential", "cosine"):
            raise ConfigError(f"lr_scheduler must be none, plateau, step, exponential or cosine; got {lr_scheduler!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        sizes = {"embedding_dim": embedding_dim, "hidden_size": hidden_size, "encoder_layers": encoder_layers,
                 "decoder_layers": decoder_layers}
        if encoder_hidden_size is not None:
            sizes["encoder_hidden_size"] = encoder_hidden_size
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
        self.src_embedding = nn.Embedding(len(src), embedding_dim, padding_idx=src.pad_index)
        self.tgt_embedding = nn.Embedding(len(tgt), embedding_dim, padding_idx=tgt.pad_index)
        self.encoder = RNNEncoder(
            embedding_dim, encoder_hidden_size, cell, encoder_layers, bidirectional, dropout, cell_options
        )
        output_size = embedding_dim if tie_embeddings else hidden_size
        self.decoder = registry.decoders.build(
            decoder,
            embedding_dim=embedding_dim,
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
        self.generator = nn.Linear(output_size, len(tgt))
        # <pad> and <s> are never a next token: masking them keeps search from emitting them
        self.register_buffer("_never_next", torch.tensor([tgt.pad_index, tgt.bos_index]), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self._reset_embeddings()
        if tie_embeddings:
            self.generator.weight = self.tgt_embedding.weight
        self._freeze(freeze)
        self._epoch_sums: dict[str, list[torch.Tensor]] = {}
        # validation output and references: texts, then tokens joined by spaces
        self._bleu_lists: tuple[list[str], ...] = ([], [], [], [])

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

    def step(
        self, prev_tokens: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Search protocol: log-probabilities ``(N, V)`` of the token after ``prev_tokens``
        ``(N,)``, the new state and the attention ``(N, src_len)`` (None for ``plain``)."""
        out, state, attn = self.decoder.step(self.dropout(self.tgt_embedding(prev_tokens)), state)
        return torch.log_softmax(self._logits(out), -1, dtype=torch.float32), state, attn

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(..., V)`` from decoder outputs ``(..., out)``; ``-inf`` for
        ``<pad>`` and ``<s>``."""
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

    def batch_loss(self, batch: TranslationBatch, gold_probability: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean label-smoothed loss per target token, summed NLL and the number of target
        tokens (``</s>`` included, padding excluded)."""
        tgt_in, gold = batch.tgt.ids[:, :-1], batch.tgt.ids[:, 1:]
        mask = gold != self.tgt_vocab.pad_index
        outputs = self._decoder_outputs(batch.src, tgt_in, gold_probability)
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
    def training_step(self, batch: TranslationBatch, batch_idx: int) -> torch.Tensor:
        p = self.gold_probability()
        with self.memory_advice(batch, batch_idx):
            loss, nll, n = self.batch_loss(batch, p)
        global_loss = self.global_mean(loss, n)
        if not self.loss_is_finite(global_loss, batch, batch_idx):
            return self.skipped_batch_loss()
        self.log("train_loss", global_loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=int(n),
                 sync_dist=self._distributed())
        if self.teacher_forcing.schedule != "none":
            self.log("gold_probability", p, on_step=True, on_epoch=False)
        self._accumulate("train", loss * n, nll, n)
        return global_loss

    def validation_step(self, batch: TranslationBatch, batch_idx: int) -> torch.Tensor:
        with self.memory_advice(batch, batch_idx):
            loss, nll, n = self.batch_loss(batch, 1.0)
        self._accumulate("val", loss * n, nll, n)
        if self.hparams.val_bleu:
            hyps = [self._strings(h[0].tokens) for h in self._search(batch.src, search.greedy_search)]
            ref_texts, ref_tokens = self._references(batch)
            detok = self.tgt_tokenizer.detokenize
            for items, new in zip(self._bleu_lists, (map(detok, hyps), ref_texts, map(" ".join, hyps),
                                                     map(" ".join, ref_tokens))):
                items.extend(new)
        return loss

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

    def _accumulate(self, split: str, loss_sum: torch.Tensor, nll: torch.Tensor, n: torch.Tensor) -> None:
        sums = self._epoch_sums.setdefault(split, [torch.zeros((), device=nll.device)] * 3)
        self._epoch_sums[split] = [sums[0] + loss_sum.detach(), sums[1] + nll.detach(), sums[2] + n]

    def _log_epoch(self, split: str) -> None:
        """``{split}_ppl`` (and ``val_loss``) of the epoch, from sums over all processes."""
        sums = self._epoch_sums.pop(split, None)
        # every process takes part in the sum, also one that saw no batch
        loss_sum, nll_sum, n = self.sum_across_processes(sums or [torch.zeros((), device=self.device)] * 3)
        if n > 0:
            sync = self._distributed()  # the values are global already; this keeps Lightning quiet
            if split == "val":
                self.log("val_loss", (loss_sum / n).item(), prog_bar=True, sync_dist=sync)
            self.log(f"{split}_ppl", torch.exp(nll_sum / n).item(), prog_bar=split == "val", sync_dist=sync)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self._epoch_sums.pop("val", None)
        self._bleu_lists = ([], [], [], [])

    def on_validation_epoch_end(self) -> None:
        """Logs ``val_bleu``, standard sacreBLEU (13a tokenization, cased) of the detokenized
        output against the raw references, and ``val_bleu_tok``, BLEU of the output tokens
        against the reference tokens as the data module split them (no further tokenization:
        the peers' metric for word models; subword pieces for a SentencePiece model)."""
        self._log_epoch("val")
        if self.hparams.val_bleu:
            hyps, refs, hyp_tokens, ref_tokens = (self.gather_across_processes(items) for items in self._bleu_lists)
            if hyps:
                sync = self._distributed()
                self.log("val_bleu", sacrebleu.corpus_bleu(hyps, [refs]).score, prog_bar=True, sync_dist=sync)
                self.log("val_bleu_tok", sacrebleu.corpus_bleu(hyp_tokens, [ref_tokens], tokenize="none").score,
                         sync_dist=sync)
        self._bleu_lists = ([], [], [], [])

    def configure_optimizers(self) -> Any:
        h = self.hparams
        opt = build_optimizer(self, h.optimizer, h.lr, h.weight_decay, h.momentum)
        if h.lr_scheduler == "none":
            return opt
        if h.lr_scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=h.lr_gamma, patience=h.lr_patience, min_lr=h.lr_min
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
        if h.lr_scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=h.lr_step_size, gamma=h.lr_gamma)
        elif h.lr_scheduler == "exponential":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=h.lr_gamma)
        else:
            epochs = self.trainer.max_epochs if self._trainer is not None and self.trainer.max_epochs else -1
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=epochs if epochs > 0 else h.lr_step_size, eta_min=h.lr_min
            )
        return {"optimizer": opt, "lr_scheduler": scheduler}

    # inference ----------------------------------------------------------------------------
    def _strings(self, ids: Iterable[int]) -> list[str]:
        itos = self.tgt_vocab.itos
        return [itos[i] for i in ids]

    def _source_batch(self, token_lists: Sequence[Sequence[str]]) -> Padded:
        ids = [self.src_vocab.encode(tokens, add_eos=True) for tokens in token_lists]
        return pad(ids, self.src_vocab.pad_index).to(self.device)

    def _search(self, src: Padded, decode: Callable[..., list[list[Hypothesis]]], max_length: int | None = None,
                precision: str = "32", **options: Any) -> list[list[Hypothesis]]:
        """``decode`` (a strategy of :mod:`seqlearn.search`) run on a source batch, in eval
        mode without gradients, at ``precision`` (see :meth:`translate`).  Hypotheses hold
        token ids."""
        if precision not in SEARCH_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(SEARCH_PRECISIONS)}; got {precision!r}")
        # step() returns float32 log-probabilities, so scores add up in float32 under autocast;
        # no_grad, not inference_mode, under autocast: only then does autocast cast each weight
        # once per batch instead of at every step (it caches casts of tensors that require grad)
        autocast = precision != "32"
        with evaluating(self), torch.no_grad() if autocast else torch.inference_mode(), torch.autocast(
            self.device.type, dtype=SEARCH_PRECISIONS[precision], enabled=autocast
        ):
            state = self.start(src)
            return decode(
                self.step, state, bos_index=self.tgt_vocab.bos_index, eos_index=self.tgt_vocab.eos_index,
                max_length=max_length or default_max_length(int(src.lengths.max())), **options,
            )

    def _decode_inputs(
        self, sources: list[list[str]], batch_size: int, return_attention: bool,
        run: Callable[[Padded, int], list[list[Hypothesis]]],
    ) -> list[list[Hypothesis]]:
        check_hyperparameters("Seq2Seq", positive={"batch_size": batch_size})
        longest = max((len(t) + 1 for t in sources), default=1)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, None, [], "")] for _ in sources]  # empty in, empty out
        for chunk in length_batches(sources, batch_size):
            src = self._source_batch([sources[i] for i in chunk])
            for i, src_len, hyps in zip(chunk, src.lengths.tolist(), run(src, longest)):
                results[i] = [self._readable(h, sources[i], src_len if return_attention else None) for h in hyps]
        return results

    def _readable(self, hyp: Hypothesis, source: list[str], src_len: int | None) -> Hypothesis:
        """``hyp`` of search (token ids) with token strings, text and ``source``, and its
        attention cut to the ``src_len`` columns of its source (None: no attention)."""
        tokens = self._strings(hyp.tokens)
        attention = None if src_len is None or hyp.attention is None else hyp.attention[:, :src_len].float().cpu()
        return Hypothesis(tokens, hyp.score, attention, source, self.tgt_tokenizer.detokenize(tokens))

    def translate(
        self,
        inputs: str | Sequence[str | Sequence[str]],
        beam_size: int = 1,
        n_best: int = 1,
        max_length: int | None = None,
        length_penalty: str | None = None,
        return_attention: bool = False,
        *,
        alpha: float = 1.0,
        min_length: int = 0,
        block_ngram_repeat: int = 0,
        coverage_penalty: float = 0.0,
        batch_size: int = 64,
        max_input_length: int | None = MAX_INPUT_TOKENS,
        precision: str = "32",
        stopping: str = "exact",
    ) -> list[list[Hypothesis]]:
        """Translate sentences (strings, tokenized with the model's source tokenizer) or token
        lists.  Returns, per input, up to ``n_best`` :class:`~seqlearn.search.Hypothesis`
        objects, best first, their tokens strings and their ``text`` the translation
        detokenized by the target tokenizer; each carries its ``source`` tokens.

        Inputs (see :mod:`seqlearn.inputs`): one string is one sentence; a sentence is a
        string or a list of token strings.  A source token the vocabulary does not know is
        read as ``<unk>`` (``source`` keeps it as given, so attention columns still align
        with it).  An empty or whitespace-only sentence gives one empty hypothesis
        (``tokens == []``, score 0, ``source == []``), not an error.  A sentence longer than
        ``max_input_length`` tokens (default :data:`~seqlearn.inputs.MAX_INPUT_TOKENS`, 512;
        None for no limit) is cut to that many, with a
        :class:`~seqlearn.errors.TruncationWarning`.  ``None``, numbers, bytes or token lists
        holding non-strings raise :class:`~seqlearn.errors.InputError`.

        ``beam_size == 1`` without length or coverage penalty or n-gram blocking is greedy
        search; otherwise beam search (see :func:`seqlearn.search.beam_search` for
        ``length_penalty`` ``"gnmt"``/``"average"`` with ``alpha``, ``stopping`` and the rest).
        ``max_length`` counts decoding steps, ``</s>`` included (default:
        :func:`default_max_length` of the longest input).  ``precision="bf16"`` runs the
        matrix products in bfloat16 (autocast; scores stay float32): several times faster on
        CPUs with AVX512-BF16 or AMX and on recent GPUs, usually with the same translations
        (``"16"``: float16, for GPUs).  With ``return_attention`` each
        hypothesis carries its attention ``(steps, src_len + 1)``: a row per scored step
        (``</s>`` included), a column per source token and the source's ``</s>``.
        """
        options = {"beam_size": beam_size, "n_best": n_best, "length_penalty": length_penalty, "alpha": alpha,
                   "block_ngram_repeat": block_ngram_repeat, "coverage_penalty": coverage_penalty, "stopping": stopping}

        def decode(step: Any, state: dict[str, torch.Tensor], **common: Any) -> list[list[Hypothesis]]:
            return search.most_probable(step, state, src_mask=state["mask"], per_sentence=self.decoder.per_sentence,
                                        **common)

        return self._decode_inputs(
            token_lists(inputs, self.src_tokenizer, caller="translate", max_length=max_input_length),
            batch_size, return_attention,
            lambda src, longest: self._search(
                src, decode, max_length or default_max_length(longest), precision, min_length=min_length, **options
            ),
        )

    def sample(
        self,
        inputs: str | Sequence[str | Sequence[str]],
        num_samples: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_length: int | None = None,
        return_attention: bool = False,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        max_input_length: int | None = MAX_INPUT_TOKENS,
        precision: str = "32",
    ) -> list[list[Hypothesis]]:
        """Sampled translations (see :func:`seqlearn.search.sample`); inputs and ``precision``
        as for :meth:`translate`."""
        options = {"num_samples": num_samples, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                   "generator": generator}
        return self._decode_inputs(
            token_lists(inputs, self.src_tokenizer, caller="sample", max_length=max_input_length),
            batch_size, return_attention,
            lambda src, longest: self._search(
                src, search.sample, max_length or default_max_length(longest), precision, **options
            ),
        )

    def show_attention(self, inputs: str | Sequence[str | Sequence[str]], beam_size: int = 1, n_best: int = 1,
                       **translate_options: Any) -> Any:
        """Translate ``inputs`` and show each hypothesis' attention in a notebook widget
        (:class:`seqlearn.widgets.AttentionView`; needs the ``notebook`` extra)."""
        from .widgets import show_model_attention

        return show_model_attention(self, inputs, beam_size=beam_size, n_best=n_best, **translate_options)

    def show_hidden_states(self, sentence: str | Sequence[str], **view_options: Any) -> Any:
        """Show the encoder's per-token hidden states and gate activations for ``sentence``
        (:class:`seqlearn.widgets.HiddenStateView`)."""
        from .widgets import show_hidden_states

        return show_hidden_states(self, sentence, **view_options)

    def score(
        self, sources: Sequence[str | Sequence[str]], targets: Sequence[str | Sequence[str]], batch_size: int = 64
    ) -> torch.Tensor:
        """Summed log-probability of each target given its source (``</s>`` included),
        teacher-forced in eval mode: ``(len(sources),)``.  Sentences as for :meth:`translate`,
        never truncated."""
        src_lists = token_lists(sources, self.src_tokenizer, caller="score", max_length=None)
        tgt_lists = token_lists(targets, self.tgt_tokenizer, caller="score", max_length=None)
        if len(src_lists) != len(tgt_lists):
            raise ConfigError(f"score: {len(src_lists)} sources but {len(tgt_lists)} targets")
        scores = []
        with evaluating(self):
            for start in range(0, len(src_lists), batch_size):
                src = self._source_batch(src_lists[start : start + batch_size])
                tgt = pad(
                    [self.tgt_vocab.encode(t, add_bos=True, add_eos=True) for t in tgt_lists[start : start + batch_size]],
                    self.tgt_vocab.pad_index,
                ).ids.to(self.device)
                log_probs = torch.log_softmax(self(src, tgt[:, :-1]).float(), -1)
                gold = tgt[:, 1:]
                token_scores = log_probs.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
                scores.append(token_scores.masked_fill(gold == self.tgt_vocab.pad_index, 0.0).sum(1).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)

    # fine-tuning ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | os.PathLike | "Seq2Seq",
        *,
        src_vocab: Vocab | dict[str, Any] | None = None,
        tgt_vocab: Vocab | dict[str, Any] | None = None,
        extend_src: Iterable[str] = (),
        extend_tgt: Iterable[str] = (),
        freeze: Sequence[str] = (),
        map_location: str | torch.device = "cpu",
        **overrides: Any,
    ) -> "Seq2Seq":
        """A model to fine-tune, from a checkpoint file or a model, in one call.

        The new vocabularies are ``src_vocab``/``tgt_vocab`` (default: the checkpoint's),
        extended by the tokens ``extend_src``/``extend_tgt``.  Rows of embeddings and output
        layer whose token (by string) the checkpoint knows are copied bit for bit; the others
        keep the fresh initialization.  ``freeze`` names parts to keep fixed
        (``encoder``, ``decoder``, ``embeddings``, ``src_embedding``, ``tgt_embedding``);
        ``overrides`` replace training hyperparameters (``lr``, ``scheduled_sampling``...).

        A checkpoint file is read safely (see :mod:`seqlearn.checkpoint_loading`); one that
        is not a Seq2Seq checkpoint, or whose weights do not fit its vocabularies, raises
        :class:`~seqlearn.errors.CheckpointError`.  A vocabulary of the wrong kind raises
        :class:`~seqlearn.errors.VocabError` or :class:`~seqlearn.errors.ConfigError`.
        """
        if isinstance(checkpoint, Seq2Seq):
            hparams, weights, where = dict(checkpoint.hparams), checkpoint.state_dict(), "the given model"
        else:
            ckpt = load_checkpoint(checkpoint, map_location, cls)
            hparams, weights, where = dict(ckpt["hyper_parameters"]), ckpt["state_dict"], os.fspath(checkpoint)
        unknown = sorted(set(overrides) - set(inspect.signature(cls.__init__).parameters))
        if unknown:
            raise ConfigError(f"from_pretrained: unknown hyperparameter(s) {', '.join(unknown)}")
        old = {side: Vocab.from_dict(hparams[f"{side}_vocab"], source=f"{where}: {side}_vocab") for side in ("src", "tgt")}
        new = {}
        for side, given, extra in (("src", src_vocab, extend_src), ("tgt", tgt_vocab, extend_tgt)):
            vocab = Vocab.from_dict((old[side] if given is None else _as_vocab(given, side)).to_dict())
            vocab.extend(extra)
            new[side] = vocab
        hparams.update(overrides, src_vocab=new["src"], tgt_vocab=new["tgt"], freeze=list(freeze))
        model = cls(**hparams)
        try:
            model._load_remapped(weights, old)
        except (KeyError, IndexError, RuntimeError) as exc:
            raise CheckpointError(
                f"{where}: its weights do not fit the model its hyperparameters describe ({type(exc).__name__}: {exc})"
            ) from exc
        return model

    def extend_vocab(self, src_tokens: Iterable[str] = (), tgt_tokens: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """Append tokens to the vocabularies in place, growing embeddings and output layer:
        old rows are kept bit for bit, new rows freshly initialized.  Returns the tokens
        added on each side.  Build the optimizer (``Trainer.fit``) afterwards."""
        weights = self.state_dict()
        old = {"src": Vocab.from_dict(self.src_vocab.to_dict()), "tgt": Vocab.from_dict(self.tgt_vocab.to_dict())}
        added = self.src_vocab.extend(src_tokens), self.tgt_vocab.extend(tgt_tokens)
        self.hparams.src_vocab, self.hparams.tgt_vocab = self.src_vocab.to_dict(), self.tgt_vocab.to_dict()
        h = self.hparams
        device = self.generator.weight.device
        self.src_embedding = nn.Embedding(len(self.src_vocab), h.embedding_dim, padding_idx=self.src_vocab.pad_index)
        self.tgt_embedding = nn.Embedding(len(self.tgt_vocab), h.embedding_dim, padding_idx=self.tgt_vocab.pad_index)
        self.generator = nn.Linear(self.generator.in_features, len(self.tgt_vocab))
        self._reset_embeddings()
        if h.tie_embeddings:
            self.generator.weight = self.tgt_embedding.weight
        self.to(device)
        self._load_remapped(weights, old)
        self._freeze(h.freeze)
        return added

    def _load_remapped(self, weights: dict[str, torch.Tensor], old: dict[str, Vocab]) -> None:
        """Load ``weights`` saved with vocabularies ``old``, mapping vocabulary rows by token string."""
        rows = {
            "src_embedding.weight": "src",
            "tgt_embedding.weight": "tgt",
            "generator.weight": "tgt",
            "generator.bias": "tgt",
        }
        fresh = self.state_dict()
        weights = dict(weights)
        for key, side in rows.items():
            new_vocab = self.src_vocab if side == "src" else self.tgt_vocab
            weights[key] = _remap_rows(fresh[key], weights[key], old[side].itos, new_vocab.stoi)
        self.load_state_dict(weights)
