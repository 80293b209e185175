"""Export trained models for serving without seqlearn's training code.

::

    from seqlearn.export import export, export_checkpoint

    export(model, "exported/", format="torchscript")   # or format="onnx"
    export_checkpoint("lm.ckpt", "lm-exported/")       # seqlearn export --ckpt lm.ckpt --out lm-exported/

What exports (Seq2Seq, Tagger, CRF, LanguageModel, SequenceClassifier), what does not,
the folder's layout and how other models plug in: ``docs/export.md``.
:mod:`seqlearn.serving` loads an export folder.
"""
from __future__ import annotations

from .dispatch import EXPORTERS, export, export_checkpoint, exporter
from .examples import EXAMPLE_LENGTHS
from .graphs import ExportedGraph, inference_mode, script_graph, search_graphs, trace_graph
from .models import export_classifier, export_crf, export_language_model, export_seq2seq, export_tagger
from .writing import FORMATS, OPSET, TOLERANCE, write_export

__all__ = [
    "FORMATS", "ExportedGraph", "export", "export_checkpoint", "export_seq2seq", "export_tagger", "export_crf",
    "export_language_model", "export_classifier", "exporter", "trace_graph", "script_graph", "search_graphs",
    "write_export", "EXPORTERS", "EXAMPLE_LENGTHS", "OPSET", "TOLERANCE", "inference_mode",
]
