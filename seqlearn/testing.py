"""Helpers for testing components, plugins included: a short training run on the default task.

A plugin's tests prove that its component *learns* inside a real :class:`~seqlearn.Seq2Seq`
by training a small model with it, by name, on the embedded default task and comparing
the loss with what the built-ins reach in the same number of updates::

    from seqlearn.testing import train_on_default_task

    def test_mgu_learns_the_default_task():
        _, loss = train_on_default_task(steps=150, cell="mgu")
        assert loss < 2.0      # a GRU reaches ... in 150 updates

The run is deterministic for ``seed`` on one device and thread count; CPU only.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from .datamodules import TranslationDataModule
from .seq2seq import Seq2Seq
from .training import evaluating

__all__ = ["SMALL_MODEL", "train_on_default_task", "validation_loss"]

#: a model small enough to train for a few hundred updates in seconds on one CPU core
SMALL_MODEL: dict[str, Any] = {"embedding_dim": 32, "hidden_size": 64, "dropout": 0.0, "lr": 1e-2, "val_bleu": False}


def validation_loss(model: Seq2Seq, data: TranslationDataModule) -> float:
    """Mean negative log-likelihood per target token (``</s>`` included) of ``model`` on the
    validation split of ``data``, teacher-forced in eval mode."""
    nll = tokens = 0.0
    with evaluating(model):
        for batch in data.val_dataloader():
            _, batch_nll, n = model.batch_loss(batch)
            nll, tokens = nll + float(batch_nll), tokens + int(n)
    return nll / tokens


def train_on_default_task(steps: int, seed: int = 0, max_tokens: int = 512, **model_options: Any) -> tuple[Seq2Seq, float]:
    """Train a :data:`SMALL_MODEL` ``Seq2Seq`` (``model_options`` override it: ``cell="mgu"``,
    ``decoder="coverage"``...) for ``steps`` updates of ``max_tokens``-token batches of the
    default task, gradients clipped at 1.  Returns the model (in eval mode) and its
    :func:`validation_loss`."""
    pl.seed_everything(seed, verbose=False)
    data = TranslationDataModule("default", max_tokens=max_tokens, seed=seed)
    data.setup("fit")
    model = Seq2Seq(data.src_vocab, data.tgt_vocab, **{**SMALL_MODEL, **model_options})
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=steps, gradient_clip_val=1.0, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, data)
    model.eval()
    return model, validation_loss(model, data)
