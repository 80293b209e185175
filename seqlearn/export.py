"""Export trained models for serving without seqlearn's training code.

::

    from seqlearn.export import export, export_checkpoint

    export(model, "exported/", format="torchscript")   # or format="onnx"; any model below
    export_checkpoint("lm.ckpt", "lm-exported/")       # a checkpoint file: seqlearn export --ckpt lm.ckpt --out lm-exported/

An export is a folder: the graphs (``*.pt`` TorchScript for ``torch.jit.load`` or C++
``torch::jit::load``; ``*.onnx`` opset 17 for onnxruntime), the vocabularies as
``seqlearn.vocab/1`` JSON and ``manifest.json`` naming each graph's file, inputs and
outputs.  :mod:`seqlearn.serving` (a standalone file: torch or onnxruntime, no seqlearn)
loads such a folder and decodes greedily, tags, continues prompts or classifies.

What exports, to both formats
-----------------------------
* :class:`~seqlearn.seq2seq.Seq2Seq` (every built-in decoder: ``bahdanau``, ``luong`` with
  or without input feeding, ``plain``; every attention; stacked layers; tied embeddings):

  - ``encoder``: ``src_ids (batch, src_len)``, ``src_lengths (batch,)`` -> the decoder's
    initial state, i.e. :meth:`Seq2Seq.start`: the encoder memory ``(batch, src_len,
    memory)``, the source ``mask``, the projected attention ``keys``, the bridged
    ``hidden.<layer>.<part>`` (``feed`` for input feeding, ``context`` for ``plain``);
  - ``step``: ``prev_tokens (N,)`` and that state -> ``log_probs (N, V)``,
    ``next.<name>`` for each state tensor a step changes (the manifest lists them under
    ``state.carried``) and ``attention (N, src_len)`` when the decoder attends.

* :class:`~seqlearn.tagger.Tagger`: ``emissions`` (``word_ids``, ``lengths``, and
  ``char_ids (batch, len, max_word_len)`` with char features -> ``(batch, len, K)``) and,
  with a CRF head, ``viterbi`` (below).
* :class:`~seqlearn.crf.CRF`: ``viterbi``: ``emissions (batch, time, K)``, ``mask``
  (bool prefix mask) -> the best path ``tags (batch, time)`` (-1 at padding) and its
  ``scores (batch,)``, obeying the CRF's tag scheme, as :meth:`CRF.viterbi` with
  ``top_k=1``.  A TorchScript-compiled loop over time: an ONNX ``Loop``.
* :class:`~seqlearn.language_model.LanguageModel` (any cell, plugin cells included: the
  step runs no loop over time; tied weights): ``step`` alone, the search protocol's
  :meth:`~seqlearn.language_model.LanguageModel.search_step`: ``prev_tokens (N,)`` and the
  state ``hidden.<layer>.<part> (N, hidden)`` -> ``log_probs (N, V)`` (``-inf`` for
  ``<pad>`` and ``<s>``) and ``next.hidden.<layer>.<part>``.  The state starts at zeros
  (the manifest's ``state.zeros`` gives the sizes) and a prompt is read through the step,
  one token at a time: the served model needs no packed sequences.
* :class:`~seqlearn.classifier.SequenceClassifier` (every built-in pooling, forward or
  bidirectional, single- or multi-label): ``probabilities``: ``word_ids (batch, len)``,
  ``lengths (batch,)`` (each >= 1) -> ``probabilities (batch, num_labels)`` (softmax, or
  sigmoids for multi-label), as :meth:`SequenceClassifier.predict` computes them.

Every graph takes any batch size and any lengths: it is traced (``viterbi``: compiled)
on one input, then loaded back from the file and checked against the model's own eager
outputs on inputs of other batch sizes and lengths (to 1e-5, relative beyond magnitude
1); a mismatch raises :class:`~seqlearn.errors.ExportError`.  The manifest records the
largest absolute difference.

What does not export (:class:`~seqlearn.errors.ExportError` names the component)
-------------------------------------------------------------------------------------
* Encoders over cells without a fused kernel (plugin cells, or ``use_fused=False``) in a
  Seq2Seq, Tagger or SequenceClassifier: they run a Python loop over time steps, which
  tracing would fix to one source length.
* Jordan-network classifiers (``jordan=True``): the same loop over time, each step reading
  the previous step's output (traced, the graph fails on any other text length).
* Language-model sampling (temperature, top-k, top-p) and beam search: Python loops in
  :mod:`seqlearn.search`, which run over the served step as for Seq2Seq.
* Beam search, sampling, n-best lists, length and coverage penalties: Python loops whose
  beams change shape.  The served step follows the search protocol, so
  :func:`seqlearn.search.beam_search` runs over it in Python.
* CRF ``top_k > 1``, marginals and log-partition (the tagger's confidence).
* Char-feature plugins whose output changes with the padded word width (the check
  fails), and any component whose Python code branches on tensor values: it is traced
  along the branch the example took, which the check catches only when another example
  takes the other branch.
* ``torch.export`` and the dynamo-based ONNX exporter: packed sequences (variable lengths
  in the fused RNN kernels) have data-dependent shapes, which ``torch.export`` refuses.
  Both formats here therefore go through TorchScript (``torch.jit.trace``/``script`` and
  ``torch.onnx.export(..., dynamo=False)``), which torch 2.13 deprecates but still ships.

:func:`export_checkpoint` (and ``seqlearn export --ckpt PATH --out DIR [--format
torchscript|onnx]``) loads a checkpoint file of any of these models -- the one whose
constructor takes exactly the checkpoint's hyperparameters -- and exports it.

Other models plug in with :func:`exporter`, building their graphs with
:func:`search_graphs` (any model with the search protocol ``start``/``step``; with
``encoder=False`` a model whose state starts at zeros and reads its context through
``step``, like a language model) or :func:`trace_graph` (any function of tensors, e.g.
a classifier's ``(ids, lengths) -> probabilities``), and writing them with
:func:`write_export`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import registry, serving
from .batching import Padded
from .char_features import CharBiLSTM, CharCNN
from .errors import ConfigError, ExportError
from .training import evaluating
from .vocab import Vocab

if TYPE_CHECKING:
    from .classifier import SequenceClassifier
    from .crf import CRF
    from .encoder import RNNEncoder
    from .language_model import LanguageModel
    from .seq2seq import Seq2Seq
    from .tagger import Tagger

__all__ = [
    "FORMATS", "ExportedGraph", "export", "export_checkpoint", "export_seq2seq", "export_tagger", "export_crf",
    "export_language_model", "export_classifier", "exporter", "trace_graph", "script_graph", "search_graphs",
    "write_export",
]

#: format -> file suffix
FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
OPSET = 17
TOLERANCE = 1e-5

Inputs = tuple[Tensor, ...]


# -- graphs ---------------------------------------------------------------------------------


@dataclass
class ExportedGraph:
    """A compiled graph with what is needed to save and check it.

    ``examples``: input tuples, the first one traced; ``expected``: the model's own eager
    outputs on each; ``axes``: ``{tensor name: {dim: axis name}}`` for the dims that vary
    between examples (ONNX dynamic axes); ``component``: how errors name it.
    """

    name: str
    compiled: torch.jit.ScriptModule
    inputs: list[str]
    outputs: list[str]
    examples: list[Inputs]
    expected: list[Inputs]
    axes: dict[str, dict[int, str]]
    component: str


class _Function(nn.Module):
    """Tensors in, a tuple of tensors out, around a function of a model.  It holds the
    model's children that the function calls, so their weights are the graph's
    parameters; the model itself is not a submodule (tracing walks every submodule, which
    a LightningModule without a trainer does not survive)."""

    def __init__(self, fn: Callable[..., Inputs], parts: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.__dict__["fn"] = fn

    def forward(self, *inputs: Tensor) -> Inputs:
        return self.fn(*inputs)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what tracing and the TorchScript-based ONNX exporter say about themselves:
    the checks below test every graph on other shapes than the traced ones."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message=r"(?s).*(no signature found|batch_size other than 1)")
        yield


@contextlib.contextmanager
def inference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` on the CPU, :func:`~seqlearn.training.evaluating` and with parameters that
    require no gradient -- as it is exported (tracing records no autograd) -- and back as it
    was afterwards."""
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    grads = [p.requires_grad for p in params]
    model.to("cpu").requires_grad_(False)
    try:
        with evaluating(model):
            yield model
    finally:
        for p, g in zip(params, grads):
            p.requires_grad_(g)
        model.to(device)


