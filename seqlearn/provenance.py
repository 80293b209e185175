"""Whether the components a checkpoint was built with are available to rebuild it.

A model that builds its components through :mod:`seqlearn.registry` saves their
provenance beside the weights (``checkpoint["seqlearn"]["provenance"]``: one
``{"kind", "name", "distribution", "version", "module"}`` record per component, see
:class:`~seqlearn.registry.Provenance`).  When one of them is a plugin that is not
installed where the checkpoint is loaded, :func:`missing_components_message` says which
distribution to install -- :mod:`seqlearn.checkpoint_loading` raises it as a
:class:`~seqlearn.errors.CheckpointError` -- instead of an unknown-name error from deep in
the model.
"""
from __future__ import annotations

from typing import Any, Mapping

from . import registry

__all__ = ["checkpoint_record", "component_provenance", "missing_components", "missing_components_message"]


def component_provenance(components: Mapping[str, Any]) -> dict[str, dict[str, Any] | None]:
    """``{role: record}`` for ``{role: component}``: the provenance the registry stamped on
    each component when it built it, as a plain dict (None for None, or for a component no
    registry built)."""
    records = {}
    for role, component in components.items():
        prov = registry.provenance(component) if component is not None else None
        records[role] = None if prov is None else prov.as_dict()
    return records


def checkpoint_record(components: Mapping[str, Any]) -> dict[str, Any]:
    """What a model saves under ``checkpoint["seqlearn"]``: the seqlearn version and the
    :func:`component_provenance` of its ``components``, which loading checks with
    :func:`missing_components_message`."""
    from . import __version__

    return {"version": __version__, "provenance": component_provenance(components)}


def _available(kind: str, name: str) -> bool:
    reg = registry.registries.get(kind)
    if reg is None:
        return True  # a kind this seqlearn does not have: not for us to judge
    # a parametrized name ("spacy:de") is available when its base is
    return name in reg or (":" in name and name.split(":", 1)[0] in reg)


def missing_components(provenance: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The records of ``provenance`` (``{role: record or None}``) whose component no
    registry provides here, without importing any plugin."""
    if not isinstance(provenance, Mapping):
        return []
    return [
        dict(record)
        for record in provenance.values()
        if isinstance(record, Mapping) and isinstance(record.get("kind"), str) and isinstance(record.get("name"), str)
        and not _available(record["kind"], record["name"])
    ]


def _needs(record: Mapping[str, Any]) -> str:
    what = f"{registry._SINGULAR.get(record['kind'], record['kind'])} {record['name']!r}"
    dist = record.get("distribution")
    if dist:
        version = f" {record['version']}" if record.get("version") else ""
        return f"{what} from distribution {dist}{version}, which is not installed"
    return f"{what} registered by module {record.get('module') or '?'} (a notebook or script), which has not run"


def missing_components_message(seqlearn_record: Any) -> str | None:
    """What a checkpoint needs that is not available here, and how to get it, or None when
    nothing is missing.  ``seqlearn_record`` is the checkpoint's ``checkpoint["seqlearn"]``.

    A plugin is named with its distribution and version, and the remedy is ``pip install
    <distribution>``; a component registered by a notebook or script (no distribution)
    needs that code run first."""
    provenance = seqlearn_record.get("provenance") if isinstance(seqlearn_record, Mapping) else None
    missing = missing_components(provenance)
    if not missing:
        return None
    dists = sorted({r["distribution"] for r in missing if r.get("distribution")})
    remedies = [f"pip install {' '.join(dists)}"] if dists else []
    if any(not r.get("distribution") for r in missing):
        remedies.append("run the code that registers the module's components before loading")
    return f"this checkpoint needs {'; '.join(_needs(r) for r in missing)}: {'; '.join(remedies)}"
