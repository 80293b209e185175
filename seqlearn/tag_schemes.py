"""Chunk tag schemes (BIO, IOB1, BIOUL/BIOES): which tag may follow which, spans, conversion.

Tags are strings ``"O"`` or ``"<prefix>-<TYPE>"`` (``"B-PER"``).  The schemes and their prefixes:

* ``"BIO"`` (alias ``"IOB2"``): every chunk starts with ``B``, continues with ``I``.
* ``"IOB1"``: chunks are ``I``; ``B`` only starts a chunk right after a chunk of the same type.
* ``"BIOUL"``: ``B`` begin, ``I`` inside, ``L`` last, ``U`` unit-length chunk.
* ``"BIOES"`` (alias ``"IOBES"``): the same scheme spelled ``B I E S``.

Everything here is a pure function on lists of strings:

>>> spans(["B-PER", "I-PER", "O", "B-LOC"], "BIO")
[Span(label='PER', start=0, end=2), Span(label='LOC', start=3, end=4)]
>>> convert_tags(["I-PER", "I-PER", "B-PER", "O"], "IOB1", "BIOUL")
['B-PER', 'L-PER', 'U-PER', 'O']
>>> find_violation(["O", "I-PER"], "BIO")
1

Span extraction is lenient like conlleval (and seqeval's default mode): a tag that cannot
continue the open chunk (``I-PER`` after ``O`` in BIO) starts a new one.  So
``convert_tags(tags, s, s)`` repairs a malformed sequence into the nearest valid one, and
:func:`find_violation` tells whether there was anything to repair.
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

from .errors import ConfigError, DataError

# canonical name -> prefix letter of each role: B(egin), I(nside), L(ast), U(nit)
_LETTERS: dict[str, dict[str, str]] = {
    "BIO": {"B": "B", "I": "I"},
    "IOB1": {"B": "B", "I": "I"},
    "BIOUL": {"B": "B", "I": "I", "L": "L", "U": "U"},
    "BIOES": {"B": "B", "I": "I", "L": "E", "U": "S"},
}
_ALIASES = {"IOB2": "BIO", "IOBES": "BIOES"}
SCHEMES: tuple[str, ...] = tuple(_LETTERS)

OUTSIDE = "O"
_START, _END = ("<start>", None), ("<end>", None)  # pseudo-tags around every sequence


class Span(NamedTuple):
    """A chunk of type ``label`` covering tokens ``start`` to ``end - 1`` (``end`` exclusive)."""

    label: str
    start: int
    end: int


def canonical_scheme(name: str) -> str:
    """``"iob2"`` -> ``"BIO"``; raises :class:`ConfigError` for an unknown scheme."""
    key = str(name).upper()
    key = _ALIASES.get(key, key)
    if key not in _LETTERS:
        known = ", ".join([*SCHEMES, *_ALIASES])
        raise ConfigError(f"unknown tag scheme {name!r}; known schemes: {known}")
    return key


def is_special(tag: str) -> bool:
    """Vocabulary specials such as ``<pad>``: never part of a valid tag sequence."""
    return tag.startswith("<") and tag.endswith(">")


def _parse(tag: str, scheme: str) -> tuple[str, str | None]:
    """``"E-PER"`` in BIOES -> ``("L", "PER")``; ``"O"`` -> ``("O", None)``.  Raises ValueError."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    letter, _, label = tag.partition("-")
    for role, expected in _LETTERS[scheme].items():
        if letter == expected:
            return role, label
    raise ValueError(f"tag {tag!r} is not a {scheme} tag (expected 'O' or one of "
                     f"{', '.join(l + '-TYPE' for l in _LETTERS[scheme].values())})")


def _allowed(scheme: str, prev: tuple[str, str | None], cur: tuple[str, str | None]) -> bool:
    """May parsed tag ``cur`` follow parsed tag ``prev``?  ``_START``/``_END`` bracket a sentence.

    The rules are AllenNLP's ``is_transition_allowed``.
    """
    (p_role, p_label), (c_role, c_label) = prev, cur
    same = p_label == c_label
    if scheme in ("BIOUL", "BIOES"):
        if cur is _END:
            return p_role in (OUTSIDE, "L", "U", "<start>")
        if c_role in (OUTSIDE, "B", "U"):  # a chunk may start only once the previous one closed
            return p_role in (OUTSIDE, "L", "U", "<start>")
        return p_role in ("B", "I") and same  # I or L continue an open chunk of the same type
    if cur is _END or prev is _START:
        return cur is _END or c_role in (OUTSIDE, "B" if scheme == "BIO" else "I")
    if scheme == "BIO":
        return c_role in (OUTSIDE, "B") or (p_role in ("B", "I") and same)
    # IOB1: B only separates two adjacent chunks of the same type
    return c_role in (OUTSIDE, "I") or (p_role in ("B", "I") and same)