def _called_children(model: nn.Module, fn: Callable[..., Any], example: Inputs) -> dict[str, nn.Module]:
    """The children of ``model`` that ``fn(*example)`` runs (or runs a descendant of)."""
    called: set[int] = set()
    handle = nn.modules.module.register_module_forward_pre_hook(lambda m, _: called.add(id(m)))
    try:
        fn(*example)
    finally:
        handle.remove()
    return {name: child for name, child in model.named_children() if any(id(m) in called for m in child.modules())}


def _dynamic_axes(names: Sequence[str], tuples: Sequence[Inputs]) -> dict[str, dict[int, str]]:
    """The dims of each named tensor whose size differs between the tuples: dim 0 is
    ``batch``, dim d of tensor t ``t.d``."""
    axes = {}
    for i, name in enumerate(names):
        shapes = {tuple(t[i].shape) for t in tuples}
        dims = [d for d in range(len(next(iter(shapes)))) if len({s[d] for s in shapes}) > 1]
        if dims:
            axes[name] = {d: "batch" if d == 0 else f"{name}.{d}" for d in dims}
    return axes


def _as_tuple(out: Tensor | Sequence[Tensor]) -> Inputs:
    return (out,) if isinstance(out, Tensor) else tuple(out)


def _graph(name: str, compile: Callable[[], torch.jit.ScriptModule], reference: Callable[..., Any],
           inputs: Sequence[str], outputs: Sequence[str], examples: Sequence[Inputs], component: str) -> ExportedGraph:
    with torch.no_grad():
        expected = [_as_tuple(reference(*ex)) for ex in examples]
    if len(expected[0]) != len(outputs):
        raise ExportError(f"{component}: {len(expected[0])} outputs for the {len(outputs)} names {list(outputs)}")
    with _quiet():
        try:
            compiled = compile()
        except Exception as exc:
            raise ExportError(f"{component}: TorchScript cannot compile it ({type(exc).__name__}: {exc})") from exc
    axes = {**_dynamic_axes(inputs, examples), **_dynamic_axes(outputs, expected)}
    return ExportedGraph(name, compiled, list(inputs), list(outputs), list(examples), expected, axes, component)


