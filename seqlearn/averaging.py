"""Checkpoint averaging: one model whose weights are the mean of several checkpoints' weights.

The last few checkpoints of one run (epochs, or steps apart) averaged parameter by
parameter usually translate better than any one of them (what fairseq's
``average_checkpoints.py`` and JoeyNMT's ``average_checkpoints`` do)::

    from seqlearn.averaging import average_checkpoints, save_checkpoint

    model = average_checkpoints(["epoch=7.ckpt", "epoch=8.ckpt", "epoch=9.ckpt"])  # a Seq2Seq here
    model.translate("ein hund läuft", beam_size=5)[0][0].text
    save_checkpoint(model, "averaged.ckpt")   # loads like any other: Seq2Seq.load_from_checkpoint

    seqlearn average epoch=7.ckpt epoch=8.ckpt epoch=9.ckpt --out averaged.ckpt

Any seqlearn model's checkpoints average (Seq2Seq, Tagger, LanguageModel,
SequenceClassifier).  Floating-point parameters and buffers are averaged (in float64, then
cast back); integer and boolean buffers (counts, masks) are not: the first checkpoint's are
kept.  Tied weights stay tied.  The checkpoints must be of one model: the same class,
parameter names, shapes and dtypes, and the same hyperparameters -- vocabularies included
-- except those that only steer training (:data:`TRAINING_ONLY`: a resumed run may have
lowered the learning rate); anything else is a :class:`~seqlearn.errors.CheckpointError`
naming the two files and what differs.  Every file is read as data only
(:mod:`seqlearn.checkpoint_loading`).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch

from .checkpoint_loading import check_model_checkpoint, load_checkpoint, takes_hyperparameters
from .checkpointing import atomic_save
from .errors import CheckpointError

__all__ = ["average_checkpoints", "average_state_dicts", "save_checkpoint", "first_difference", "TRAINING_ONLY"]

#: hyperparameters that only steer training (optimization, regularization, monitoring), so
#: checkpoints that differ in them still average
TRAINING_ONLY = frozenset({
    "optimizer", "lr", "weight_decay", "momentum", "lr_scheduler", "lr_gamma", "lr_step_size", "lr_patience", "lr_min",
    "dropout", "input_dropout", "word_dropout", "label_smoothing", "teacher_forcing", "scheduled_sampling",
    "sampling_k", "sampling_c", "sampling_min", "freeze", "constrain_training", "val_bleu", "on_nonfinite",
})


def first_difference(a: Any, b: Any) -> str | None:
    """Where two plain values (dicts, lists, strings, numbers, bytes) first differ, said
    briefly (``"itos[5]: 'dog' vs 'cat'"``, ``"12 vs 14 items"``); None when they are equal."""
    found = _difference(a, b)
    if found is None:
        return None
    path, detail = found
    path = path.removeprefix(".")
    return f"{path}: {detail}" if path else detail


def _difference(a: Any, b: Any) -> tuple[str, str] | None:
    """``(path, detail)`` of the first difference (path like ``.itos[5]``), or None."""
    if a == b:
        return None
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in [*a, *(k for k in b if k not in a)]:
            step = f".{key}" if isinstance(key, str) else f"[{key!r}]"
            if key not in a or key not in b:
                return step, f"only in the {'second' if key in b else 'first'}"
            inner = _difference(a[key], b[key])
            if inner is not None:
                return step + inner[0], inner[1]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            inner = _difference(x, y)
            if inner is not None:
                return f"[{i}]{inner[0]}", inner[1]
        return "", f"{len(a)} vs {len(b)} items"
    if isinstance(a, bytes) and isinstance(b, bytes):
        return "", f"different bytes ({len(a)} and {len(b)})"
    return "", f"{_short(a)} vs {_short(b)}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]],
                        names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The entry-by-entry mean of ``state_dicts``: floating-point tensors averaged in float64
    and cast back to their dtype, other tensors (integer and boolean buffers) the first's.
    The dicts must hold the same names with the same shapes and dtypes, else a
    :class:`~seqlearn.errors.CheckpointError` naming the two (``names``: the files they come
    from) and the entry::

        average_state_dicts([{"w": torch.tensor([1., 2.])}, {"w": torch.tensor([3., 6.])}])  # {"w": tensor([2., 4.])}
    """
    if not state_dicts:
        raise CheckpointError("nothing to average: no checkpoints given")
    names = [f"state dict {i}" for i in range(len(state_dicts))] if names is None else list(names)
    first = state_dicts[0]
    for name, other in zip(names[1:], state_dicts[1:]):
        if set(first) != set(other):
            only_first, only_other = sorted(set(first) - set(other)), sorted(set(other) - set(first))
            raise CheckpointError(
                f"{names[0]} and {name} hold different parameters (only in {names[0]}: {only_first[:5] or 'none'}; "
                f"only in {name}: {only_other[:5] or 'none'}): checkpoints of one model are needed to average")
        for key, tensor in first.items():
            if (tensor.shape, tensor.dtype) != (other[key].shape, other[key].dtype):
                raise CheckpointError(
                    f"{names[0]} and {name} differ in {key}: shape {tuple(tensor.shape)} {tensor.dtype} vs "
                    f"{tuple(other[key].shape)} {other[key].dtype}: checkpoints of one model are needed to average")
    averaged = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            total = sum(sd[key].to(torch.float64) for sd in state_dicts)
            averaged[key] = (total / len(state_dicts)).to(tensor.dtype)
        else:  # counts and masks are no quantities to average
            averaged[key] = tensor.clone()
    return averaged