def allowed_transitions(scheme: str, labels: Sequence[str] | Mapping[int, str]) -> list[tuple[int, int]]:
    """The ``(from, to)`` tag-index pairs that the scheme allows, AllenNLP style.

    ``labels`` maps index -> tag (a list, a dict, or a Vocab's ``itos``).  Index
    ``len(labels)`` stands for the start of the sentence and ``len(labels) + 1`` for its
    end, so ``(len(labels), j)`` means "a sentence may start with tag j".  Specials such as
    ``<pad>`` take part in no allowed transition, so a constrained CRF never predicts them.

    >>> allowed_transitions("BIO", ["O", "B-PER", "I-PER"])
    [(0, 0), (0, 1), (0, 4), (1, 0), (1, 1), (1, 2), (1, 4), (2, 0), (2, 1), (2, 2), (2, 4), (3, 0), (3, 1)]
    """
    scheme = canonical_scheme(scheme)
    items = sorted(labels.items()) if isinstance(labels, Mapping) else list(enumerate(labels))
    n = len(items)
    if sorted(i for i, _ in items) != list(range(n)):
        raise ConfigError(f"tag indices must be 0..{n - 1}, got {sorted(i for i, _ in items)}")
    parsed: list[tuple[int, tuple[str, str | None]]] = []
    for i, tag in items:
        if is_special(tag):
            continue
        try:
            parsed.append((i, _parse(tag, scheme)))
        except ValueError as err:
            raise ConfigError(f"cannot constrain a CRF to {scheme}: {err}") from None
    froms = [*parsed, (n, _START)]
    tos = [*parsed, (n + 1, _END)]
    return [(i, j) for i, p in froms for j, c in tos if not (p is _START and c is _END) and _allowed(scheme, p, c)]


def find_violation(tags: Sequence[str], scheme: str) -> int | None:
    """Index of the first tag that may not follow its predecessor, ``len(tags)`` when the
    sequence may not end where it does (BIOUL ``... B-PER``), or None for a valid sequence.

    Raises :class:`DataError` for a tag that does not belong to the scheme at all.
    """
    scheme = canonical_scheme(scheme)
    prev = _START
    for i, cur in enumerate([*_parse_all(tags, scheme), _END]):
        if not _allowed(scheme, prev, cur):
            return i
        prev = cur
    return None


def _parse_all(tags: Iterable[str], scheme: str) -> list[tuple[str, str | None]]:
    parsed = []
    for i, tag in enumerate(tags):
        try:
            parsed.append(_parse(tag, scheme))
        except ValueError as err:
            raise DataError(f"position {i}: {err}") from None
    return parsed


def spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """The chunks of a tag sequence, in order, read leniently (conlleval / seqeval default):
    ``B`` and ``U`` always start a chunk; ``I`` and ``L`` continue an open chunk of their type
    and otherwise start one; ``L`` and ``U`` close it; ``O`` closes it.

    Raises :class:`DataError` (naming the position) for a tag outside the scheme.
    """
    scheme = canonical_scheme(scheme)
    found: list[Span] = []
    start, label = None, None  # the open chunk
    for i, (role, tag_label) in enumerate(_parse_all(tags, scheme)):
        continues = label is not None and role in ("I", "L") and tag_label == label
        if not continues:
            if label is not None:
                found.append(Span(label, start, i))
            start, label = (None, None) if role == OUTSIDE else (i, tag_label)
        if role in ("L", "U"):
            found.append(Span(label, start, i + 1))
            start, label = None, None
    if label is not None:
        found.append(Span(label, start, len(tags)))
    return found


def spans_to_tags(chunks: Sequence[Span], length: int, scheme: str) -> list[str]:
    """Write non-overlapping chunks (sorted by start) as a valid tag sequence of ``length`` tags."""
    scheme = canonical_scheme(scheme)
    letter = _LETTERS[scheme]
    tags = [OUTSIDE] * length
    prev_end, prev_label = -1, None
    for label, start, end in chunks:
        if not (0 <= start < end <= length) or start < prev_end:
            raise ConfigError(f"spans must be sorted, non-overlapping and within 0..{length}, "
                              f"got {list(chunks)}")
        inside = [f"{letter['I']}-{label}"] * (end - start)
        if scheme == "IOB1":
            if prev_end == start and prev_label == label:
                inside[0] = f"B-{label}"
        elif scheme == "BIO" or end - start > 1:
            inside[0] = f"B-{label}"
            if "L" in letter:
                inside[-1] = f"{letter['L']}-{label}"
        else:
            inside[0] = f"{letter['U']}-{label}"
        tags[start:end] = inside
        prev_end, prev_label = end, label
    return tags


def convert_tags(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Re-encode a tag sequence from one scheme to another (IOB1 <-> BIO <-> BIOUL <-> BIOES).

    The chunks are read leniently (see :func:`spans`), so the result is always valid in
    ``target``; with ``source == target`` this repairs a malformed sequence.

    >>> convert_tags(["O", "I-PER", "I-PER"], "BIO", "BIO")
    ['O', 'B-PER', 'I-PER']
    """
    return spans_to_tags(spans(tags, source), len(tags), target)
