"""Loading checkpoints as data, never as code.

A checkpoint may come from anywhere, and unpickling an arbitrary file can run arbitrary
code.  So every checkpoint seqlearn reads -- ``Seq2Seq.load_from_checkpoint``,
``Tagger.load_from_checkpoint`` (hence ``seqlearn translate``, ``seqlearn tag`` and the
spaCy component), ``Seq2Seq.from_pretrained`` -- is read with
``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which rebuilds tensors,
containers, numbers and strings and refuses anything that would import or call.  The
argument is always passed explicitly, so neither PyTorch's ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
nor a caller's ``weights_only=False`` can turn it off.  seqlearn's own checkpoints hold
only such values (vocabularies as dicts, components by registry name).

What a checkpoint names is looked up, never imported: component names (cell, attention,
decoder, tokenizer, char features) go through :mod:`seqlearn.registry`, which loads only
installed entry points and explicitly registered classes, so ``"some.module:Class"`` or a
file path is an :class:`~seqlearn.errors.UnknownComponentError`; hyperparameters naming
import paths (LightningCLI's ``_class_path``, ``_instantiator``) are refused.

Every failure is a :class:`~seqlearn.errors.CheckpointError` naming the file: a pickled
object (named in the message), a file that is not a PyTorch checkpoint or is truncated,
a checkpoint of another model class, weights that do not fit the hyperparameters.
"""
from __future__ import annotations

import inspect
import io
import os
import pickle
import re
import zipfile
from typing import Any

import torch

from .errors import CheckpointError, ConfigError, SeqlearnError, UnknownComponentError
from .provenance import missing_components_message
from .renamed import loading_checkpoint

__all__ = ["load_checkpoint", "check_model_checkpoint", "takes_hyperparameters", "SafeCheckpointLoading"]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_checkpoint(path: Any, map_location: Any = None, model: type | None = None) -> dict[str, Any]:
    """The checkpoint at ``path`` (a path or a binary file object) as read by
    ``torch.load(weights_only=True)``; with ``model``, also checked to be a checkpoint of
    that class (:func:`check_model_checkpoint`).  A file that cannot be opened raises the
    usual :class:`OSError`; anything else wrong is a :class:`CheckpointError`."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as file:  # a file that cannot be opened: the usual OSError
            return load_checkpoint(file, map_location, model)
    where = _name(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found:
            raise CheckpointError(
                f"{where}: refused: the checkpoint holds a pickled Python object ({found.group(1)}) that loading "
                "would have to import and call, which can run any code. seqlearn reads checkpoints with "
                "torch.load(weights_only=True) only (tensors and plain values); nothing from the file was run"
            ) from exc
        raise CheckpointError(f"{where}: not a PyTorch checkpoint (the restricted unpickler cannot read it)") from exc
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        detail = str(exc).split(". ")[0].strip() or type(exc).__name__
        raise CheckpointError(f"{where}: not a PyTorch checkpoint, or a truncated one ({detail})") from exc
    if model is not None:
        check_model_checkpoint(checkpoint, model, where)
    return checkpoint


def check_model_checkpoint(checkpoint: Any, model: type, where: str) -> None:
    """Raise a :class:`CheckpointError` unless ``checkpoint`` is a Lightning checkpoint
    (a ``state_dict`` and ``hyper_parameters``) holding every argument ``model`` requires,
    and no import paths, whose recorded components are all available here (a missing
    plugin is named with its distribution: :func:`seqlearn.provenance.missing_components_message`)."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{where}: not a Lightning checkpoint (no 'state_dict' dict in it)")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{where}: not a {model.__name__} checkpoint (no 'hyper_parameters' dict in it)")
    missing = [name for name in _required_arguments(model) if name not in hparams]
    if missing:
        raise CheckpointError(
            f"{where}: not a {model.__name__} checkpoint: its hyperparameters lack {', '.join(missing)}"
        )
    paths = sorted(k for k in hparams if isinstance(k, str) and k.startswith("_"))
    if paths:
        raise CheckpointError(
            f"{where}: refused: its hyperparameters name import paths ({', '.join(paths)}); seqlearn never "
            "imports what a checkpoint names"
        )
    needs = missing_components_message(checkpoint.get("seqlearn"))
    if needs is not None:
        raise CheckpointError(f"{where}: {needs}")


class SafeCheckpointLoading:
    """Mixin for LightningModules: ``load_from_checkpoint`` is Lightning's loader, always
    with ``weights_only=True``, its failures explained as :class:`CheckpointError`; the
    hyperparameter names of older releases are mapped to today's (:mod:`seqlearn.renamed`)."""

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``load_from_checkpoint`` with ``weights_only=True`` (see
        :mod:`seqlearn.checkpoint_loading`); ``weights_only=False`` is refused."""
        if weights_only is not True:
            raise ConfigError("seqlearn loads checkpoints with weights_only=True only: loading must never run code")
        loader = super().load_from_checkpoint  # type: ignore[misc]
        try:
            with loading_checkpoint():  # hyperparameter names of older releases map to today's
                return loader(checkpoint_path, map_location=map_location, hparams_file=hparams_file, strict=strict,
                              weights_only=True, **kwargs)
        except Exception as exc:
            # seqlearn's own errors already say what is wrong -- except an unknown component,
            # which may be a plugin the checkpoint was saved with and this environment lacks
            if isinstance(exc, SeqlearnError) and not isinstance(exc, UnknownComponentError):
                raise
            problem = _diagnose(checkpoint_path, cls, exc)
            if problem is None:
                raise
            raise problem from exc


def _diagnose(path: Any, model: type, exc: Exception) -> CheckpointError | None:
    """Why Lightning could not load ``path`` as a ``model``, or None when it is not the file's fault."""
    if isinstance(path, io.IOBase):
        if not path.seekable():
            return None
        path.seek(0)
    try:
        load_checkpoint(path, "cpu", model)
    except CheckpointError as problem:
        return problem
    except Exception:
        return None
    if isinstance(exc, RuntimeError) and "state_dict" in str(exc):
        first = str(exc).strip().splitlines()[0]
        return CheckpointError(
            f"{_name(path)}: the weights do not fit the {model.__name__} its hyperparameters describe ({first})"
        )
    if isinstance(exc, KeyError):  # an entry Lightning needs, such as "pytorch-lightning_version"
        return CheckpointError(f"{_name(path)}: not a Lightning checkpoint: it has no {exc} entry")
    return None


def takes_hyperparameters(model: type, hparams: dict[str, Any]) -> bool:
    """Whether ``model(**hparams)`` takes exactly these hyperparameters: every argument it
    requires, and no name it does not know (keys starting with ``_`` are left to the loader,
    which refuses them) -- how a checkpoint's model class is recognized."""
    names = {p.name for p in list(inspect.signature(model.__init__).parameters.values())[1:]}
    given = {k for k in hparams if not (isinstance(k, str) and k.startswith("_"))}
    return set(_required_arguments(model)) <= given <= names


def _required_arguments(model: type) -> list[str]:
    params = list(inspect.signature(model.__init__).parameters.values())[1:]
    return [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _name(path: Any) -> str:
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    return getattr(path, "name", None) or repr(path)
