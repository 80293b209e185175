"""Graphs of a model's functions: traced or compiled, with the examples to check them on.

:func:`trace_graph` traces any function of tensors, :func:`script_graph` compiles a
module with ``torch.jit.script`` and :func:`search_graphs` builds the ``encoder`` and
``step`` graphs of a model with the search protocol.  Each result is an
:class:`ExportedGraph`, which :func:`seqlearn.export.write_export` saves and checks.
See ``docs/export.md``.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..batching import Padded
from ..errors import ExportError
from ..training import evaluating

Inputs = tuple[Tensor, ...]


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
def quiet_tracing() -> Iterator[None]:
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
    with quiet_tracing():
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


def search_graphs(model: nn.Module, start: Callable[[Padded], dict[str, Tensor]],
                  step: Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor], Tensor | None]],
                  sources: Sequence[tuple[Tensor, Tensor]], vocab_size: int, component: str, *,
                  encoder: bool = True) -> tuple[list[ExportedGraph], dict[str, Any]]:
    """Graphs ``encoder`` and ``step`` of a model with the search protocol
    (:class:`seqlearn.protocols.SearchModel`): ``start(Padded) -> state`` and its
    ``search_step`` as ``step(prev, state) -> (log_probs, state, attn)``, in :func:`inference_mode`.

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

