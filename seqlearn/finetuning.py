"""Fine-tuning a :class:`~seqlearn.Seq2Seq`: start from a checkpoint, grow the vocabularies.

:class:`FineTuningMethods` is a part of :class:`~seqlearn.Seq2Seq`::

    model = Seq2Seq.from_pretrained("base.ckpt", extend_tgt=["Zugspitze"], freeze=["encoder"], lr=1e-4)
    model = Seq2Seq.from_pretrained("org/de-en-gru", revision="v1", freeze=["embeddings"])   # a model folder

Rows of the embeddings and the output layer follow their tokens (by string) from the old
vocabularies to the new ones; everything else is copied as it is.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from .errors import CheckpointError
from .pretrained import check_overrides, read_model
from .vocab import Vocab

__all__ = ["FineTuningMethods"]


def _remap_rows(fresh: torch.Tensor, old: torch.Tensor, old_itos: Sequence[str], new_stoi: dict[str, int]) -> torch.Tensor:
    """``fresh`` with the rows of tokens known to ``old_itos`` copied from ``old``, by token string."""
    pairs = [(i, new_stoi[t]) for i, t in enumerate(old_itos) if t in new_stoi]
    out = fresh.clone()
    if pairs:
        old_rows, new_rows = zip(*pairs)
        out[list(new_rows)] = old[list(old_rows)].to(out.dtype)
    return out



class FineTuningMethods:
    """Fine-tuning of :class:`~seqlearn.Seq2Seq` (see the module docstring); it relies on the
    model's vocabularies, embeddings, generator, ``_reset_embeddings`` and ``_freeze``."""

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | os.PathLike | pl.LightningModule,
        *,
        revision: str | None = None,
        src_vocab: Vocab | dict[str, Any] | None = None,
        tgt_vocab: Vocab | dict[str, Any] | None = None,
        extend_src: Iterable[str] = (),
        extend_tgt: Iterable[str] = (),
        freeze: Sequence[str] = (),
        map_location: str | torch.device = "cpu",
        **overrides: Any,
    ) -> Any:
        """A model to fine-tune, from a checkpoint file, a model folder or Hub repo id (at
        ``revision``; see :mod:`seqlearn.pretrained`) or a model, in one call.

        The new vocabularies are ``src_vocab``/``tgt_vocab`` (default: the checkpoint's),
        extended by the tokens ``extend_src``/``extend_tgt``.  Rows of embeddings and output
        layer whose token (by string) the checkpoint knows are copied bit for bit; the others
        keep the fresh initialization.  ``freeze`` names parts to keep fixed
        (``encoder``, ``decoder``, ``embeddings``, ``src_embedding``, ``tgt_embedding``);
        ``overrides`` replace training hyperparameters (``lr``, ``scheduled_sampling``...).

        A checkpoint file or folder is read safely (see :mod:`seqlearn.checkpoint_loading`);
        one that is not of a Seq2Seq, or whose weights do not fit its vocabularies, raises
        :class:`~seqlearn.errors.CheckpointError`.  A vocabulary of the wrong kind raises
        :class:`~seqlearn.errors.VocabError` or :class:`~seqlearn.errors.ConfigError`.
        """
        if isinstance(checkpoint, cls):
            hparams, weights, where = dict(checkpoint.hparams), checkpoint.state_dict(), "the given model"
        else:
            ckpt, where = read_model(checkpoint, cls, revision=revision, map_location=map_location)
            hparams, weights = dict(ckpt["hyper_parameters"]), ckpt["state_dict"]
        check_overrides(cls, overrides)
        old = {side: Vocab.from_dict(hparams[f"{side}_vocab"], source=f"{where}: {side}_vocab") for side in ("src", "tgt")}
        new = {}
        for side, given, extra in (("src", src_vocab, extend_src), ("tgt", tgt_vocab, extend_tgt)):
            vocab = Vocab.from_dict((old[side] if given is None else Vocab.coerce(given, f"{side}_vocab")).to_dict())
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
        self.src_embedding = nn.Embedding(len(self.src_vocab), self.src_embedding.embedding_dim,
                                          padding_idx=self.src_vocab.pad_index)
        self.tgt_embedding = nn.Embedding(len(self.tgt_vocab), self.tgt_embedding.embedding_dim,
                                          padding_idx=self.tgt_vocab.pad_index)
        self.generator = nn.Linear(self.generator.in_features, len(self.tgt_vocab), bias=self.generator.bias is not None)
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
        for key, side in ((k, side) for k, side in rows.items() if k in fresh):  # a generator may have no bias
            new_vocab = self.src_vocab if side == "src" else self.tgt_vocab
            weights[key] = _remap_rows(fresh[key], weights[key], old[side].itos, new_vocab.stoi)
        self.load_state_dict(weights)