def trace_graph(name: str, fn: Callable[..., Tensor | Inputs], model: nn.Module, inputs: Sequence[str],
                outputs: Sequence[str], examples: Sequence[Inputs], component: str,
                traceable: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> ExportedGraph:
    """A graph traced from ``fn(*tensors) -> tensor(s)``, a function of ``model`` (a model
    method, say) in :func:`inference_mode`.

    ``examples``: input tuples of different batch sizes and lengths; the first is traced,
    all are checked after saving against ``fn``'s own outputs.  ``traceable``: a context
    in which ``fn`` is traced (e.g. one that swaps a module for a trace-friendly
    equivalent); the expected outputs are computed outside it.
    """
    def compile() -> torch.jit.ScriptModule:
        with traceable():
            module = _Function(lambda *xs: _as_tuple(fn(*xs)), _called_children(model, fn, examples[0]))
            return torch.jit.trace(module, examples[0], check_trace=False)

    return _graph(name, compile, fn, inputs, outputs, examples, component)


def script_graph(name: str, module: nn.Module, reference: Callable[..., Any], inputs: Sequence[str],
                 outputs: Sequence[str], examples: Sequence[Inputs], component: str) -> ExportedGraph:
    """A graph compiled with ``torch.jit.script`` (loops over data-dependent lengths stay
    loops), checked against ``reference(*example)`` on each example."""
    return _graph(name, lambda: torch.jit.script(module), reference, inputs, outputs, examples, component)


# -- writing and checking ------------------------------------------------------------------------


def _save(graph: ExportedGraph, path: Path, format: str) -> None:
    with _quiet():
        try:
            if format == "torchscript":
                torch.jit.save(graph.compiled, str(path))
            else:
                torch.onnx.export(
                    graph.compiled, graph.examples[0], str(path), dynamo=False, opset_version=OPSET,
                    input_names=graph.inputs, output_names=graph.outputs, dynamic_axes=graph.axes,
                )
        except Exception as exc:
            raise ExportError(
                f"{graph.component}: cannot be written as {format} ({type(exc).__name__}: {exc})"
            ) from exc


def _difference(want: Tensor, got: Tensor) -> tuple[float, str | None]:
    """The largest absolute difference of ``got`` from ``want``, and what is wrong when
    the shapes differ, infinities (or NaN) are elsewhere or integer/bool values differ."""
    got = got.to(want.device)
    if got.shape != want.shape:
        return float("inf"), f"shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    if not want.is_floating_point():
        return (0.0, None) if torch.equal(got.to(want.dtype), want) else (float("inf"), "different values")
    finite = torch.isfinite(want)
    same_inf = torch.equal(got[~finite].nan_to_num(), want[~finite].nan_to_num())
    if not torch.equal(torch.isfinite(got), finite) or not same_inf:
        return float("inf"), "infinities or NaN in other places"
    if not finite.any():
        return 0.0, None
    err = (got.double() - want.double())[finite].abs()
    # relative beyond magnitude 1: float32 rounding alone exceeds 1e-5 on a log-probability of -1e3
    allowed = TOLERANCE * want.double()[finite].abs().clamp(min=1.0)
    diff = float(err.max())
    return diff, None if bool((err <= allowed).all()) else f"a difference of {diff:.3g}"


def _check(graph: ExportedGraph, path: Path, format: str) -> float:
    """Load ``path`` back as :mod:`seqlearn.serving` does and compare every example's
    outputs with the eager ones; the largest difference."""
    try:
        served = serving.Graph(path, format, graph.inputs, graph.outputs)
    except ImportError as exc:
        raise ExportError(f"checking an ONNX export needs onnxruntime ({exc}); install it or pass check=False") from exc
    worst = 0.0
    for example, expected in zip(graph.examples, graph.expected):
        try:
            got = served(**dict(zip(graph.inputs, example)))
        except Exception as exc:
            shapes = [tuple(t.shape) for t in example]
            raise ExportError(f"{graph.component}: the exported {format} graph fails on inputs shaped {shapes} "
                              f"({type(exc).__name__}: {exc})") from exc
        for name, want in zip(graph.outputs, expected):
            diff, problem = _difference(want, got[name])
            if problem is not None:
                raise ExportError(f"{graph.component}: exported output {name!r} does not reproduce the model "
                                  f"({problem}) on inputs shaped {[tuple(t.shape) for t in example]}; it was traced "
                                  f"on {[tuple(t.shape) for t in graph.examples[0]]}")
            worst = max(worst, diff)
    return worst


def write_export(directory: str | Path, format: str, graphs: Sequence[ExportedGraph], vocabs: dict[str, Vocab],
                 manifest: dict[str, Any], check: bool = True) -> Path:
    """Write ``graphs`` (as ``<name>.pt`` or ``<name>.onnx``), ``vocabs`` (as
    ``<name>_vocab.json``) and ``manifest.json`` (``manifest`` plus the files, each graph's
    inputs and outputs, versions and the largest difference found by the check) into
    ``directory``; with ``check``, load each graph back and check it first (see the
    module docstring).  Returns the directory."""
    from . import __version__

    if format not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}; got {format!r}")
    if format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ExportError("format='onnx' needs the onnx package (and onnxruntime to check and serve the export)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries, checked = {}, {}
    for graph in graphs:
        path = directory / f"{graph.name}{FORMATS[format]}"
        _save(graph, path, format)
        if check:
            checked[graph.name] = _check(graph, path, format)
        entries[graph.name] = {"file": path.name, "inputs": graph.inputs, "outputs": graph.outputs}
    for name, vocab in vocabs.items():
        vocab.save(directory / f"{name}_vocab.json")
    full = {
        "format": serving.FORMAT, "backend": format, **manifest, "graphs": entries,
        "vocabs": {name: f"{name}_vocab.json" for name in vocabs},
        "versions": {"seqlearn": __version__, "torch": torch.__version__,
                     **({"onnx_opset": OPSET} if format == "onnx" else {})},
        "checked": {"tolerance": TOLERANCE, "relative_beyond_magnitude": 1.0, "max_abs_difference": checked}
        if check else None,
    }
    (directory / serving.MANIFEST).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return directory


# -- building blocks shared by the model exporters ---------------------------------------------------


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


def _mask(lengths: Tensor, width: int) -> Tensor:
    """True on the first ``lengths[...]`` of ``width`` positions: ``(*lengths.shape, width)``."""
    return torch.arange(width) < lengths.unsqueeze(-1)


def _random_ids(vocab: Vocab, shape: Sequence[int], gen: torch.Generator) -> Tensor:
    """Random ids of non-special tokens (of any token if the vocabulary has only specials)."""
    low = len(vocab.specials) if len(vocab) > len(vocab.specials) else 0
    return torch.randint(low, len(vocab), tuple(shape), generator=gen)


def _sequences(vocab: Vocab, lengths: Sequence[Sequence[int]], seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``(ids (batch, max_len), lengths (batch,))`` batches of random tokens, one per list
    of lengths, padded with the pad index."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for lens in lengths:
        lens_t = torch.tensor(lens)
        ids = _random_ids(vocab, (len(lens), max(lens)), gen).masked_fill(~_mask(lens_t, max(lens)), vocab.pad_index)
        batches.append((ids, lens_t))
    return batches


def _char_ids(vocab: Vocab, lengths: Tensor, width: int, seed: int) -> Tensor:
    """Random characters ``(batch, max_len, width)`` of words of 1 to ``width`` characters
    (the first word exactly ``width``), padding words all padding."""
    gen = torch.Generator().manual_seed(seed)
    shape = (len(lengths), int(lengths.max()))
    word_lengths = torch.randint(1, width + 1, shape, generator=gen).masked_fill(~_mask(lengths, shape[1]), 0)
    word_lengths[0, 0] = width
    return _random_ids(vocab, (*shape, width), gen).masked_fill(_mask(word_lengths, width).logical_not(),
                                                                 vocab.pad_index)


#: lengths of the example batches: the first is traced; the others differ in batch size
#: and length (one sentence, unsorted lengths, a length of 1)
EXAMPLE_LENGTHS = ([4, 2], [7, 1, 5], [3])


def search_graphs(model: nn.Module, start: Callable[[Padded], dict[str, Tensor]],
                  step: Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor], Tensor | None]],
                  sources: Sequence[tuple[Tensor, Tensor]], vocab_size: int, component: str, *,
                  encoder: bool = True) -> tuple[list[ExportedGraph], dict[str, Any]]:
    """Graphs ``encoder`` and ``step`` of a model with the search protocol of
    :mod:`seqlearn.search`: ``start(Padded) -> state`` and ``step(prev, state) ->
    (log_probs, state, attn)``, in :func:`inference_mode`.

    ``encoder``: ``src_ids``, ``src_lengths`` -> the state tensors (names in the order
    ``start`` gives them).  ``step``: ``prev_tokens`` and the state tensors ->
    ``log_probs``, ``next.<name>`` for each *carried* state tensor (one the step
    replaces; the others pass through unchanged) and ``attention`` if the step gives one.
    ``sources``: ``(ids, lengths)`` batches, as :func:`trace_graph`'s examples.

    Returns the graphs and, for the manifest, ``{"names": [...], "carried": [...]}``.
    With ``encoder=False`` only ``step`` is exported, and ``"zeros"`` gives each state
    tensor's size past the batch dim: for a model whose state starts at zeros and reads
    its context through ``step`` (a language model), which needs no packed sequences.
    """
    states = [start(Padded(ids, lengths)) for ids, lengths in sources]
    names = list(states[0])
    gen = torch.Generator().manual_seed(1)
    prevs = [torch.randint(0, vocab_size, (ids.size(0),), generator=gen) for ids, _ in sources]
    _, after, attn = step(prevs[0], states[0])
    if list(after) != names:
        raise ExportError(f"{component}: the step changes the state's keys from {names} to {list(after)}")
    carried = [n for n in names if after[n] is not states[0][n]]
    attends = attn is not None

    def encode(ids: Tensor, lengths: Tensor) -> Inputs:
        state = start(Padded(ids, lengths))
        return tuple(state[n] for n in names)

    def step_flat(prev: Tensor, *tensors: Tensor) -> Inputs:
        log_probs, state, attention = step(prev, dict(zip(names, tensors)))
        return (log_probs, *(state[n] for n in carried), *((attention,) if attends else ()))

    graphs, info = [], {"names": names, "carried": carried}
    if encoder:
        graphs.append(trace_graph("encoder", encode, model, ["src_ids", "src_lengths"], names, list(sources),
                                  f"{component} encoder"))
    else:
        info["zeros"] = {n: list(states[0][n].shape[1:]) for n in names}
    step_examples = [(prev, *(s[n] for n in names)) for prev, s in zip(prevs, states)]
    outputs = ["log_probs", *(f"next.{n}" for n in carried), *(["attention"] if attends else [])]
    graphs.append(trace_graph("step", step_flat, model, ["prev_tokens", *names], outputs, step_examples,
                              f"{component} step"))
    return graphs, info


