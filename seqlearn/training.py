"""What seqlearn's LightningModules share for training that survives faults and scales out.

:class:`TrainingModule` is the base of :class:`~seqlearn.Seq2Seq`, :class:`~seqlearn.Tagger`,
:class:`~seqlearn.language_model.LanguageModel` and
:class:`~seqlearn.classifier.SequenceClassifier`.  It owns ``training_step``,
``validation_step`` and ``test_step``; a model says only what differs::

    class MyModel(TrainingModule):
        def batch_result(self, batch, split):      # split: "train", "val" or "test"
            loss = ...                              # () the mean over `count` items
            return BatchResult(loss, count=n_tokens, nll=nll_sum, sums={"correct": c}, outputs=[...])

        def epoch_metrics(self, split, sums, outputs):   # totals of the epoch, all processes
            return {f"{split}_acc": sums["correct"] / sums["count"]}

The steps run ``batch_result`` under the out-of-memory advice; in training they make the
loss that of the global batch under DDP, apply the non-finite policy and log
``train_loss`` (each step, and its mean over the epoch).  Each epoch's metrics come one
way, from what the batches added up: ``{split}_loss`` (validation and test: the mean over
every item), ``{split}_ppl`` (``exp`` of the mean token NLL, when batches give ``nll``) and
the model's :meth:`~TrainingModule.epoch_metrics`, over the batches of all processes.

It also gives them:

* exact resume: :class:`~seqlearn.checkpointing.TrainingState` joins every Trainer (random
  states in checkpoints, atomic checkpoint files);
* a guard against non-finite losses, ``on_nonfinite="stop"`` (raise
  :class:`~seqlearn.errors.NonFiniteLossError` naming the batch, before the bad loss
  reaches the weights) or ``"skip"`` (warn, and let the batch change nothing);
* advice instead of a bare allocator error when a batch does not fit in memory
  (:class:`~seqlearn.errors.BatchMemoryError`);
* losses and epoch metrics that are those of the global batch and of the whole
  validation set under DDP;
* checkpoints that load as data: hyperparameters without the import paths LightningCLI
  adds, and under ``checkpoint["seqlearn"]`` the provenance of every registry-built
  component a subclass names in :meth:`~TrainingModule.registered_components`, so that
  loading where a plugin is missing names the distribution to install
  (:mod:`seqlearn.provenance`);
* Hub-format model folders: ``model.save_pretrained(folder)`` and
  ``Cls.from_pretrained(folder_or_repo_id)`` (:mod:`seqlearn.pretrained`).

:func:`evaluating` is the one way seqlearn runs a module for inference (``translate``,
``predict``, ``generate``, ``perplexity``, export): eval mode without gradients, every
submodule's mode given back afterwards.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, TypeVar

import pytorch_lightning as pl
import torch
from torch import nn

from .checkpointing import TrainingState
from .errors import BatchMemoryError, ConfigError, NonFiniteLossError
from .pretrained import PretrainedMethods
from .provenance import checkpoint_record, component_provenance

__all__ = ["TrainingModule", "BatchResult", "NONFINITE_POLICIES", "evaluating", "is_out_of_memory"]

NONFINITE_POLICIES = ("stop", "skip")
_OUT_OF_MEMORY = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")


M = TypeVar("M", bound=nn.Module)


@contextmanager
def evaluating(module: M) -> Iterator[M]:
    """``module`` in eval mode (no dropout) and without gradients inside the block; after
    it -- also after an error -- every submodule is in the mode it was in before (a
    frozen part kept in eval mode while training stays so)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, training in modes:  # parents first: each train() call sets its children, fixed in turn
            m.train(training)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocator's failure (CUDA/MPS ``torch.OutOfMemoryError``, or the
    CPU allocator's RuntimeError) rather than a bug."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(m in str(err) for m in _OUT_OF_MEMORY)
    )


