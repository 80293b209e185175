"""Tag schemes: transition rules, span extraction and conversion.

Oracles: seqeval's span extraction (lenient ``get_entities`` and the strict scheme
classes), and the canonical rendering of spans, which is written independently of the
transition rules.
"""
from __future__ import annotations

import itertools

import pytest
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import BILOU, IOB1, IOB2, IOBES, Entities

from seqlearn.errors import ConfigError, DataError
from seqlearn.tag_schemes import (
    SCHEMES,
    Span,
    allowed_transitions,
    canonical_scheme,
    convert_tags,
    find_violation,
    spans,
    spans_to_tags,
)

LETTERS = {"BIO": "BI", "IOB1": "BI", "BIOUL": "BILU", "BIOES": "BIES"}
SEQEVAL_STRICT = {"BIO": IOB2, "IOB1": IOB1, "BIOUL": BILOU, "BIOES": IOBES}


def tag_set(scheme: str, types: str = "XY") -> list[str]:
    return ["O"] + [f"{letter}-{t}" for t in types for letter in LETTERS[scheme]]


def all_sequences(scheme: str, max_len: int = 4):
    tags = tag_set(scheme)
    for n in range(1, max_len + 1):
        yield from (list(seq) for seq in itertools.product(tags, repeat=n))


def seqeval_lenient(tags: list[str]) -> list[Span]:
    """seqeval's default extraction; it knows BIOES letters, so BIOUL's U/L are renamed S/E."""
    renamed = [{"U": "S", "L": "E"}.get(t[0], t[0]) + t[1:] for t in tags]
    return [Span(label, start, end + 1) for label, start, end in get_entities(renamed)]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_lenient_spans_match_seqeval_on_every_short_sequence(scheme):
    for tags in all_sequences(scheme):
        assert spans(tags, scheme) == seqeval_lenient(tags), tags


@pytest.mark.parametrize("scheme", SCHEMES)
def test_valid_sequences_are_exactly_the_canonical_renderings(scheme):
    """find_violation (transition rules) agrees with span rendering (written separately),
    and on valid sequences seqeval's strict extraction agrees with ours."""
    n_valid = 0
    for tags in all_sequences(scheme):
        found = spans(tags, scheme)
        canonical = spans_to_tags(found, len(tags), scheme) == tags
        assert (find_violation(tags, scheme) is None) == canonical, tags
        if canonical:
            n_valid += 1
            strict = Entities([tags], SEQEVAL_STRICT[scheme]).entities[0]
            assert [Span(e.tag, e.start, e.end) for e in strict] == found, tags
    assert n_valid > 20


@pytest.mark.parametrize("scheme", SCHEMES)
def test_allowed_transitions_are_the_bigrams_of_valid_sequences(scheme):
    labels = ["<pad>", *tag_set(scheme)]
    index = {tag: i for i, tag in enumerate(labels)}
    start, end = len(labels), len(labels) + 1
    seen = set()
    for tags in all_sequences(scheme):
        canonical = spans_to_tags(spans(tags, scheme), len(tags), scheme)
        ids = [start, *(index[t] for t in canonical), end]
        seen.update(zip(ids, ids[1:]))
    allowed = allowed_transitions(scheme, labels)
    assert len(allowed) == len(set(allowed))
    assert set(allowed) == seen
    assert not any(0 in pair for pair in allowed)  # <pad> is never allowed


@pytest.mark.parametrize("source", SCHEMES)
@pytest.mark.parametrize("target", SCHEMES)
def test_conversion_keeps_spans_and_yields_valid_tags(source, target):
    for tags in all_sequences(source, max_len=3):
        converted = convert_tags(tags, source, target)
        assert find_violation(converted, target) is None, (tags, converted)
        assert spans(converted, target) == spans(tags, source)


def test_conversion_examples():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]
    bio = convert_tags(iob1, "IOB1", "BIO")
    assert bio == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    assert convert_tags(bio, "BIO", "IOB1") == iob1
    assert convert_tags(bio, "BIO", "BIOUL") == ["B-PER", "L-PER", "U-PER", "O", "U-LOC", "U-ORG"]
    assert convert_tags(bio, "BIO", "BIOES") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "S-ORG"]
    # repair: an I- after O opens a chunk; a BIOUL chunk cut short is closed
    assert convert_tags(["O", "I-PER", "I-PER"], "BIO", "BIO") == ["O", "B-PER", "I-PER"]
    assert convert_tags(["B-PER", "I-PER"], "BIOUL", "BIOUL") == ["B-PER", "L-PER"]


def test_find_violation_positions():
    assert find_violation(["O", "I-PER"], "BIO") == 1
    assert find_violation(["B-PER", "I-LOC"], "BIO") == 1
    assert find_violation(["B-PER"], "IOB1") == 0
    assert find_violation(["B-PER", "I-PER"], "BIOUL") == 2  # may not end inside a chunk
    assert find_violation(["U-PER", "L-PER"], "BIOUL") == 1
    assert find_violation([], "BIOUL") is None


def test_scheme_names_and_errors():
    assert canonical_scheme("iob2") == "BIO"
    assert canonical_scheme("IOBES") == "BIOES"
    with pytest.raises(ConfigError, match="unknown tag scheme"):
        canonical_scheme("IOE2")
    with pytest.raises(DataError, match="position 1"):
        spans(["O", "S-PER"], "BIO")
    with pytest.raises(ConfigError, match="B-PER, X-PER|X-PER"):
        allowed_transitions("BIO", ["O", "B-PER", "X-PER"])
    with pytest.raises(ConfigError, match="overlapping"):
        spans_to_tags([Span("A", 0, 2), Span("B", 1, 3)], 3, "BIO")


def test_allowed_transitions_accepts_a_mapping():
    labels = ["O", "B-PER", "I-PER"]
    assert allowed_transitions("BIO", dict(enumerate(labels))) == allowed_transitions("BIO", labels)
