"""Quiet the third-party notices that a seqlearn command's user cannot act on.

:func:`quiet_third_party_notices` is called by seqlearn's entry points (the ``seqlearn``
command, ``python -m seqlearn.demo``), never on import: a program that imports seqlearn
sees Lightning's and torch's messages as they are.  It drops exactly two kinds:

* Lightning's advertisements, logged at INFO as "💡 Tip: ... install litlogger / litmodels";
* torch's FutureWarning that ``isinstance(treespec, LeafSpec)`` is deprecated, which
  Lightning's own ``utilities/_pytree.py`` triggers at every fit (Lightning's to fix).
"""
from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_third_party_notices"]

_LIGHTNING_INFO = "pytorch_lightning.utilities.rank_zero"


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip:")


def quiet_third_party_notices() -> None:
    """Drop the notices listed in the module docstring from this process's output (idempotent)."""
    log = logging.getLogger(_LIGHTNING_INFO)
    if not any(isinstance(f, _DropAdvertisements) for f in log.filters):
        log.addFilter(_DropAdvertisements())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")  # fmt: skip
