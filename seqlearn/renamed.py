"""Old argument names, mapped to today's in one table: :data:`RENAMED`.

seqlearn 0.1.0 named some hyperparameters differently from model to model; today the four
models share one vocabulary (``embedding_dim``, ``hidden_size``, ``num_layers``,
``tie_embeddings``, ``dropout``, ``lr``, ``lr_scheduler``, ``lr_gamma``...; see
:mod:`seqlearn.optim` for the schedules).  The old names keep working:

* passed by a caller, they give a :class:`FutureWarning` naming the new one
  (``Tagger(..., word_dim=100)``: "Tagger: word_dim is deprecated, use embedding_dim");
  an old and a new name for the same thing together are a :class:`~seqlearn.errors.ConfigError`;
* in a checkpoint written by 0.1.0 they are mapped without a word while
  ``load_from_checkpoint`` rebuilds the model (:func:`loading_checkpoint`), so the model
  comes back with the same weights and outputs.

A method whose arguments were renamed is decorated with :func:`accepts_old_names`, which
looks itself up in :data:`RENAMED` by its qualified name.
"""
from __future__ import annotations

import functools
import inspect
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, TypeVar

from .errors import ConfigError

__all__ = ["RENAMED", "accepts_old_names", "loading_checkpoint", "upgrade_arguments", "renaming_hint"]

Mapping = Callable[[Any], dict[str, Any]]


def _to(new: str) -> tuple[str, Mapping]:
    return new, lambda value: {new: value}


def _inverse_time(decay: Any) -> dict[str, Any]:
    """Tagger's ``lr_decay``: the rate divided by ``1 + lr_decay * epoch``, 0 for none."""
    if not isinstance(decay, (int, float)) or decay < 0:
        raise ConfigError(f"Tagger: lr_decay must be a number >= 0, got {decay!r} (use lr_scheduler='inverse-time' "
                          "with lr_gamma)")  # fmt: skip
    return {"lr_scheduler": "inverse-time", "lr_gamma": float(decay)} if decay > 0 else {}


#: qualified name of a method -> {old argument: (what replaces it, old value -> new arguments)}
RENAMED: dict[str, dict[str, tuple[str, Mapping]]] = {
    "Tagger.__init__": {
        "word_dim": _to("embedding_dim"),
        "lr_decay": ("lr_scheduler='inverse-time' with lr_gamma", _inverse_time),
    },
    "LanguageModel.__init__": {"tie_weights": _to("tie_embeddings")},
    "Tagger.init_state": {"batch": _to("batch_size")},
    "LanguageModel.init_state": {"batch": _to("batch_size")},
}

_loading: ContextVar[bool] = ContextVar("seqlearn_loading_checkpoint", default=False)


@contextmanager
def loading_checkpoint() -> Iterator[None]:
    """Inside the block, constructors map old hyperparameter names silently and ignore
    names they do not take (what Lightning does for the hyperparameters of a checkpoint)."""
    token = _loading.set(True)
    try:
        yield
    finally:
        _loading.reset(token)


def upgrade_arguments(where: str, kwargs: dict[str, Any], accepted: Any = None) -> dict[str, Any]:
    """``kwargs`` of the method ``where`` ("Tagger.__init__") with the old names of
    :data:`RENAMED` replaced by the new ones; warns outside :func:`loading_checkpoint`.
    While loading, names not in ``accepted`` (the method's parameters) are dropped."""
    table, loading = RENAMED.get(where, {}), _loading.get()
    owner = where.split(".")[0]
    out = {k: v for k, v in kwargs.items() if k not in table}
    for old in (k for k in kwargs if k in table):
        replacement, mapping = table[old]
        new = mapping(kwargs[old])
        both = sorted(set(new) & set(kwargs))
        if both and not loading:
            raise ConfigError(f"{owner}: {old} is the old name of {replacement}; pass only {', '.join(both)}")
        if not loading:
            warnings.warn(f"{owner}: {old} is deprecated, use {replacement}", FutureWarning, stacklevel=3)
        out.update(new)
    if loading and accepted is not None:
        out = {k: v for k, v in out.items() if k in accepted}
    return out


def renaming_hint(message: str) -> str:
    """What to use instead of the old hyperparameter names ``message`` mentions (a config
    parser's "unexpected key" error), e.g. " (word_dim was renamed: use embedding_dim)"; "" if none."""
    hints = {f"{old} was renamed: use {new}" for where, table in RENAMED.items() if where.endswith(".__init__")
             for old, (new, _) in table.items() if old in message}  # fmt: skip
    return f" ({'; '.join(sorted(hints))})" if hints else ""


F = TypeVar("F", bound=Callable[..., Any])


def accepts_old_names(method: F) -> F:
    """Decorate a method whose keyword arguments :data:`RENAMED` lists, so that callers
    (and checkpoints) may still use the old names.  ``inspect.signature`` shows the
    method's own parameters."""
    where = method.__qualname__
    if where not in RENAMED:
        raise ConfigError(f"{where} has no entry in seqlearn.renamed.RENAMED")
    accepted = set(inspect.signature(method).parameters)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **upgrade_arguments(where, kwargs, accepted))

    return wrapper  # type: ignore[return-value]
