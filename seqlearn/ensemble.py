"""Ensembles of translation models: several :class:`~seqlearn.Seq2Seq` decoding as one.

At every step of search each member predicts the next token and the ensemble's
log-probabilities are the mean of theirs, ``mean_i log p_i(y_t | y_<t, x)`` (what
OpenNMT-py's ensemble decoding does).  Models trained with different seeds, or the last
checkpoints of one run (see also :mod:`seqlearn.averaging`), usually translate better
together than alone::

    from seqlearn import Ensemble, Seq2Seq

    ensemble = Ensemble.from_checkpoints(["seed1.ckpt", "seed2.ckpt"])
    # or Ensemble([Seq2Seq.load_from_checkpoint(p) for p in paths])
    ensemble.translate(["ein hund läuft"], beam_size=5)[0][0].text   # 'a dog runs'

    seqlearn translate --ckpt seed1.ckpt seed2.ckpt --beam-size 5 < test.de > test.en

:class:`Ensemble` follows the search protocol (:class:`~seqlearn.protocols.SearchModel`):
its state holds the members' states side by side (member ``i``'s entry ``key`` as
``"i.key"``), so greedy search, beam search and sampling run on it unchanged, and it has
``translate``, ``sample``, ``score`` and ``show_attention`` with the arguments of
:class:`~seqlearn.Seq2Seq`'s (:class:`~seqlearn.translation.TranslationMethods`).  A
hypothesis' score is the sum of the ensemble's step log-probabilities, and its attention
the mean of the members' attentions (of those that have attention).

The members share their target vocabulary and their tokenizers (else a
:class:`~seqlearn.errors.ConfigError`); each reads the source with its own source
vocabulary, so a model fine-tuned with a grown source vocabulary ensembles with its
original.  They run on one device (``ensemble.to(device)`` moves them all).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .averaging import first_difference
from .batching import Padded, pad
from .errors import ConfigError
from .seq2seq import Seq2Seq
from .translation import TranslationMethods

__all__ = ["Ensemble", "EnsembleSource"]


@dataclass(frozen=True)
class EnsembleSource:
    """A batch of source sentences as each member reads it: ``batches[i]`` ``(batch, src_len)``
    encoded with member ``i``'s source vocabulary.  The members read the same tokens, so the
    lengths (and the padded width) are the same for all."""

    batches: tuple[Padded, ...]

    @property
    def lengths(self) -> torch.Tensor:
        """``(batch,)`` source lengths, ``</s>`` included."""
        return self.batches[0].lengths

    @property
    def mask(self) -> torch.Tensor:
        """``(batch, src_len)`` bool, True on real source positions."""
        return self.batches[0].mask


class Ensemble(TranslationMethods, nn.Module):
    """Several :class:`~seqlearn.Seq2Seq` models translating as one (see the module docstring).

    ``models``: the members, all with the same target vocabulary, source tokenizer and
    target tokenizer; ``names``: what error messages call them (checkpoint paths; default
    ``model 0``, ``model 1``...).  ``src_vocab``, ``tgt_vocab`` and the tokenizers are the
    first member's.
    """

    def __init__(self, models: Sequence[Seq2Seq], names: Sequence[str] | None = None):
        super().__init__()
        models = list(models)
        names = [f"model {i}" for i in range(len(models))] if names is None else [str(n) for n in names]
        if not models:
            raise ConfigError("Ensemble needs at least one model")
        if len(names) != len(models):
            raise ConfigError(f"Ensemble: {len(models)} models but {len(names)} names")
        for name, model in zip(names, models):
            if not isinstance(model, Seq2Seq):
                raise ConfigError(f"Ensemble: {name} is a {type(model).__name__}; an ensemble translates with Seq2Seq "
                                  "models")
        first = models[0]
        for name, model in zip(names[1:], models[1:]):
            for what, mine, theirs in (
                ("target vocabulary", first.tgt_vocab.itos, model.tgt_vocab.itos),
                ("source tokenizer", _tokenizer_record(first, "src"), _tokenizer_record(model, "src")),
                ("target tokenizer", _tokenizer_record(first, "tgt"), _tokenizer_record(model, "tgt")),
            ):
                difference = first_difference(mine, theirs)
                if difference is not None:
                    raise ConfigError(f"Ensemble: the {what} of {name} differs from that of {names[0]} ({difference}); "
                                      "ensembled models must share the target vocabulary and the tokenizers")
        self.models = nn.ModuleList(models)
        self.names = names

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | os.PathLike], map_location: Any = None) -> "Ensemble":
        """The ensemble of the :class:`~seqlearn.Seq2Seq` checkpoints at ``paths`` (each loaded
        safely, :mod:`seqlearn.checkpoint_loading`); errors name the files."""
        from .pretrained import load_model

        models = [load_model(path, Seq2Seq, map_location=map_location) for path in paths]
        return cls(models, names=[os.fspath(path) for path in paths])

    # what TranslationMethods reads: the first member's vocabularies, tokenizers and device
    @property
    def src_vocab(self) -> Any:
        return self.models[0].src_vocab

    @property
    def tgt_vocab(self) -> Any:
        return self.models[0].tgt_vocab

    @property
    def src_tokenizer(self) -> Any:
        return self.models[0].src_tokenizer

    @property
    def tgt_tokenizer(self) -> Any:
        return self.models[0].tgt_tokenizer

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    @property
    def hparams(self) -> Any:
        """The first member's hyperparameters: its ``search_defaults`` and ``src_eos`` rule the search."""
        return self.models[0].hparams

    @property
    def _per_sentence(self) -> tuple[str, ...]:
        return tuple(f"{i}.{key}" for i, model in enumerate(self.models) for key in model._per_sentence)

    def _source_batch(self, token_lists: Sequence[Sequence[str]]) -> EnsembleSource:
        batches = []
        for model in self.models:
            vocab = model.src_vocab
            batches.append(pad([vocab.encode(tokens, add_eos=model.hparams.src_eos) for tokens in token_lists],
                               vocab.pad_index).to(self.device))
        return EnsembleSource(tuple(batches))

    def _sources(self, source: EnsembleSource | Padded) -> tuple[Padded, ...]:
        """Each member's source batch: ``source`` as each reads it, or one batch all read."""
        if isinstance(source, Padded):
            return (source,) * len(self.models)
        if len(source.batches) != len(self.models):
            raise ConfigError(f"Ensemble of {len(self.models)} models given {len(source.batches)} source batches")
        return source.batches

    # the search protocol --------------------------------------------------------------------
    def start(self, source: EnsembleSource | Padded) -> dict[str, torch.Tensor]:
        """Search protocol: the members' states side by side (member ``i``'s ``key`` as
        ``"i.key"``).  ``source``: an :class:`EnsembleSource`, or one :class:`Padded`
        batch every member reads (when they share a source vocabulary)."""
        return {f"{i}.{key}": value
                for i, (model, src) in enumerate(zip(self.models, self._sources(source)))
                for key, value in model.start(src).items()}

    def search_step(
        self, prev_tokens: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Search protocol: the mean of the members' log-probabilities ``(N, V)`` (float32)
        of the token after ``prev_tokens`` ``(N,)``, their new states, and the mean of their
        attentions ``(N, src_len)`` (None when no member has attention)."""
        parts: list[dict[str, torch.Tensor]] = [{} for _ in self.models]
        for name, value in state.items():
            i, _, key = name.partition(".")
            parts[int(i)][key] = value
        log_probs, attentions, new_state = [], [], {}
        for i, (model, part) in enumerate(zip(self.models, parts)):
            lp, part, attn = model.search_step(prev_tokens, part)
            log_probs.append(lp)
            if attn is not None:
                attentions.append(attn)
            new_state.update({f"{i}.{key}": value for key, value in part.items()})
        attention = torch.stack(attentions).mean(0) if attentions else None
        return torch.stack(log_probs).mean(0), new_state, attention

    def _next_log_probs(self, src: EnsembleSource | Padded, tgt_in: torch.Tensor) -> torch.Tensor:
        """The mean of the members' teacher-forced log-probabilities ``(batch, tgt_len, V)``,
        so :meth:`score` sums what search scores."""
        return torch.stack([model._next_log_probs(batch, tgt_in)
                            for model, batch in zip(self.models, self._sources(src))]).mean(0)

    def show_hidden_states(self, sentence: str | Sequence[str], **view_options: Any) -> Any:
        """An ensemble has no hidden states of its own: show a member's,
        ``ensemble.models[i].show_hidden_states(sentence)``."""
        raise ConfigError("an Ensemble has no hidden states of its own; show a member's: "
                          "ensemble.models[i].show_hidden_states(sentence)")


def _tokenizer_record(model: Seq2Seq, side: str) -> tuple[Any, Any]:
    """What defines a member's ``side`` tokenizer: its registry name and model bytes (SentencePiece)."""
    return model.hparams[f"{side}_tokenizer"], (model.hparams.get("tokenizer_models") or {}).get(side)
