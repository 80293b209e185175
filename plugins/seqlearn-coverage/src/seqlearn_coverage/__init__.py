"""seqlearn-coverage: an attention decoder with a coverage vector, registered as decoder ``coverage``.

Installed, it is found through its entry point; ``Seq2Seq(..., decoder="coverage")`` and
``decoder: coverage`` in a ``seqlearn fit`` config use it by name.
"""
from .decoder import CoverageDecoder

__all__ = ["CoverageDecoder"]