def check_nonfinite_policy(value: str) -> None:
    if value not in NONFINITE_POLICIES:
        raise ConfigError(f"on_nonfinite must be 'stop' or 'skip', got {value!r}")


@dataclass
class BatchResult:
    """What a model computes on one batch (:meth:`TrainingModule.batch_result`).

    loss: ``()`` the mean over ``count`` items -- what training minimizes.
    count: ``()`` how many items (tokens, sentences, texts) ``loss`` averages over.
    nll: ``()`` the summed token negative log-likelihood of ``count`` tokens, for models
        whose epochs report perplexity (``{split}_ppl``); None otherwise.
    sums: further per-epoch sums, each a tensor of a fixed shape (per-class counts...).
    outputs: picklable per-example outputs (texts, tag sequences) for :meth:`~TrainingModule.epoch_metrics`.
    """

    loss: torch.Tensor
    count: torch.Tensor
    nll: torch.Tensor | None = None
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: list[Any] = field(default_factory=list)


class TrainingModule(PretrainedMethods, pl.LightningModule):
    """A LightningModule with seqlearn's training steps and fault handling (see the module
    docstring).

    Subclasses implement :meth:`batch_result` (and :meth:`epoch_metrics` for metrics beyond
    loss and perplexity), read ``hparams.on_nonfinite``, and name their registry-built
    components in :meth:`registered_components`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: one report per batch skipped for a non-finite loss (``on_nonfinite="skip"``)
        self.skipped_batches: list[str] = []
        self._finite_since_step = 0
        self._current_batch: tuple[Any, int] | None = None
        #: the provenance recorded in the checkpoint this model was loaded from (None otherwise)
        self.checkpoint_provenance: dict[str, Any] | None = None
        #: per split, the sums and outputs of the epoch's batches so far
        self._epoch: dict[str, tuple[dict[str, torch.Tensor], list[Any]]] = {}

    # -- what a model implements ---------------------------------------------------------------
    def batch_result(self, batch: Any, split: str) -> BatchResult:
        """The loss of ``batch`` and what the epoch metrics of ``split`` ("train", "val",
        "test") need from it."""
        raise NotImplementedError(f"{type(self).__name__} must implement batch_result(batch, split)")

    def epoch_metrics(self, split: str, sums: dict[str, torch.Tensor], outputs: list[Any]) -> dict[str, float]:
        """Metrics of a finished epoch of ``split``, named ``{split}_...``, from the totals of
        every :class:`BatchResult` of all processes: ``sums`` (``loss`` and ``count`` among
        them) and ``outputs`` in batch order.  None beyond loss and perplexity by default."""
        return {}

    def on_skipped_batch(self) -> None:
        """Called when a training batch is skipped for a non-finite loss (``on_nonfinite="skip"``)."""

    # -- the steps ------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with self.memory_advice(batch, batch_idx):
            result = self.batch_result(batch, "train")
        loss = self.global_mean(result.loss, result.count)
        if not self.loss_is_finite(loss, batch, batch_idx):
            self.on_skipped_batch()
            return self.skipped_batch_loss()
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=int(result.count),
                 sync_dist=self._distributed())  # fmt: skip
        self._add_up("train", result)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with self.memory_advice(batch, batch_idx):
            self._add_up("val", self.batch_result(batch, "val"))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        with self.memory_advice(batch, batch_idx):
            self._add_up("test", self.batch_result(batch, "test"))

    def _add_up(self, split: str, result: BatchResult) -> None:
        sums, outputs = self._epoch.setdefault(split, ({}, []))
        count = result.count.detach()
        added = {"loss": result.loss.detach() * count, "count": count, **result.sums}
        if result.nll is not None:
            added["nll"] = result.nll
        for key, value in added.items():
            sums[key] = sums[key] + value.detach() if key in sums else value.detach()
        outputs.extend(result.outputs)

    def _log_epoch(self, split: str) -> None:
        """The epoch metrics of ``split`` from the sums and outputs of all processes' batches."""
        local, local_outputs = self._epoch.pop(split, ({}, []))
        sums: dict[str, torch.Tensor] = {}
        outputs: list[Any] = []
        # every process takes part, also one that saw no batch
        for part, part_outputs in self.gather_across_processes([({k: v.cpu() for k, v in local.items()}, local_outputs)]):
            for key, value in part.items():
                sums[key] = sums[key] + value if key in sums else value
            outputs.extend(part_outputs)
        count = float(sums["count"]) if "count" in sums else 0.0
        if count == 0:
            return
        metrics = {} if split == "train" else {f"{split}_loss": float(sums["loss"]) / count}  # train_loss: the steps'
        if "nll" in sums:
            metrics[f"{split}_ppl"] = float(torch.exp(sums["nll"].double() / count))
        metrics.update(self.epoch_metrics(split, sums, outputs))
        # the values are global already; sync_dist keeps Lightning quiet
        self.log_dict(metrics, prog_bar=split == "val", sync_dist=self._distributed())

    def on_train_epoch_start(self) -> None:
        self._epoch.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._epoch.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._epoch.pop("test", None)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_callbacks(self) -> list[pl.Callback]:
        return [TrainingState()]

    # -- checkpoints ------------------------------------------------------------------------
    def registered_components(self) -> dict[str, Any]:
        """The components the registries built, by role (``{"cell": ..., "pooling": ...}``;
        None for an absent one): their provenance goes into every checkpoint."""
        return {}

    def provenance(self) -> dict[str, dict[str, Any] | None]:
        """Where each registry-built component comes from (kind, name, distribution, version)."""
        return component_provenance(self.registered_components())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["seqlearn"] = checkpoint_record(self.registered_components())
        # LightningCLI adds import paths (_class_path, _instantiator) that loading would import
        # and call; a seqlearn checkpoint is loaded by its own class, so it keeps plain values only
        hparams = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY) or {}
        checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = {k: v for k, v in hparams.items() if not k.startswith("_")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("seqlearn")
        self.checkpoint_provenance = record.get("provenance") if isinstance(record, dict) else None

    # -- non-finite losses ----------------------------------------------------------------
    def loss_is_finite(self, loss: torch.Tensor, batch: Any, batch_idx: int) -> bool:
        """True when ``loss`` is finite in every process; otherwise raises
        :class:`NonFiniteLossError` (``on_nonfinite="stop"``) or warns, records the report
        in :attr:`skipped_batches` and returns False (``"skip"``).  The check reads the loss
        on the host once a step."""
        finite = bool(torch.isfinite(loss.detach()).all())
        everywhere = finite
        if self._distributed():
            everywhere = not self.trainer.strategy.reduce_boolean_decision(not finite, all=False)
        if everywhere:
            self._finite_since_step += 1
            return True
        value = "another process's loss" if finite else f"the loss ({float(loss.detach())})"
        report = f"{value} is not finite at {self._where(batch, batch_idx)}"
        if self.hparams.get("on_nonfinite", "stop") == "stop":
            raise NonFiniteLossError(
                f"{report}. The weights are those before this batch (no checkpoint was written from it). Lower the "
                "learning rate, clip gradients (Trainer(gradient_clip_val=1.0)), check these examples, or pass "
                "on_nonfinite='skip' to the model to skip such batches"
            )
        warnings.warn(f"skipping a batch: {report}", RuntimeWarning, stacklevel=2)
        self.skipped_batches.append(report)
        return False

    def skipped_batch_loss(self) -> torch.Tensor:
        """A zero loss over every trainable parameter: backward gives zero gradients (so DDP's
        gradient exchange goes on in every process), and :meth:`on_before_optimizer_step`
        drops them when no batch since the last step was finite, so the optimizer's step
        changes nothing (not even Adam's moments)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.stack([p.sum() for p in params]).sum() * 0.0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._finite_since_step == 0:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None  # optimizers leave parameters without gradients alone
        self._finite_since_step = 0

    # -- memory -------------------------------------------------------------------------------
    @contextmanager
    def memory_advice(self, batch: Any, batch_idx: int) -> Iterator[None]:
        """Turn an allocator failure inside the block into :class:`BatchMemoryError`
        naming the batch and the budget to lower."""
        self._current_batch = (batch, batch_idx)
        try:
            yield
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            raise BatchMemoryError(self._memory_message(batch, batch_idx, err)) from err

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        batch, batch_idx = self._current_batch or (None, -1)
        with self.memory_advice(batch, batch_idx):
            super().backward(loss, *args, **kwargs)

    def _memory_message(self, batch: Any, batch_idx: int, err: BaseException) -> str:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        gpu = self.device.type != "cpu"
        return (
            f"{self._where(batch, batch_idx)} did not fit in memory: {first_line}. {self._budget_advice()}"
            + (", or train in Trainer(precision='bf16-mixed') / '16-mixed'" if gpu else "")
        )

    def _budget_advice(self) -> str:
        """How to make batches smaller, for :meth:`_memory_message` (the token-budget data modules')."""
        data = self._datamodule()
        budget = ""
        if data is not None:
            budget = f" (now max_tokens={getattr(data, 'max_tokens', None)}, max_sentences={getattr(data, 'max_sentences', None)})"
        return (
            f"Lower the data module's token budget max_tokens or its max_sentences{budget} (seqlearn fit: "
            "--data.max_tokens), drop over-long training examples with max_length, and keep the effective batch "
            "with Trainer(accumulate_grad_batches=k)"
        )

    # -- reports ------------------------------------------------------------------------------
    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _where(self, batch: Any, batch_idx: int) -> str:
        """``batch 3 of epoch 0 (global step 12): 16 examples, ids (16, 9), (16, 12); training
        examples 4, 17 (train.tsv, lines 5, 18)``, from what the batch and data module know."""
        where = f"batch {batch_idx}"
        if self._trainer is not None:
            where += f" of epoch {self.current_epoch} (global step {self.global_step})"
        index = getattr(batch, "index", None)
        if index is None:
            return where
        shapes = [tuple(v.ids.shape) for v in vars(batch).values() if hasattr(v, "ids")]
        where += f": {len(index)} examples, ids {', '.join(map(str, shapes))}"
        positions = index.tolist()
        shown = ", ".join(map(str, positions[:10])) + (" ..." if len(positions) > 10 else "")
        split = "training" if self.training else "evaluated"
        where += f"; {split} examples {shown}"
        data = self._datamodule()
        examples = getattr(data, "examples", {}).get("train") if self.training else None
        if examples is not None and all(0 <= i < len(examples) for i in positions):
            lines = ", ".join(str(examples[i].line) for i in positions[:10]) + (" ..." if len(positions) > 10 else "")
            source = data._where(data.sources.get("train"), "train") + ", " if hasattr(data, "_where") else ""
            where += f" ({source}lines {lines})"
        return where

    # -- data parallel ---------------------------------------------------------------------------
    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def global_mean(self, mean: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """``mean``, this process's loss averaged over ``count`` items (tokens, sentences),
        rescaled under DDP so that the average DDP takes over processes is the mean over
        the items of all processes' batches -- the loss, and gradient, of one process
        training on the whole global batch.  Unchanged in a single process."""
        if not self._distributed():
            return mean
        total = self.trainer.strategy.reduce(count.detach().to(mean.dtype, copy=True), reduce_op="sum")
        return mean * count * self.trainer.world_size / total.clamp(min=1)

    def gather_across_processes(self, items: list[Any]) -> list[Any]:
        """The concatenation of every process's ``items`` (picklable objects)."""
        if not self._distributed() or not torch.distributed.is_initialized():
            return items
        parts: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(parts, items)
        return [item for part in parts for item in part]
