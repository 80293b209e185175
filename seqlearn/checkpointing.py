"""Checkpoints that survive faults: atomic writes, and the random state of a run.

:class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the target's own
folder, fsyncs it, renames it over the target (``os.replace``: atomic) and fsyncs the
folder, so a process killed while saving -- or a full disk -- leaves the previous
checkpoint whole.  (Lightning's own writer stages the file in the system temporary folder,
which may be another file system, where the final move is a copy that a kill can cut
short, and never fsyncs.)

:class:`TrainingState` is the callback that makes a resumed run continue exactly: it puts
the random number generators' states (Python, NumPy, torch CPU and CUDA -- dropout,
scheduled sampling and word dropout draw from them) into every checkpoint and restores
them when training resumes from one, refuses to save weights that are not finite, and
installs :class:`AtomicCheckpointIO`.  seqlearn's models add it to any Trainer through
``configure_callbacks``; the data order comes back through
:class:`~seqlearn.batching.ResumableLoader`, the optimizer, LR scheduler and step count
(hence the scheduled-sampling probability) through Lightning.

Everything saved is tensors and plain Python values, so checkpoints still load with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from .errors import TrainingError

__all__ = ["AtomicCheckpointIO", "TrainingState", "atomic_save", "rng_state", "set_rng_state"]


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` holds either its old content or the whole
    new one, whenever the process dies.  The temporary file (``.NAME.*.tmp`` beside it) is
    removed on error; after a kill it stays, and is harmless."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer for local paths, writing with :func:`atomic_save`.
    Remote URLs (``s3://``...) go to Lightning's writer unchanged."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_save(checkpoint, str(path).removeprefix("file://"))


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and every CUDA device's) global
    random number generators, as tensors and plain values."""
    state: dict[str, Any] = {"python": _plain(random.getstate()), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (the parts this machine has)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (``weights_only`` loading accepts both; lists read back
    the same way whatever wrote them)."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


class TrainingState(pl.Callback):
    """Saves the random state of the run in each checkpoint and restores it on resume;
    refuses to checkpoint non-finite weights; makes the Trainer write checkpoints with
    :class:`AtomicCheckpointIO` unless it was given a CheckpointIO of its own.

    The random state is the one at saving time, and it is put back just before the first
    training batch after resuming, so that nothing the resumed run does before (building
    loaders, a sanity check) shifts it.  Under DDP the checkpoint holds rank 0's state and
    every process restores it: seqlearn's processes draw the same random numbers when
    seeded alike (``seed_everything``), which is how Lightning seeds them.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = [name for name, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingError(
                f"not saving a checkpoint at step {trainer.global_step}: parameters {', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''} are not finite; the last checkpoint written is the last good one"
            )