# -- CRF Viterbi ---------------------------------------------------------------------------------


class _Viterbi(nn.Module):
    """The best path under fixed potentials, written for ``torch.jit.script``: the loops
    over time stay loops (an ONNX ``Loop``), so any length runs.  The same recursion as
    :func:`seqlearn.crf.viterbi` with ``top_k=1`` (float64; a padded step keeps the
    scores and the backtrace stands still there), without its in-place buffers, which
    TorchScript cannot compile."""

    def __init__(self, start: Tensor, transitions: Tensor, end: Tensor):
        super().__init__()
        self.register_buffer("start", start.detach().double().clone())
        self.register_buffer("transitions", transitions.detach().double().clone())
        self.register_buffer("end", end.detach().double().clone())

    def forward(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        em = emissions.double()
        score = self.start + em[:, 0]  # (batch, K): best path ending in each tag
        backpointers: list[Tensor] = []
        for t in range(1, em.size(1)):
            best, prev = (score.unsqueeze(2) + self.transitions).max(1)
            score = torch.where(mask[:, t].unsqueeze(1), best + em[:, t], score)
            backpointers.append(prev)
        best_score, tag = (score + self.end).max(1)
        tags = [tag]
        for t in range(em.size(1) - 1, 0, -1):
            prev = backpointers[t - 1].gather(1, tag.unsqueeze(1)).squeeze(1)
            tag = torch.where(mask[:, t], prev, tag)
            tags.append(tag)
        # stacked backwards, then flipped: ONNX has no in-place list reversal
        path = torch.stack(tags, 1).flip(1)
        keep = mask & torch.isfinite(best_score).unsqueeze(1)
        return path.masked_fill(~keep, -1), best_score.to(emissions.dtype)


def viterbi_graph(crf: CRF, examples: Sequence[Inputs], component: str = "CRF viterbi") -> ExportedGraph:
    """The ``viterbi`` graph of ``crf`` (its potentials with the scheme's constraints),
    checked against :meth:`CRF.viterbi` on ``examples`` of ``(emissions, mask)``."""
    def reference(emissions: Tensor, mask: Tensor) -> Inputs:
        result = crf.viterbi(emissions, mask)
        return result.tags[:, 0], result.scores[:, 0]

    return script_graph("viterbi", _Viterbi(*crf.potentials()), reference, ["emissions", "mask"], ["tags", "scores"],
                        examples, component)


# -- the model exporters -------------------------------------------------------------------------

#: "module:Class" -> the function exporting such models, see :func:`exporter`
EXPORTERS: dict[str, Callable[..., Path]] = {}


def exporter(class_path: str) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Register ``fn(model, directory, format="torchscript", *, check=True) -> Path`` as the
    exporter of models of class ``"module:Class"`` (and their subclasses), for :func:`export`.
    Named by path so that this module imports no model (nor Lightning)."""
    def register(fn: Callable[..., Path]) -> Callable[..., Path]:
        EXPORTERS[class_path] = fn
        return fn

    return register


def export(model: nn.Module, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export any model with a registered exporter (Seq2Seq, Tagger, CRF, LanguageModel,
    SequenceClassifier) into ``directory``."""
    for cls in type(model).__mro__:
        fn = EXPORTERS.get(f"{cls.__module__}:{cls.__qualname__}")
        if fn is not None:
            return fn(model, directory, format, check=check)
    raise ExportError(f"no exporter for {type(model).__name__}; exportable: {', '.join(sorted(EXPORTERS))}")


def _checkpoint_classes() -> list[type]:
    """The LightningModules with a registered exporter (those that have checkpoints)."""
    classes = []
    for path in EXPORTERS:
        module, name = path.split(":")
        cls = getattr(importlib.import_module(module), name)
        if hasattr(cls, "load_from_checkpoint"):
            classes.append(cls)
    return classes


def _fits(cls: type, hparams: dict[str, Any]) -> bool:
    """Whether ``cls(**hparams)`` takes exactly these hyperparameters: every argument it
    requires, and no name it does not know (keys starting with ``_`` are left to the loader,
    which refuses them)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    names = {p.name for p in params}
    required = {p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    given = {k for k in hparams if not (isinstance(k, str) and k.startswith("_"))}
    return required <= given <= names


def export_checkpoint(path: str | Path, directory: str | Path, format: str = "torchscript", *,
                      check: bool = True) -> Path:
    """Load a seqlearn checkpoint file -- of whichever exportable model (Seq2Seq, Tagger,
    LanguageModel, SequenceClassifier) its hyperparameters are the arguments of -- on the
    CPU and :func:`export` it (``seqlearn export``).  Checkpoints are read as data only
    (:mod:`seqlearn.checkpoint_loading`); one of no exportable model raises
    :class:`~seqlearn.errors.ExportError`.  Returns ``directory``."""
    from .checkpoint_loading import load_checkpoint

    checkpoint = load_checkpoint(path, "cpu")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    classes = _checkpoint_classes()
    matches = [cls for cls in classes if isinstance(hparams, dict) and _fits(cls, hparams)]
    if len(matches) != 1:
        names = ", ".join(cls.__name__ for cls in classes)
        raise ExportError(f"{path}: not a checkpoint of an exportable model ({names}): "
                          + ("no hyperparameters in it" if not isinstance(hparams, dict)
                             else f"its hyperparameters fit {len(matches)} of them"))
    model = matches[0].load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return export(model, directory, format, check=check)


def _components(model: nn.Module) -> dict[str, str]:
    """The registry name of each registry-built component the model records."""
    if not hasattr(model, "provenance"):
        return {}
    return {key: prov["name"] for key, prov in model.provenance().items() if prov is not None}


@exporter("seqlearn.seq2seq:Seq2Seq")
def export_seq2seq(model: Seq2Seq, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export a :class:`~seqlearn.seq2seq.Seq2Seq` as graphs ``encoder`` and ``step`` (see the
    module docstring) with vocabularies ``src`` and ``tgt``; serve with
    :class:`seqlearn.serving.ExportedSeq2Seq`.  Returns ``directory``."""
    _check_traceable(model.encoder, "Seq2Seq encoder")
    with inference_mode(model):
        sources = _sequences(model.src_vocab, EXAMPLE_LENGTHS)
        graphs, state = search_graphs(model, model.start, model.step, sources, len(model.tgt_vocab), "Seq2Seq")
        manifest = {
            "model": "seq2seq", "state": state, "tokenizer": model.hparams.src_tokenizer,
            "target_tokenizer": model.hparams.tgt_tokenizer, "components": _components(model),
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


def _tagger_examples(tagger: Tagger) -> list[Inputs]:
    """Word ids, lengths (and char ids, of another word width in each example) of random sentences."""
    examples: list[Inputs] = []
    for k, (ids, lengths) in enumerate(_sequences(tagger.word_vocab, EXAMPLE_LENGTHS)):
        chars = () if tagger.char_vocab is None else (_char_ids(tagger.char_vocab, lengths, 3 + 2 * k, seed=k),)
        examples.append((ids, lengths, *chars))
    return examples


@exporter("seqlearn.tagger:Tagger")
def export_tagger(model: Tagger, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export a :class:`~seqlearn.tagger.Tagger` as graph ``emissions`` and, with a CRF head,
    ``viterbi`` (see the module docstring), with vocabularies ``words``, ``tags`` and
    ``chars``; serve with :class:`seqlearn.serving.ExportedTagger`.  Returns ``directory``."""
    _check_traceable(model.encoder, "Tagger encoder")
    with inference_mode(model):
        examples = _tagger_examples(model)
        char_pad = None if model.char_vocab is None else model.char_vocab.pad_index

        def emissions(word_ids: Tensor, lengths: Tensor, char_ids: Tensor | None = None) -> Tensor:
            chars = None if char_ids is None else Padded(char_ids, (char_ids != char_pad).sum(-1))
            return model(Padded(word_ids, lengths), chars)

        inputs = ["word_ids", "lengths", *(["char_ids"] if model.char_vocab is not None else [])]
        graphs = [trace_graph("emissions", emissions, model, inputs, ["emissions"], examples,
                              "Tagger emission network", traceable=lambda: _traceable_chars(model))]
        if model.crf is not None:
            scores = [(emissions(*ex), _mask(ex[1], ex[0].size(1))) for ex in examples]
            graphs.append(viterbi_graph(model.crf, scores, "Tagger CRF viterbi"))
        vocabs = {"words": model.word_vocab, "tags": model.tag_vocab}
        if model.char_vocab is not None:
            vocabs["chars"] = model.char_vocab
        manifest = {
            "model": "tagger", "tag_names": list(model.tag_names), "lowercase": model.hparams.lowercase,
            "head": model.hparams.head, "scheme": model.scheme, "tokenizer": model.hparams.tokenizer,
        }
        return write_export(directory, format, graphs, vocabs, manifest, check)


@exporter("seqlearn.crf:CRF")
def export_crf(crf: CRF, directory: str | Path, format: str = "torchscript", *, check: bool = True) -> Path:
    """Export a :class:`~seqlearn.crf.CRF`'s best-path decoding as graph ``viterbi``; serve
    with :class:`seqlearn.serving.ExportedCRF`.  Returns ``directory``."""
    gen = torch.Generator().manual_seed(0)
    with inference_mode(crf):
        examples = [
            (torch.randn(len(lens), max(lens), crf.num_tags, generator=gen), _mask(torch.tensor(lens), max(lens)))
            for lens in EXAMPLE_LENGTHS
        ]
        manifest = {"model": "crf", "tag_names": None if crf.tag_names is None else list(crf.tag_names),
                    "scheme": crf.scheme}
        return write_export(directory, format, [viterbi_graph(crf, examples)], {}, manifest, check)


@exporter("seqlearn.language_model:LanguageModel")
def export_language_model(model: LanguageModel, directory: str | Path, format: str = "torchscript", *,
                          check: bool = True) -> Path:
    """Export a :class:`~seqlearn.language_model.LanguageModel` as graph ``step`` alone (see
    the module docstring) with vocabulary ``tokens``; serve with
    :class:`seqlearn.serving.ExportedLanguageModel`, which reads prompts through the step.
    Returns ``directory``."""
    with inference_mode(model):
        contexts = _sequences(model.vocab, EXAMPLE_LENGTHS)
        graphs, state = search_graphs(model, model.start, model.search_step, contexts, len(model.vocab),
                                      "LanguageModel", encoder=False)
        manifest = {"model": "language_model", "state": state, "tokenizer": model.hparams.tokenizer,
                    "lowercase": model.hparams.lowercase}
        return write_export(directory, format, graphs, {"tokens": model.vocab}, manifest, check)


@exporter("seqlearn.classifier:SequenceClassifier")
def export_classifier(model: SequenceClassifier, directory: str | Path, format: str = "torchscript", *,
                      check: bool = True) -> Path:
    """Export a :class:`~seqlearn.classifier.SequenceClassifier` as graph ``probabilities``
    (see the module docstring) with vocabularies ``words`` and ``labels``; serve with
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
                            _sequences(model.vocab, EXAMPLE_LENGTHS), component)
        manifest = {"model": "classifier", "labels": list(model.labels), "multi_label": model.multi_label,
                    "threshold": model.hparams.threshold, "tokenizer": model.hparams.tokenizer,
                    "lowercase": model.hparams.lowercase}
        return write_export(directory, format, [graph], {"words": model.vocab, "labels": model.label_vocab},
                            manifest, check)
