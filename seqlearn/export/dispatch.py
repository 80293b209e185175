"""The exporter registry: which function exports a model of which class.

:func:`exporter` registers a function for a model class (and its subclasses);
:func:`export` finds the one for a model by walking its class's method resolution order;
:func:`export_checkpoint` loads a checkpoint file of whichever registered class its
hyperparameters fit and exports it.  See ``docs/export.md``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Union

from torch import nn

from ..errors import ConfigError, ExportError

#: ``fn(model, directory, format="torchscript", *, check=True) -> directory``
ExportFn = Callable[..., Path]

#: model class (or its ``"module:Class"`` path, not imported yet) -> the function exporting such models
EXPORTERS: dict[Union[type, str], ExportFn] = {}


def exporter(model_class: type | str) -> Callable[[ExportFn], ExportFn]:
    """Register ``fn(model, directory, format="torchscript", *, check=True) -> Path`` as the
    exporter of models of ``model_class`` and its subclasses, for :func:`export`::

        @exporter(MyModel)
        def export_my_model(model, directory, format="torchscript", *, check=True): ...

    ``model_class`` may also be a ``"module:Class"`` path, imported when a model is first
    exported: a plugin can register an exporter in the module that defines the model."""
    if not isinstance(model_class, (type, str)) or (isinstance(model_class, str) and ":" not in model_class):
        raise ConfigError(f"exporter() takes a model class or a 'module:Class' path, got {model_class!r}")

    def register(fn: ExportFn) -> ExportFn:
        EXPORTERS[model_class] = fn
        return fn

    return register


def _resolve(path: str) -> type:
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"the exporter registered for {path!r} names no importable class ({exc})") from exc


def registered_classes() -> dict[type, ExportFn]:
    """The model classes with an exporter, paths registered as ``"module:Class"`` imported now."""
    for key in [k for k in EXPORTERS if isinstance(k, str)]:
        EXPORTERS[_resolve(key)] = EXPORTERS.pop(key)
    return {cls: fn for cls, fn in EXPORTERS.items() if isinstance(cls, type)}


def export(model: nn.Module, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export any model with a registered exporter (Seq2Seq, Tagger, CRF, LanguageModel,
    SequenceClassifier, or one registered with :func:`exporter`) into ``directory``.
    Returns ``directory``."""
    classes = registered_classes()
    for cls in type(model).__mro__:
        if cls in classes:
            return classes[cls](model, directory, format, check=check)
    cls = type(model)
    raise ExportError(f"no exporter for {cls.__name__} ({cls.__module__}.{cls.__qualname__}); exportable: "
                      f"{', '.join(sorted(c.__name__ for c in classes))}; register one with "
                      f"seqlearn.export.exporter({cls.__name__})")


def export_checkpoint(path: str | Path, directory: str | Path, format: str = "torchscript", *,
                      check: bool = True) -> Path:
    """Load a seqlearn checkpoint file -- of whichever exportable model (Seq2Seq, Tagger,
    LanguageModel, SequenceClassifier) its hyperparameters are the arguments of -- or a
    model folder or Hub repo id (:mod:`seqlearn.pretrained`) on the CPU and :func:`export`
    it (``seqlearn export``).  Checkpoints are read as data only
    (:mod:`seqlearn.checkpoint_loading`); one of no exportable model raises
    :class:`~seqlearn.errors.ExportError`.  Returns ``directory``."""
    from ..checkpoint_loading import load_checkpoint, takes_hyperparameters
    from ..pretrained import load_model, resolve

    if resolve(path) is not None:  # a model folder or Hub repo id: its config names the class
        return export(load_model(path, map_location="cpu"), directory, format, check=check)
    checkpoint = load_checkpoint(path, "cpu")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    # the LightningModules among the exportable classes: those that have checkpoints
    classes = [cls for cls in registered_classes() if hasattr(cls, "load_from_checkpoint")]
    matches = [cls for cls in classes if isinstance(hparams, dict) and takes_hyperparameters(cls, hparams)]
    if len(matches) != 1:
        names = ", ".join(cls.__name__ for cls in classes)
        raise ExportError(f"{path}: not a checkpoint of an exportable model ({names}): "
                          + ("no hyperparameters in it" if not isinstance(hparams, dict)
                             else f"its hyperparameters fit {len(matches)} of them"))
    model = matches[0].load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return export(model, directory, format, check=check)