def _model_class(hparams: Any, where: str) -> type:
    """The seqlearn model class whose arguments ``hparams`` are."""
    from .classifier import SequenceClassifier
    from .language_model import LanguageModel
    from .seq2seq import Seq2Seq
    from .tagger import Tagger

    classes = (Seq2Seq, Tagger, LanguageModel, SequenceClassifier)
    matches = [cls for cls in classes if isinstance(hparams, dict) and takes_hyperparameters(cls, hparams)]
    if len(matches) != 1:
        raise CheckpointError(f"{where}: not a checkpoint of a seqlearn model "
                              f"({', '.join(cls.__name__ for cls in classes)})")
    return matches[0]


def average_checkpoints(paths: Sequence[str | os.PathLike], map_location: Any = None) -> pl.LightningModule:
    """The model of the checkpoints at ``paths`` with their weights averaged
    (:func:`average_state_dicts`): a Seq2Seq, Tagger, LanguageModel or SequenceClassifier
    built as the first checkpoint describes (its hyperparameters, vocabularies and
    tokenizers), in eval mode, on ``map_location`` (default: the CPU).  Checkpoints of
    different models -- another class, architecture or vocabulary; see the module
    docstring -- raise a :class:`~seqlearn.errors.CheckpointError` naming the two files and
    the difference."""
    if not paths:
        raise CheckpointError("nothing to average: no checkpoints given")
    names = [os.fspath(path) for path in paths]
    checkpoints = [load_checkpoint(path, "cpu") for path in paths]
    classes = [_model_class(checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None, name)
               for name, checkpoint in zip(names, checkpoints)]
    cls = classes[0]
    for name, checkpoint, other in zip(names, checkpoints, classes):
        if other is not cls:
            raise CheckpointError(f"{names[0]} and {name} are checkpoints of different models: a {cls.__name__} "
                                  f"and a {other.__name__}; only checkpoints of one model can be averaged")
        check_model_checkpoint(checkpoint, cls, name)
    first = checkpoints[0]["hyper_parameters"]
    for name, checkpoint in zip(names[1:], checkpoints[1:]):
        hparams = checkpoint["hyper_parameters"]
        for key in sorted({*first, *hparams} - TRAINING_ONLY):
            difference = first_difference(first.get(key), hparams.get(key))
            if difference is not None:
                raise CheckpointError(f"{names[0]} and {name} are checkpoints of different models: their {key} "
                                      f"differs ({difference}); only checkpoints of one model can be averaged")
    averaged = average_state_dicts([checkpoint["state_dict"] for checkpoint in checkpoints], names)
    model = cls.load_from_checkpoint(paths[0], map_location="cpu")
    model.load_state_dict(averaged)
    return model.to(map_location or "cpu").eval()


def save_checkpoint(model: pl.LightningModule, path: str | os.PathLike) -> None:
    """Write ``model`` (a seqlearn model) to ``path`` as a Lightning checkpoint holding its
    weights, hyperparameters and component provenance -- no optimizer or training state --
    that ``load_from_checkpoint``, ``seqlearn translate|tag|export`` and
    :func:`average_checkpoints` read.  The file appears whole or not at all."""
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": pl.__version__}
    model.on_save_checkpoint(checkpoint)  # provenance, and hyperparameters as plain values
    atomic_save(checkpoint, path)
