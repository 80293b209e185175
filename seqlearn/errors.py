"""Errors raised by seqlearn.

Every error seqlearn raises on purpose derives from :class:`SeqlearnError`, so a
caller can catch ours without catching bugs.  Errors about input data name the
file and the line (``path:line: message``) so the user can open the culprit.
"""
from __future__ import annotations

import os


class SeqlearnError(Exception):
    """Base class of all seqlearn errors."""


class DataError(SeqlearnError, ValueError):
    """Malformed input data.  ``str(err)`` reads ``path:line: message``.

    >>> str(DataError("TSV line has no tab", path="pairs.tsv", line=3))
    'pairs.tsv:3: TSV line has no tab'
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)

    def __reduce__(self) -> tuple:
        # from a worker process (corpus preparation) with its file and line intact
        return type(self), (self.message, self.path, self.line)


class VocabError(SeqlearnError, ValueError):
    """A vocabulary is used in a way it cannot support (unknown token without <unk>, bad file...)."""


class ConfigError(SeqlearnError, ValueError):
    """A configuration or argument value that cannot be built."""


class RegistryError(SeqlearnError, LookupError):
    """Base class of registry errors."""


class UnknownComponentError(RegistryError):
    """No component of that kind is registered under that name."""


class DuplicateComponentError(RegistryError):
    """Two providers claim the same name in one registry."""


class PluginLoadError(RegistryError, ImportError):
    """An entry point could not be imported; the original exception is chained."""


class TrainingError(SeqlearnError, RuntimeError):
    """Training cannot go on as configured; the message names the batch and what to change."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite (``on_nonfinite="stop"``)."""


class BatchMemoryError(TrainingError, MemoryError):
    """A batch did not fit in memory; the message says which budget to lower."""


class InputError(SeqlearnError, TypeError):
    """An argument of a type seqlearn cannot use: ``translate(None)``, a token list
    holding numbers, bytes where text is expected."""


class ShapeError(SeqlearnError, ValueError):
    """A tensor of the wrong shape reached a component; the message names the component
    (registry name and class), the argument, and the expected and actual shapes."""

    @classmethod
    def of(cls, component: str, what: str, value: object, expected: str) -> "ShapeError":
        """``component: what has shape (...) [of dtype], expected ...`` for a tensor ``value``."""
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
        got = type(value).__name__ if shape is None else f"shape {tuple(shape)}"
        if dtype is not None and "bool" in expected and str(dtype) != "torch.bool":
            got += f" of {dtype}"
        return cls(f"{component}: {what} has {got}, expected {expected}")


class CheckpointError(SeqlearnError, ValueError):
    """A file that is not a checkpoint seqlearn can load safely: not a PyTorch file, not
    a checkpoint of this model class, or one holding Python objects whose unpickling
    would run code (refused: checkpoints load with ``torch.load(weights_only=True)``)."""


class TruncationWarning(UserWarning):
    """An input longer than a model accepts was cut to its maximum length."""


def check_hyperparameters(owner: str, *, positive: dict[str, object] = {}, fraction: dict[str, object] = {}) -> None:
    """Raise a :class:`ConfigError` naming ``owner`` unless every ``positive`` value is an
    int >= 1 (sizes, layer counts) and every ``fraction`` value a number in [0, 1)
    (dropout probabilities)."""
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{owner}: {name} must be an int >= 1, got {value!r}")
    for name, value in fraction.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ConfigError(f"{owner}: {name} must be a number in [0, 1), got {value!r}")


class ExportError(SeqlearnError, ValueError):
    """A model or component cannot be exported for serving (the message names it and
    says why), or an exported graph does not reproduce the model's own outputs."""
