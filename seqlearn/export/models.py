"""The exporters of seqlearn's own models, registered with :func:`~seqlearn.export.exporter`:
which graphs each model exports and what its manifest says.  See ``docs/export.md``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import registry
from ..batching import Padded
from ..char_features import CharBiLSTM, CharCNN
from ..classifier import SequenceClassifier
from ..crf import CRF, viterbi
from ..encoder import RNNEncoder
from ..errors import ExportError
from ..language_model import LanguageModel
from ..seq2seq import Seq2Seq
from ..tagger import Tagger
from .dispatch import exporter
from .examples import EXAMPLE_LENGTHS, prefix_mask, random_emissions, random_sequences, tagger_examples
from .graphs import ExportedGraph, Inputs, inference_mode, script_graph, search_graphs, trace_graph
from .writing import write_export


def _check_traceable(encoder: RNNEncoder, component: str) -> None:
    """Raise ExportError unless every layer of ``encoder`` runs a fused kernel (the step
    loop over time would be traced for one length)."""
    for i, layer in enumerate(encoder.layers):
        if not layer.use_fused:
            cell = registry.describe(layer.cells[0], "cells")
            raise ExportError(
                f"{component}: {cell} in layer {i} runs a Python loop over time steps, which an export would fix to "
                "the traced source length; encoders export with the fused built-in cells rnn, gru and lstm "
                "(use_fused=True)"
            )


def _components(model: nn.Module) -> dict[str, str]:
    """The registry name of each registry-built component the model records."""
    if not hasattr(model, "provenance"):
        return {}
    return {key: prov["name"] for key, prov in model.provenance().items() if prov is not None}


class _BestPath(nn.Module):
    """:func:`seqlearn.crf.viterbi` with ``top_k=1`` under a CRF's potentials (its scheme's
    constraints included), held as buffers: the module ``torch.jit.script`` compiles, its
    loops over time staying loops (an ONNX ``Loop``), so any length runs."""

    def __init__(self, crf: CRF):
        super().__init__()
        start, transitions, end = (p.detach().clone() for p in crf.potentials())
        self.register_buffer("start", start)
        self.register_buffer("transitions", transitions)
        self.register_buffer("end", end)

    def forward(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        best = viterbi(emissions, mask, self.start, self.transitions, self.end, 1)
        return best.tags[:, 0], best.scores[:, 0]


def viterbi_graph(crf: CRF, examples: Sequence[Inputs], component: str = "CRF viterbi") -> ExportedGraph:
    """The ``viterbi`` graph of ``crf`` (its potentials with the scheme's constraints),
    checked against :meth:`CRF.viterbi` on ``examples`` of ``(emissions, mask)``."""
    def reference(emissions: Tensor, mask: Tensor) -> Inputs:
        result = crf.viterbi(emissions, mask)
        return result.tags[:, 0], result.scores[:, 0]

    return script_graph("viterbi", _BestPath(crf), reference, ["emissions", "mask"], ["tags", "scores"],
                        examples, component)


@exporter(Seq2Seq)
def export_seq2seq(model: Seq2Seq, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export a :class:`~seqlearn.seq2seq.Seq2Seq` as graphs ``encoder`` and ``step`` (see
    ``docs/export.md``) with vocabularies ``src`` and ``tgt``; serve with
    :class:`seqlearn.serving.ExportedSeq2Seq`.  Returns ``directory``."""
    _check_traceable(model.encoder, "Seq2Seq encoder")
    with inference_mode(model):
        sources = random_sequences(model.src_vocab, EXAMPLE_LENGTHS)
        graphs, state = search_graphs(model, model.start, model.search_step, sources, len(model.tgt_vocab), "Seq2Seq")
        manifest = {
            "model": "seq2seq", "state": state, "tokenizer": model.hparams.src_tokenizer,
            "target_tokenizer": model.hparams.tgt_tokenizer, "components": _components(model),
            # a converted model reads sources without </s>; its tool's search rules travel for beam search
            "src_eos": bool(model.hparams.get("src_eos", True)),
            "search_defaults": dict(model.hparams.get("search_defaults") or {}),
        }
        # SentencePiece models travel as files beside the graphs: the server tokenizes text with them
        protos = model.hparams.get("tokenizer_models") or {}
        if protos:
            Path(directory).mkdir(parents=True, exist_ok=True)
            for side, proto in protos.items():
                (Path(directory) / f"{side}_tokenizer.model").write_bytes(proto)
            manifest["tokenizer_models"] = {side: f"{side}_tokenizer.model" for side in protos}
        return write_export(directory, format, graphs, {"src": model.src_vocab, "tgt": model.tgt_vocab}, manifest,
                            check)


class _WholeWidthChars(nn.Module):
    """A built-in char-feature extractor run on every word at the padded width, without
    the data-dependent trimming to non-empty words of its ``forward`` (which tracing
    would fix to one width).  The same numbers: its features do not depend on the padded
    width, and an empty word gets the zero vector."""

    def __init__(self, inner: CharCNN | CharBiLSTM):
        super().__init__()
        self.inner = inner

    def forward(self, chars: Tensor) -> Tensor:
        batch, length, width = chars.shape
        flat = chars.reshape(batch * length, width)
        lengths = (flat != self.inner.padding_idx).sum(-1)
        encode = self._bilstm if isinstance(self.inner, CharBiLSTM) else self.inner._encode
        encoded = encode(flat, lengths.clamp(min=1))
        return torch.where((lengths > 0).unsqueeze(-1), encoded, 0.0).view(batch, length, -1)

    def _bilstm(self, chars: Tensor, lengths: Tensor) -> Tensor:
        """:meth:`CharBiLSTM._encode` read from the unpacked outputs (forward half after the
        last character, backward half after the first): the same states, in the packed ->
        RNN -> unpacked pattern that the ONNX exporter turns into an RNN with sequence lengths."""
        lstm = self.inner.lstm
        packed = pack_padded_sequence(self.inner.embedding(chars), lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=chars.size(1))
        last = out.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.size(2))).squeeze(1)
        return torch.cat([last[:, : lstm.hidden_size], out[:, 0, lstm.hidden_size :]], -1)


