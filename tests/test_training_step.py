"""TrainingModule owns the steps; a model gives its batch result and epoch metrics, and the
epoch's metrics are added up one way (weighted by what each batch's loss averages over)."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from seqlearn import LanguageModel, Seq2Seq, SequenceClassifier, Tagger
from seqlearn.training import BatchResult, TrainingModule

STEP_PLUMBING = ("training_step", "validation_step", "test_step", "on_train_epoch_end", "on_validation_epoch_start",
                 "on_validation_epoch_end", "on_test_epoch_end")  # fmt: skip


@pytest.mark.parametrize("cls", [Seq2Seq, Tagger, LanguageModel, SequenceClassifier], ids=lambda c: c.__name__)
def test_the_models_define_no_step_plumbing_of_their_own(cls):
    assert not [name for name in STEP_PLUMBING if name in vars(cls)]
    assert "batch_result" in vars(cls)


class Toy(TrainingModule):
    """Each batch is (mean loss, items, summed nll, a label); the loss is w * mean."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[tuple[str, dict, list]] = []

    def batch_result(self, batch, split):
        mean, count, nll, label = batch
        return BatchResult(self.w * mean, torch.tensor(count), nll=torch.tensor(nll), sums={"ones": torch.ones(2)},
                           outputs=[label])  # fmt: skip

    def epoch_metrics(self, split, sums, outputs):
        self.seen.append((split, {k: v.tolist() for k, v in sums.items()}, outputs))
        return {f"{split}_labels": float(len(outputs))}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


BATCHES = [(2.0, 3, 5.0, "a"), (4.0, 1, 1.0, "b"), (1.0, 4, 2.5, "c")]


def test_epoch_metrics_are_item_weighted_sums_of_every_batch():
    model = Toy()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    loader = DataLoader(BATCHES, batch_size=None)
    logged = trainer.validate(model, loader, verbose=False)[0]
    assert logged["val_loss"] == pytest.approx((2 * 3 + 4 * 1 + 1 * 4) / 8)  # not the mean of batch means
    assert logged["val_ppl"] == pytest.approx(math.exp((5.0 + 1.0 + 2.5) / 8))
    assert logged["val_labels"] == 3
    split, sums, outputs = model.seen[-1]
    assert split == "val" and outputs == ["a", "b", "c"] and sums["ones"] == [3.0, 3.0] and sums["count"] == 8

    trainer.fit(model, loader)
    metrics = trainer.callback_metrics
    assert float(metrics["train_loss_epoch"]) == pytest.approx(14 / 8)  # Lightning's mean, weighted by items
    assert "train_loss" in metrics and "train_ppl" in metrics and "train_labels" in metrics
    assert "val_loss" not in metrics  # no validation loader given to fit
