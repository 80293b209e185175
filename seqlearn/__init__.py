"""seqlearn: sequence-to-sequence NLP with recurrent networks.

Heavy submodules (torch, Lightning) load on first use, so ``seqlearn plugins`` and
``import seqlearn`` stay quick.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import registry
from .errors import (
    BatchMemoryError,
    CheckpointError,
    ConfigError,
    DataError,
    DuplicateComponentError,
    ExportError,
    InputError,
    NonFiniteLossError,
    PluginLoadError,
    RegistryError,
    SeqlearnError,
    ShapeError,
    TrainingError,
    TruncationWarning,
    UnknownComponentError,
    VocabError,
)
from .vocab import Vocab

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "TranslationDataModule": "datamodules",
    "TaggingDataModule": "tagging_data",
    "Seq2Seq": "seq2seq",
    "Ensemble": "ensemble",
    "Hypothesis": "search",
    "CRF": "crf",
    "Tagger": "tagger",
    "LanguageModel": "language_model",
    "LanguageModelDataModule": "language_model_data",
    "SequenceClassifier": "classifier",
    "ClassificationDataModule": "classification_data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'seqlearn' has no attribute {name!r}")


__all__ = [
    "registry",
    "Vocab",
    "BatchMemoryError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DuplicateComponentError",
    "ExportError",
    "InputError",
    "NonFiniteLossError",
    "PluginLoadError",
    "RegistryError",
    "SeqlearnError",
    "ShapeError",
    "TrainingError",
    "TruncationWarning",
    "UnknownComponentError",
    "VocabError",
    *_LAZY,
]
