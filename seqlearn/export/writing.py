"""Writing an export folder: each graph saved, loaded back as :mod:`seqlearn.serving`
loads it and checked against the model's own outputs, the vocabularies and the manifest.
See ``docs/export.md``.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from .. import serving
from ..errors import ConfigError, ExportError
from ..vocab import Vocab
from .graphs import ExportedGraph, quiet_tracing

#: format -> file suffix
FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
OPSET = 17
TOLERANCE = 1e-5


def _save(graph: ExportedGraph, path: Path, format: str) -> None:
    with quiet_tracing():
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
    ``directory``; with ``check``, load each graph back and check it first (see
    ``docs/export.md``).  Returns the directory."""
    from .. import __version__

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

