"""seqlearn-multihead-attention: multi-head additive attention, registered as attention ``multihead``.

Installed, it is found through its entry point; ``Seq2Seq(..., attention="multihead")``
(with ``attention_options={"heads": 4}``) and ``attention: multihead`` in a ``seqlearn fit``
config use it by name.
"""
from .attention import MultiHeadAdditiveAttention

__all__ = ["MultiHeadAdditiveAttention"]
