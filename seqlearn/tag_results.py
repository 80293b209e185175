"""What a :class:`~seqlearn.Tagger` returns and how tagging is scored.

:class:`TaggedText` is one tagged sentence (tags, per-token confidence, the spans the tags
form), :class:`TextSpan` one span, and :func:`tagging_metrics` the token accuracy and
seqeval's strict span scores that training logs::

    tagging_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]], "BIO")
    # {'acc': 0.667, 'f1': 0.0, 'precision': 0.0, 'recall': 0.0}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

from seqeval import metrics as seqeval_metrics
from seqeval import scheme as seqeval_scheme

from . import tag_schemes

__all__ = ["TaggedText", "TextSpan", "tagging_metrics"]

# seqlearn scheme name -> seqeval's scheme class for strict-mode span matching
_SEQEVAL_SCHEMES = {
    "BIO": seqeval_scheme.IOB2,
    "IOB1": seqeval_scheme.IOB1,
    "BIOUL": seqeval_scheme.BILOU,
    "BIOES": seqeval_scheme.IOBES,
}


class TextSpan(NamedTuple):
    """An entity of type ``type`` over tokens ``start`` to ``end - 1`` (``end`` exclusive);
    ``text`` is those tokens detokenized."""

    type: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class TaggedText:
    """One tagged sentence: a tag and a confidence (the model's probability of that tag
    at that token: the CRF marginal, or the softmax probability) per token, and the
    spans the tags form (empty for taggers without a chunk scheme)."""

    tokens: list[str]
    tags: list[str]
    spans: list[TextSpan]
    confidence: list[float]

    def to_conll(self, confidence: bool = False) -> str:
        """``token<TAB>tag[<TAB>confidence]`` lines, without a trailing newline."""
        if confidence:
            return "\n".join(f"{w}\t{t}\t{c:.4f}" for w, t, c in zip(self.tokens, self.tags, self.confidence))
        return "\n".join(f"{w}\t{t}" for w, t in zip(self.tokens, self.tags))


def tagging_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str | None) -> dict[str, float]:
    """Token accuracy ``acc``, and with a chunk ``scheme`` the span ``f1``, ``precision``
    and ``recall`` of seqeval in strict mode with that scheme (micro average)."""
    total = sum(len(g) for g in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    out = {"acc": correct / total if total else 0.0}
    if scheme is not None:
        kw = {"mode": "strict", "scheme": _SEQEVAL_SCHEMES[tag_schemes.canonical_scheme(scheme)], "zero_division": 0}
        gold, predicted = [list(g) for g in gold], [list(p) for p in predicted]
        out["f1"] = seqeval_metrics.f1_score(gold, predicted, **kw)
        out["precision"] = seqeval_metrics.precision_score(gold, predicted, **kw)
        out["recall"] = seqeval_metrics.recall_score(gold, predicted, **kw)
    return out
