"""Translation models trained with other tools, as :class:`~seqlearn.Seq2Seq` models.

::

    from seqlearn.convert import convert

    model = convert("opennmt-py", "model_release.pt")        # an OpenNMT-py 3.x RNN checkpoint
    model.translate(["ein hund läuft ."], beam_size=5)      # the tool's own decoding rules
    model.save_pretrained("converted/")                     # seqlearn convert --from opennmt-py IN OUT

A converted model reproduces the tool's translations and scores: its network maps onto
seqlearn's components (with the options they have for it), and the tool's decoding rules
become the model's ``search_defaults``.  Reading the tool's files runs no code.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from ..errors import ConfigError
from ..seq2seq import Seq2Seq

__all__ = ["convert", "TOOLS"]

#: tool name -> the module whose ``convert(path, **hyperparameters)`` reads its models
TOOLS = {"opennmt-py": "opennmt_py", "joeynmt": "joeynmt"}


def convert(tool: str, path: str | os.PathLike, **hyperparameters: Any) -> Seq2Seq:
    """The model ``tool`` saved at ``path`` (a file or folder, as the tool writes it) as a
    Seq2Seq in eval mode; ``hyperparameters`` (``lr``, ``dropout``, ``freeze``...) go to it."""
    if tool not in TOOLS:
        raise ConfigError(f"convert: unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
    module = importlib.import_module(f"{__name__}.{TOOLS[tool]}")
    return module.convert(path, **hyperparameters)
