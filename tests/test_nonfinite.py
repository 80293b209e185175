"""Faults: a non-finite training loss stops the run naming the batch, or skips that batch,
and never reaches the weights or a checkpoint -- for every model: Seq2Seq, Tagger,
SequenceClassifier and LanguageModel (whose skipped window must not hand a non-finite state
on to the next)."""
from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from _reliability_runs import tiny
from seqlearn.errors import ConfigError, NonFiniteLossError, TrainingError

POISONED_STEP = 3
STEPS = 6
KINDS = ["seq2seq", "tagger", "classifier", "language_model"]


def poisoned(out):
    """``out`` -- a tensor, or tuples and lists of them (an encoder's outputs and final
    states) -- times NaN."""
    if isinstance(out, torch.Tensor):
        return out * float("nan")
    return type(out)(poisoned(part) for part in out)


class Poison(pl.Callback):
    """Makes ``layer`` output NaN during training step ``at``, and keeps that batch and
    the weights and optimizer state around it."""

    def __init__(self, layer: torch.nn.Module, at: int | None = POISONED_STEP):
        self.at, self.active = at, False
        layer.register_forward_hook(lambda module, inputs, out: poisoned(out) if self.active else None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.active = trainer.global_step == self.at
        if self.active:
            self.batch, self.batch_idx = batch, batch_idx
            self.weights_before = copy.deepcopy(pl_module.state_dict())
            self.optimizer_before = copy.deepcopy(trainer.optimizers[0].state_dict())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.active:
            self.weights_after = copy.deepcopy(pl_module.state_dict())
            self.optimizer_after = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.active = False


def trainer(poison: Poison, folder) -> pl.Trainer:
    """A checkpoint after every step, into ``folder``."""
    checkpoints = ModelCheckpoint(dirpath=folder, every_n_train_steps=1, save_top_k=-1, save_last=True)
    return pl.Trainer(max_steps=STEPS, callbacks=[poison, checkpoints], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu",
                      devices=1)  # fmt: skip


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(w).all()) for w in weights.values() if w.is_floating_point())


@pytest.mark.parametrize("kind", KINDS)
def test_stop_names_the_batch_and_keeps_weights_and_checkpoint_from_before_it(kind, tmp_path):
    model, data, layer = tiny(kind, "stop")
    poison = Poison(layer)
    with pytest.raises(NonFiniteLossError) as err:
        trainer(poison, tmp_path).fit(model, data)
    message = str(err.value)
    assert f"batch {poison.batch_idx} of epoch 0 (global step {POISONED_STEP})" in message
    assert "not finite" in message and "on_nonfinite='skip'" in message
    if kind == "language_model":  # a window of the streams: no examples, a position
        window = poison.batch
        assert window.offset == POISONED_STEP * data.bptt
        assert (f"(global step {POISONED_STEP}): the window of {len(window)} streams x {window.input.size(1)} "
                f"tokens at stream position {window.offset}") in message
    else:
        index = poison.batch.index.tolist()
        lines = [data.examples["train"][i].line for i in index]
        assert f"{len(index)} examples" in message
        assert "training examples " + ", ".join(map(str, index[:10])) in message
        assert "(train examples, lines " + ", ".join(map(str, lines[:10])) in message
    # the weights are those from before the bad batch, as is the last checkpoint written
    assert_same(model.state_dict(), poison.weights_before)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == POISONED_STEP
    assert_same(last["state_dict"], poison.weights_before)
    assert all_finite(last["state_dict"])


@pytest.mark.parametrize("kind", KINDS)
def test_skip_trains_on_and_the_skipped_batch_changes_nothing(kind, tmp_path):
    model, data, layer = tiny(kind, "skip")
    poison = Poison(layer)
    run = trainer(poison, tmp_path)
    with pytest.warns(RuntimeWarning, match="skipping a batch: the loss \\(nan\\) is not finite at batch"):
        run.fit(model, data)
    assert run.global_step == STEPS
    # one batch skipped: for the language model, the window after the poisoned one (which
    # continues the same streams) starts from zeros, not from the poisoned final state
    assert len(model.skipped_batches) == 1 and f"global step {POISONED_STEP}" in model.skipped_batches[0]
    # the skipped step moved neither the weights nor Adam's moments
    assert_same(poison.weights_after, poison.weights_before)
    before, after = poison.optimizer_before["state"], poison.optimizer_after["state"]
    assert before.keys() == after.keys() and all(
        torch.equal(before[p][k], after[p][k]) for p in before for k in ("exp_avg", "exp_avg_sq")
    )
    # ...and training went on: the last weights differ from those, and are finite, as saved
    assert not all(torch.equal(model.state_dict()[k], poison.weights_before[k]) for k in poison.weights_before)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == STEPS and all_finite(last["state_dict"])
    assert_same(last["state_dict"], model.state_dict())


def test_a_checkpoint_of_non_finite_weights_is_refused_and_the_file_left_alone(tmp_path):
    model, data, layer = tiny("seq2seq", "stop")
    run = trainer(Poison(layer, at=None), tmp_path / "run")
    run.fit(model, data)
    target = tmp_path / "model.ckpt"
    run.save_checkpoint(target)
    good = target.read_bytes()
    with torch.no_grad():
        model.generator.bias[0] = float("inf")
    with pytest.raises(TrainingError, match="generator.bias are not finite"):
        run.save_checkpoint(target)
    assert target.read_bytes() == good


@pytest.mark.parametrize("kind", KINDS)
def test_on_nonfinite_accepts_only_stop_or_skip(kind):
    with pytest.raises(ConfigError, match="on_nonfinite"):
        tiny(kind, "ignore")
