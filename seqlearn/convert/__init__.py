"""Models trained with other tools, as seqlearn models::

    model = seqlearn.convert.convert("joeynmt", "models/de-en")
"""
from __future__ import annotations

import os

from ..errors import ConfigError
from ..seq2seq import Seq2Seq
from .joeynmt import convert_joeynmt

__all__ = ["convert", "convert_joeynmt"]

_CONVERTERS = {"joeynmt": convert_joeynmt}


def convert(tool: str, path: str | os.PathLike) -> Seq2Seq:
    """The model ``tool`` saved at ``path`` as a :class:`~seqlearn.Seq2Seq`."""
    if tool not in _CONVERTERS:
        raise ConfigError(f"convert: unknown tool {tool!r}; choose one of {', '.join(_CONVERTERS)}")
    return _CONVERTERS[tool](path)