@contextlib.contextmanager
def _traceable_chars(tagger: Tagger) -> Iterator[None]:
    inner = tagger.char_encoder
    if type(inner) not in (CharCNN, CharBiLSTM):  # plugins are traced as they are; the check tells
        yield
        return
    tagger.char_encoder = _WholeWidthChars(inner)
    try:
        yield
    finally:
        tagger.char_encoder = inner


@exporter(Tagger)
def export_tagger(model: Tagger, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export a :class:`~seqlearn.tagger.Tagger` as graph ``emissions`` and, with a CRF head,
    ``viterbi`` (see ``docs/export.md``), with vocabularies ``words``, ``tags`` and
    ``chars``; serve with :class:`seqlearn.serving.ExportedTagger`.  Returns ``directory``."""
    _check_traceable(model.encoder, "Tagger encoder")
    with inference_mode(model):
        examples = tagger_examples(model.word_vocab, model.char_vocab)
        char_pad = None if model.char_vocab is None else model.char_vocab.pad_index

        def emissions(word_ids: Tensor, lengths: Tensor, char_ids: Tensor | None = None) -> Tensor:
            chars = None if char_ids is None else Padded(char_ids, (char_ids != char_pad).sum(-1))
            return model(Padded(word_ids, lengths), chars)

        inputs = ["word_ids", "lengths", *(["char_ids"] if model.char_vocab is not None else [])]
        graphs = [trace_graph("emissions", emissions, model, inputs, ["emissions"], examples,
                              "Tagger emission network", traceable=lambda: _traceable_chars(model))]
        if model.crf is not None:
            scores = [(emissions(*ex), prefix_mask(ex[1], ex[0].size(1))) for ex in examples]
            graphs.append(viterbi_graph(model.crf, scores, "Tagger CRF viterbi"))
        vocabs = {"words": model.word_vocab, "tags": model.tag_vocab}
        if model.char_vocab is not None:
            vocabs["chars"] = model.char_vocab
        manifest = {
            "model": "tagger", "tag_names": list(model.tag_names), "lowercase": model.hparams.lowercase,
            "head": model.hparams.head, "scheme": model.scheme, "tokenizer": model.hparams.tokenizer,
        }
        return write_export(directory, format, graphs, vocabs, manifest, check)


@exporter(CRF)
def export_crf(crf: CRF, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export a :class:`~seqlearn.crf.CRF`'s best-path decoding as graph ``viterbi``; serve
    with :class:`seqlearn.serving.ExportedCRF`.  Returns ``directory``."""
    with inference_mode(crf):
        examples = random_emissions(crf.num_tags)
        manifest = {"model": "crf", "tag_names": None if crf.tag_names is None else list(crf.tag_names),
                    "scheme": crf.scheme}
        return write_export(directory, format, [viterbi_graph(crf, examples)], {}, manifest, check)


@exporter(LanguageModel)
def export_language_model(model: LanguageModel, directory: str | Path, format: str = "torchscript", *,
                          check: bool = True) -> Path:
    """Export a :class:`~seqlearn.language_model.LanguageModel` as graph ``step`` alone (see
    ``docs/export.md``) with vocabulary ``tokens``; serve with
    :class:`seqlearn.serving.ExportedLanguageModel`, which reads prompts through the step.
    Returns ``directory``."""
    with inference_mode(model):
        contexts = random_sequences(model.vocab, EXAMPLE_LENGTHS)
        graphs, state = search_graphs(model, model.start, model.search_step, contexts, len(model.vocab),
                                      "LanguageModel", encoder=False)
        manifest = {"model": "language_model", "state": state, "tokenizer": model.hparams.tokenizer,
                    "lowercase": model.hparams.lowercase}
        return write_export(directory, format, graphs, {"tokens": model.vocab}, manifest, check)


@exporter(SequenceClassifier)
def export_classifier(model: SequenceClassifier, directory: str | Path, format: str = "torchscript", *,
                      check: bool = True) -> Path:
    """Export a :class:`~seqlearn.classifier.SequenceClassifier` as graph ``probabilities``
    (see ``docs/export.md``) with vocabularies ``words`` and ``labels``; serve with
    :class:`seqlearn.serving.ExportedClassifier`.  Jordan networks are refused.  Returns
    ``directory``."""
    if model.hparams.jordan:
        cell = registry.describe(model.encoder.cells[0], "cells")
        raise ExportError(
            f"SequenceClassifier Jordan encoder ({cell}): it runs a Python loop over time steps, each reading the "
            "previous step's output, which an export would fix to the traced text length; classifiers export with "
            "the RNN encoder (jordan=False)"
        )
    _check_traceable(model.encoder, "SequenceClassifier encoder")
    with inference_mode(model):

        def probabilities(word_ids: Tensor, lengths: Tensor) -> Tensor:
            return model.probabilities(model(Padded(word_ids, lengths)))

        component = f"SequenceClassifier with {registry.describe(model.pooling, 'poolings')}"
        graph = trace_graph("probabilities", probabilities, model, ["word_ids", "lengths"], ["probabilities"],
                            random_sequences(model.vocab, EXAMPLE_LENGTHS), component)
        manifest = {"model": "classifier", "labels": list(model.labels), "multi_label": model.multi_label,
                    "threshold": model.hparams.threshold, "tokenizer": model.hparams.tokenizer,
                    "lowercase": model.hparams.lowercase}
        return write_export(directory, format, [graph], {"words": model.vocab, "labels": model.label_vocab},
                            manifest, check)
