"""Component registries: one decorator for built-ins, notebooks and plugins alike.

There is one registry per kind of component -- :data:`cells`, :data:`attentions`,
:data:`decoders`, :data:`tokenizers`, :data:`char_features` (word features from
characters, for taggers) and :data:`poolings` (sequence states to one vector, for
classifiers) -- fed in two ways:

* the :meth:`Registry.register` decorator, used by seqlearn's own modules, by a
  notebook cell and by a plugin module alike::

      from seqlearn import registry

      @registry.cells.register("mgu")
      class MGUCell(torch.nn.Module):
          ...

* entry points of installed distributions, in the group ``seqlearn.<kind>``.
  seqlearn declares its own built-ins this way too (see its ``pyproject.toml``), so a
  plugin package is discovered exactly like a built-in::

      [project.entry-points."seqlearn.cells"]
      mgu = "my_plugin.cells:MGUCell"

Entry points are imported only when their name is asked for: a plugin that fails to
import breaks nothing else, and asking for it raises :class:`PluginLoadError` naming
the entry point and its distribution, with the import error chained.  Entry points are
scanned once and cached; :func:`refresh` rescans after ``pip install`` in a running kernel.

Unlike catalogue, a name is never silently overwritten: two providers of one name are a
:class:`DuplicateComponentError` naming both, and nothing shadows a built-in.  Running a
notebook cell again re-registers the same ``module.qualname`` and simply replaces it.

:meth:`Registry.build` constructs a component and stamps it with its
:class:`Provenance` (kind, name, distribution, version), which checkpoints record.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import importlib.metadata as md
import site
import sysconfig
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from .errors import ConfigError, DuplicateComponentError, PluginLoadError, UnknownComponentError

KINDS = ("cells", "attentions", "decoders", "tokenizers", "char_features", "poolings")
_SINGULAR = {
    "cells": "cell",
    "attentions": "attention",
    "decoders": "decoder",
    "tokenizers": "tokenizer",
    "char_features": "char feature extractor",
    "poolings": "pooling",
}
BUILTIN_DISTRIBUTION = "seqlearn"


@dataclass(frozen=True)
class Provenance:
    """Where a component comes from.  ``distribution`` is None for one registered in a
    notebook or script that no installed distribution provides."""

    kind: str
    name: str
    distribution: str | None
    version: str | None
    module: str | None = None

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    @property
    def origin(self) -> str:
        """``built-in``, ``dist version``, or ``local (module)``."""
        if self.builtin:
            return f"built-in (seqlearn {self.version})"
        if self.distribution is not None:
            return f"{self.distribution} {self.version}"
        return f"local ({self.module})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Entry:
    obj: Any
    provenance: Provenance


# -- discovery caches (cleared by refresh) --------------------------------------------

_entry_point_cache: dict[str, dict[str, list[md.EntryPoint]]] | None = None
_module_dists_cache: dict[str, list[str]] | None = None


def _entry_points(group: str) -> dict[str, list[md.EntryPoint]]:
    """Entry points of ``group`` by name, one per distribution (first on sys.path wins,
    as it does for imports; stale duplicate metadata of one distribution is ignored)."""
    global _entry_point_cache
    if _entry_point_cache is None:
        cache: dict[str, dict[str, list[md.EntryPoint]]] = {f"seqlearn.{k}": {} for k in KINDS}
        for dist in md.distributions():
            for ep in dist.entry_points:
                if ep.group not in cache:
                    continue
                eps = cache[ep.group].setdefault(ep.name, [])
                if not any(_dist_name(e) == _dist_name(ep) for e in eps):
                    eps.append(ep)
        _entry_point_cache = cache
    return _entry_point_cache[group]


def _dist_name(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else _canonical(dist.metadata["Name"])


def _dist_version(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else dist.version


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _distribution_of_module(module: str) -> tuple[str | None, str | None]:
    global _module_dists_cache
    if _module_dists_cache is None:
        _module_dists_cache = md.packages_distributions()
    dists = _module_dists_cache.get(module.split(".")[0], [])
    if not dists:
        return None, None
    name = dists[0]
    try:
        return _canonical(name), md.version(name)
    except md.PackageNotFoundError:
        return _canonical(name), None


def refresh() -> None:
    """Forget cached entry points and import caches, so a distribution installed in the
    running interpreter (``%pip install`` in a notebook) is found without a restart.

    New ``.pth`` files in site-packages (editable installs) are processed too.
    Components already loaded stay registered.
    """
    global _entry_point_cache, _module_dists_cache
    for path in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        site.addsitedir(path)
    importlib.invalidate_caches()
    _entry_point_cache = None
    _module_dists_cache = None


# -- registries ------------------------------------------------------------------------


class Registry:
    """Components of one kind by name.  See the module docstring."""

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"seqlearn.{kind}"
        self._entries: dict[str, _Entry] = {}

    def __repr__(self) -> str:
        return f"<Registry {self.kind}: {', '.join(self.names())}>"

    # registration ---------------------------------------------------------------

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; used bare as a decorator when ``obj`` is None."""
        if obj is None:
            return lambda o: self.register(name, o)
        module = getattr(obj, "__module__", None) or "__main__"
        dist, version = _distribution_of_module(module)
        prov = Provenance(self.kind, name, dist, version, module)
        self._check_free(name, obj, prov)
        self._entries[name] = _Entry(obj, prov)
        return obj

    def _check_free(self, name: str, obj: Any, prov: Provenance) -> None:
        old = self._entries.get(name)
        if old is not None:
            if old.obj is obj or _same_definition(old.obj, obj):
                return  # a module imported twice, or a notebook cell run again
            raise DuplicateComponentError(
                f"{_SINGULAR[self.kind]} {name!r} is already registered by {_describe(old.provenance)}; "
                f"{_describe(prov)} cannot register it again (names are never overwritten: pick another name)"
            )
        for ep in _entry_points(self.group).get(name, []):
            ep_dist = _dist_name(ep)
            if ep_dist is not None and ep_dist != prov.distribution:
                raise DuplicateComponentError(
                    f"{_SINGULAR[self.kind]} {name!r} is provided by distribution {ep_dist} "
                    f"{_dist_version(ep)} (entry point '{ep.name} = {ep.value}'); {_describe(prov)} "
                    "cannot register the same name" + (" (built-ins cannot be shadowed)" if ep_dist == BUILTIN_DISTRIBUTION else "")
                )

    # lookup -----------------------------------------------------------------------

    def get(self, name: str) -> Any:
        """The registered object (usually a class or factory) for ``name``."""
        return self._lookup(name).obj

    def provenance(self, name: str) -> Provenance:
        return self._lookup(name).provenance

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Construct the component ``name`` and stamp it with ``.provenance``.

        A name ``base:arg`` that is not registered itself calls ``base`` with ``arg``
        first: ``tokenizers.build("spacy:de")`` is ``SpacyTokenizer("de")``.  Arguments the
        component does not take (an unknown ``cell_options`` key...) raise
        :class:`~seqlearn.errors.ConfigError` naming the component and what it takes.
        """
        if not isinstance(name, str):
            raise ConfigError(f"a {_SINGULAR[self.kind]} is named by a string, got {type(name).__name__} {name!r}")
        if name not in self._entries and name not in _entry_points(self.group) and ":" in name:
            base, arg = name.split(":", 1)
            if base in self._entries or base in _entry_points(self.group):
                args = (arg, *args)
                entry = self._lookup(base)
            else:
                entry = self._lookup(name)
        else:
            entry = self._lookup(name)
        try:
            inspect.signature(entry.obj).bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{_SINGULAR[self.kind]} {name!r} ({getattr(entry.obj, '__name__', entry.obj)}) cannot be "
                              f"built with these arguments: {exc}; it takes {_parameters(entry.obj)}") from None
        except ValueError:  # no signature to check (a builtin): the call itself will tell
            pass
        component = entry.obj(*args, **kwargs)
        prov = Provenance(self.kind, name, entry.provenance.distribution, entry.provenance.version, entry.provenance.module)
        try:
            component.provenance = prov
        except AttributeError:  # objects with __slots__ cannot carry it; rare for components
            pass
        return component

    def _lookup(self, name: str) -> _Entry:
        eps = _entry_points(self.group).get(name, [])
        if len(eps) > 1:
            providers = ", ".join(f"{_dist_name(ep)} {_dist_version(ep)} ('{ep.value}')" for ep in eps)
            raise DuplicateComponentError(
                f"{_SINGULAR[self.kind]} {name!r} is provided by more than one distribution: {providers}; "
                "uninstall one of them"
            )
        if name in self._entries:
            entry = self._entries[name]
            if eps and _dist_name(eps[0]) != entry.provenance.distribution:
                raise DuplicateComponentError(
                    f"{_SINGULAR[self.kind]} {name!r} is registered by {_describe(entry.provenance)} and also "
                    f"provided by distribution {_dist_name(eps[0])} {_dist_version(eps[0])}"
                )
            return entry
        if eps:
            return self._load(eps[0])
        raise UnknownComponentError(self._unknown_message(name))

    def _load(self, ep: md.EntryPoint) -> _Entry:
        dist, version = _dist_name(ep), _dist_version(ep)
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of a third-party package
            raise PluginLoadError(
                f"{_SINGULAR[self.kind]} {ep.name!r} could not be loaded: entry point '{ep.name} = {ep.value}' "
                f"(group {self.group}) of distribution {dist} {version} raised {type(exc).__name__}: {exc}"
            ) from exc
        prov = Provenance(self.kind, ep.name, dist, version, getattr(obj, "__module__", None))
        old = self._entries.get(ep.name)
        if old is not None and old.obj is not obj:
            raise DuplicateComponentError(
                f"entry point '{ep.name} = {ep.value}' of {dist} {version} names a different object than the "
                f"{_SINGULAR[self.kind]} {ep.name!r} registered by {_describe(old.provenance)}"
            )
        self._entries[ep.name] = _Entry(obj, prov)
        return self._entries[ep.name]

    def _unknown_message(self, name: str) -> str:
        names = self.names()
        msg = f"unknown {_SINGULAR[self.kind]} {name!r}; available: {', '.join(names) or '(none)'}"
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            msg += f". Did you mean {close[0]!r}?"
        return msg

    # listing ------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(set(self._entries) | set(_entry_points(self.group)))

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in _entry_points(self.group)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def listing(self) -> list[tuple[str, str]]:
        """``(name, origin)`` for every name, without importing any plugin."""
        rows = []
        for name in self.names():
            eps = _entry_points(self.group).get(name, [])
            if name in self._entries:
                origin = self._entries[name].provenance.origin
            else:
                origin = Provenance(self.kind, name, _dist_name(eps[0]), _dist_version(eps[0])).origin
            if len(eps) > 1:
                origin = "CONFLICT: " + ", ".join(f"{_dist_name(ep)} {_dist_version(ep)}" for ep in eps)
            rows.append((name, origin))
        return rows


def _parameters(obj: Any) -> str:
    try:
        return "(" + ", ".join(str(p) for p in inspect.signature(obj).parameters.values()) + ")"
    except ValueError:
        return "(unknown)"


def _describe(prov: Provenance) -> str:
    if prov.distribution is not None:
        return f"distribution {prov.distribution} {prov.version} ({prov.module})"
    return f"module {prov.module}"


def _same_definition(a: Any, b: Any) -> bool:
    """True for two versions of one definition (a notebook cell executed again)."""
    return (
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) is not None
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


cells = Registry("cells")
attentions = Registry("attentions")
decoders = Registry("decoders")
tokenizers = Registry("tokenizers")
char_features = Registry("char_features")
poolings = Registry("poolings")
registries: dict[str, Registry] = {r.kind: r for r in (cells, attentions, decoders, tokenizers, char_features, poolings)}


def provenance(component: Any) -> Provenance | None:
    """The provenance stamped on a component by :meth:`Registry.build`, if any."""
    return getattr(component, "provenance", None)


def describe(component: Any, kind: str) -> str:
    """How a message names a component of ``kind`` (``"cells"``...): ``cell 'mgu' (MGUCell)``
    when a registry built it, ``cell MGUCell`` otherwise."""
    prov = provenance(component)
    cls = type(component).__name__
    return f"{_SINGULAR[kind]} {prov.name!r} ({cls})" if prov is not None else f"{_SINGULAR[kind]} {cls}"


def listing() -> dict[str, list[tuple[str, str]]]:
    """Every registered component by kind, as ``(name, origin)`` pairs."""
    return {kind: reg.listing() for kind, reg in registries.items()}

