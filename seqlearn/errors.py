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


class ExportError(SeqlearnError, ValueError):
    """A model or component cannot be exported for serving (the message names it and
    says why), or an exported graph does not reproduce the model's own outputs."""
