"""seqlearn-mgu: the minimal gated unit as a seqlearn cell plugin, registered as ``mgu``.

Installed, it is found through its entry point; ``Seq2Seq(..., cell="mgu")`` and
``cell: mgu`` in a ``seqlearn fit`` config use it by name.
"""
from .cell import MGUCell

__all__ = ["MGUCell"]
