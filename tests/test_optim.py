"""One optimizer builder and one set of learning-rate schedules for the four models.

The oracle for each schedule is torch's own scheduler (or, for ``inverse-time``, which torch
lacks, its closed form) stepped by hand on a separate optimizer; the models' schedules are
stepped as Lightning steps them (once per epoch; ``plateau`` with the validation loss).
"""
from __future__ import annotations

import inspect

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from seqlearn import LanguageModel, Seq2Seq, SequenceClassifier, Tagger, Vocab
from seqlearn.batching import TaggingBatch, pad
from seqlearn.errors import ConfigError
from seqlearn.optim import SCHEDULERS, configure_optimization

LR, EPOCHS = 0.1, 7
VAL_LOSSES = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7]  # improves, stalls 3 epochs, improves, stalls


def words() -> Vocab:
    return Vocab(["a", "b", "c"])


def build(cls: type, **options) -> pl.LightningModule:
    torch.manual_seed(0)
    small = {"embedding_dim": 4, "hidden_size": 4, "lr": LR, **options}
    if cls is Seq2Seq:
        return Seq2Seq(words(), words(), val_bleu=False, **small)
    if cls is Tagger:
        return Tagger(words(), Vocab(["O", "B-X"], specials=("<pad>",)), char_features=None, **small)
    if cls is LanguageModel:
        return LanguageModel(words(), **small)
    return SequenceClassifier(words(), ["yes", "no"], **small)


MODELS = [Seq2Seq, Tagger, LanguageModel, SequenceClassifier]


def oracle(name: str, optimizer: torch.optim.Optimizer, gamma: float, step_size: int, patience: int, lr_min: float,
           epochs: int) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:  # fmt: skip
    s = torch.optim.lr_scheduler
    return {
        "plateau": lambda: s.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience, min_lr=lr_min),
        "step": lambda: s.StepLR(optimizer, step_size, gamma),
        "exponential": lambda: s.ExponentialLR(optimizer, gamma),
        "cosine": lambda: s.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr_min),
    }.get(name, lambda: None)()


def curve(scheduler, optimizer: torch.optim.Optimizer, plateau: bool) -> list[float]:
    """The learning rate of each of EPOCHS epochs, stepping as Lightning does at each epoch end."""
    lrs = []
    for epoch in range(EPOCHS):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: changes nothing, but keeps the order torch expects
        if scheduler is not None:
            scheduler.step(VAL_LOSSES[epoch]) if plateau else scheduler.step()
    return lrs


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", SCHEDULERS)
def test_each_model_schedules_as_torch_does(cls, name):
    gamma = 0.3 if name != "inverse-time" else 0.7
    model = build(cls, lr_scheduler=name, lr_gamma=gamma, lr_step_size=2, lr_patience=1, lr_min=0.01)
    config = configure_optimization(model)
    optimizer = config if name == "none" else config["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == LR
    got = curve(None if name == "none" else config["lr_scheduler"]["scheduler"], optimizer, name == "plateau")
    if name != "none":
        assert config["lr_scheduler"]["interval"] == "epoch"
        assert config["lr_scheduler"].get("monitor") == ("val_loss" if name == "plateau" else None)

    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    if name == "inverse-time":  # torch has no such class: its closed form
        expected = [LR / (1 + gamma * epoch) for epoch in range(EPOCHS)]
    else:  # the model has no Trainer, so cosine runs over lr_step_size epochs
        expected = curve(oracle(name, reference, gamma, 2, 1, 0.01, 2), reference, name == "plateau")
    assert got == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) > (1 if name != "none" else 0)  # the curve does change


def test_cosine_runs_over_the_trainers_epochs():
    model = build(SequenceClassifier, lr_scheduler="cosine", lr_min=0.0)
    model.trainer = pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False)
    scheduler = configure_optimization(model)["lr_scheduler"]["scheduler"]
    assert scheduler.T_max == 4


class LearningRates(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_a_trainer_steps_the_schedule_once_an_epoch():
    """The Tagger's inverse-time decay (0.1.0's lr_decay) through a real Trainer: lr / (1 + g * epoch)."""
    model = build(Tagger, lr_scheduler="inverse-time", lr_gamma=0.5, optimizer="sgd")
    batch = TaggingBatch(words=pad([[4, 5, 6], [5, 4]], 0), tags=pad([[1, 2, 1], [2, 1]], 0), chars=None,
                         index=torch.arange(2))  # fmt: skip
    rates = LearningRates()
    pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[rates]).fit(model, DataLoader([batch] * 3, batch_size=None))  # fmt: skip
    assert rates.seen == pytest.approx([LR / (1 + 0.5 * epoch) for epoch in range(4)], rel=1e-12)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_bad_names_fail_at_construction_naming_the_model(cls):
    with pytest.raises(ConfigError, match=f"{cls.__name__} lr_scheduler must be one of none, plateau"):
        build(cls, lr_scheduler="warm")
    with pytest.raises(ConfigError, match=f"{cls.__name__} optimizer must be one of adam, rmsprop, sgd"):
        build(cls, optimizer="adagrad")
    with pytest.raises(ConfigError, match="lr_gamma"):
        build(cls, lr_scheduler="plateau", lr_gamma=1.0)
    with pytest.raises(ConfigError, match="lr_step_size"):
        build(cls, lr_scheduler="step", lr_step_size=0)


def test_the_four_models_share_one_hyperparameter_vocabulary():
    shared = {"embedding_dim", "hidden_size", "dropout", "optimizer", "lr", "weight_decay", "momentum", "lr_scheduler",
              "lr_gamma", "lr_step_size", "lr_patience", "lr_min", "on_nonfinite", "cell", "cell_options"}  # fmt: skip
    names = {cls: set(inspect.signature(cls.__init__).parameters) for cls in MODELS}
    for cls in MODELS:
        assert shared <= names[cls], (cls.__name__, sorted(shared - names[cls]))
    for cls in (Tagger, LanguageModel, SequenceClassifier):
        assert "num_layers" in names[cls]
    assert {"tie_embeddings"} <= names[Seq2Seq] & names[LanguageModel]
    for old in ("word_dim", "tie_weights", "lr_decay"):
        assert not any(old in n for n in names.values())
