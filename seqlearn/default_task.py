"""The embedded default task: English number and date expressions into German words.

Generated on the spot (no network, no data files), deterministic for a seed, and small
enough to learn in a couple of CPU minutes, yet it needs attention: the German side
reorders the source.

=====================================  ===================================================
source                                 target
=====================================  ===================================================
``4 5 2 1``                            ``vier tausend fünf hundert ein und zwanzig``
``twenty one``                         ``ein und zwanzig``
``march 3 , 1 9 9 8``                  ``der dritte märz neunzehn hundert acht und neunzig``
``on the twenty first of may``         ``am ein und zwanzigsten mai``
``in 2 0 1 7``                         ``im jahr zwei tausend siebzehn``
=====================================  ===================================================

Reordering: German says units before tens ("ein und zwanzig" for 21), the day before the
month, and a year of 1800-1999 as hundreds ("neunzehn hundert ..."), not as a cardinal.

Tokens are words separated by single spaces on both sides, so the ``whitespace``
tokenizer recovers them from the text.  Numerals are written digit by digit (ten source
types instead of thousands), and German number compounds are split into their parts
(see :func:`split_german_number`), which keeps both vocabularies under a hundred types
and every sentence at most 12 tokens long.

The German words come from num2words (``num2words(n, lang="de")``, ``to="ordinal"``,
``to="year"``); the English words from ``num2words(n, lang="en")`` without "and",
commas and hyphens.
"""
from __future__ import annotations

import calendar
import random
import re
from functools import lru_cache
from typing import Callable

from num2words import num2words

from .errors import ConfigError
from .readers import ParallelExample

__all__ = ["make_default_task", "split_german_number", "german_number", "english_number"]

MONTHS_EN = ("january", "february", "march", "april", "may", "june", "july", "august",
             "september", "october", "november", "december")  # fmt: skip
MONTHS_DE = ("januar", "februar", "märz", "april", "mai", "juni", "juli", "august",
             "september", "oktober", "november", "dezember")  # fmt: skip
YEARS = range(1800, 2100)
MAX_NUMBER = 9999


def _german_parts() -> list[str]:
    """The morphemes German number words below a million are compounds of, longest first.

    Cardinals 0-19 and the tens are atoms, with the compound forms "ein" (as in "ein und
    zwanzig") and the joints "und", "hundert", "tausend"; ordinals add the ordinal forms
    of the atoms and of "hundert"/"tausend", with the dative "-n" ("am dritten").
    """
    atoms = [*range(20), *range(20, 100, 10), 100, 1000]
    cardinal = {num2words(n, lang="de") for n in atoms[:-2]} | {"ein", "und", "hundert", "tausend"}
    ordinal = {num2words(n, lang="de", to="ordinal") for n in atoms[1:]}
    parts = cardinal | ordinal | {word + "n" for word in ordinal}
    return sorted(parts, key=lambda p: (-len(p), p))


_PARTS = re.compile("|".join(_german_parts()))


def split_german_number(word: str) -> list[str]:
    """Split a German number compound into its parts, so that ``"".join(parts) == word``.

    The rule: scan left to right, each time taking the longest part from the inventory
    of :func:`_german_parts` that matches (so "achtzehn" stays whole rather than
    "acht" + "zehn", and "einundzwanzig" becomes "ein", "und", "zwanzig").

    >>> split_german_number("neunzehnhundertachtundneunzig")
    ['neunzehn', 'hundert', 'acht', 'und', 'neunzig']
    >>> split_german_number("einundzwanzigsten")
    ['ein', 'und', 'zwanzigsten']
    """
    parts = _PARTS.findall(word)
    if "".join(parts) != word:
        raise ConfigError(f"cannot split {word!r} into German number parts (got {parts})")
    return parts


@lru_cache(maxsize=None)
def german_number(n: int, to: str = "cardinal") -> tuple[str, ...]:
    """German words for ``n`` (``to`` is num2words': "cardinal", "ordinal", "year"), split
    into parts.  Ordinals are nominative ("dritte"); add "n" to the last part for the
    dative."""
    return tuple(split_german_number(num2words(n, lang="de", to=to).lower()))


@lru_cache(maxsize=None)
def english_number(n: int, to: str = "cardinal") -> tuple[str, ...]:
    """English words for ``n`` as num2words writes them, without "and", commas and
    hyphens: 4521 -> four thousand five hundred twenty one."""
    text = num2words(n, lang="en", to=to).replace(",", " ").replace("-", " ")
    return tuple(w for w in text.split() if w != "and")


def _digits(n: int) -> list[str]:
    return list(str(n))


def _dative(parts: tuple[str, ...]) -> list[str]:
    return [*parts[:-1], parts[-1] + "n"]


def _number(rng: random.Random) -> int:
    """Numbers with 1-4 digits equally likely, so short and long ones are both common."""
    digits = rng.randint(1, len(str(MAX_NUMBER)))
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _date(rng: random.Random, year: int | None = None) -> tuple[int, int, int]:
    """A real calendar date: (month 0-11, day, year), in ``year`` if given."""
    month, year = rng.randrange(12), rng.choice(YEARS) if year is None else year
    return month, rng.randint(1, calendar.monthrange(year, month + 1)[1]), year


def _cardinal_digits(rng: random.Random) -> tuple[list[str], list[str]]:
    n = _number(rng)
    return _digits(n), list(german_number(n))


def _cardinal_words(rng: random.Random) -> tuple[list[str], list[str]]:
    n = _number(rng)
    return list(english_number(n)), list(german_number(n))


def _full_date(rng: random.Random) -> tuple[list[str], list[str]]:
    month, day, year = _date(rng)
    src = [MONTHS_EN[month], *_digits(day), ",", *_digits(year)]
    return src, ["der", *german_number(day, "ordinal"), MONTHS_DE[month], *german_number(year, "year")]


def _on_date(rng: random.Random) -> tuple[list[str], list[str]]:
    month, day, year = _date(rng)
    src = ["on", MONTHS_EN[month], *_digits(day), ",", *_digits(year)]
    return src, ["am", *_dative(german_number(day, "ordinal")), MONTHS_DE[month], *german_number(year, "year")]


def _on_the_day(rng: random.Random) -> tuple[list[str], list[str]]:
    month, day, _ = _date(rng)
    src = ["on", "the", *english_number(day, "ordinal"), "of", MONTHS_EN[month]]
    return src, ["am", *_dative(german_number(day, "ordinal")), MONTHS_DE[month]]


def _in_year(rng: random.Random) -> tuple[list[str], list[str]]:
    year = rng.choice(YEARS)
    return ["in", *_digits(year)], ["im", "jahr", *german_number(year, "year")]


def _between(rng: random.Random) -> tuple[list[str], list[str]]:
    low, high = sorted((_number(rng), _number(rng)))
    while high == low:
        high = _number(rng)
    low, high = sorted((low, high))
    return ["between", *_digits(low), "and", *_digits(high)], ["zwischen", *german_number(low), "und", *german_number(high)]


def _date_range(rng: random.Random) -> tuple[list[str], list[str]]:
    first = _date(rng)
    (month, day, year), (month2, day2, _) = sorted((first, _date(rng, first[2])))
    src = ["from", MONTHS_EN[month], *_digits(day), "to", MONTHS_EN[month2], *_digits(day2), ",", *_digits(year)]
    tgt = ["vom", *_dative(german_number(day, "ordinal")), MONTHS_DE[month],
           "bis", "zum", *_dative(german_number(day2, "ordinal")), MONTHS_DE[month2], *german_number(year, "year")]  # fmt: skip
    return src, tgt


# (template, weight): the weights give about 30% cardinals in digits, 30% in words, 40% dates
TEMPLATES: tuple[tuple[Callable[[random.Random], tuple[list[str], list[str]]], int], ...] = (
    (_cardinal_digits, 25),
    (_cardinal_words, 25),
    (_full_date, 10),
    (_on_date, 10),
    (_on_the_day, 6),
    (_in_year, 6),
    (_between, 9),
    (_date_range, 9),
)


def make_default_task(
    seed: int = 0, n_train: int = 15000, n_valid: int = 500, n_test: int = 1000
) -> dict[str, list[ParallelExample]]:
    """Generate the default English -> German task: ``{"train", "valid", "test"}`` lists of
    distinct sentence pairs (no source sentence occurs in two splits).

    Deterministic for ``seed``.  ``ParallelExample.line`` is the 1-based position in the
    split.
    """
    total = n_train + n_valid + n_test
    rng = random.Random(seed)
    templates, weights = zip(*TEMPLATES)
    pairs: dict[str, list[str]] = {}
    # repeats are rejected, so allow plenty of draws before declaring the request too big
    for _ in range(4 * total + 1000):
        if len(pairs) == total:
            break
        (template,) = rng.choices(templates, weights)
        src, tgt = template(rng)
        pairs.setdefault(" ".join(src), tgt)
    else:
        raise ConfigError(f"could not draw {total} distinct sentence pairs; ask for fewer")
    items = list(pairs.items())
    rng.shuffle(items)
    bounds = {"test": (0, n_test), "valid": (n_test, n_test + n_valid), "train": (n_test + n_valid, total)}
    return {
        split: [
            ParallelExample(src_text=src, tgt_text=" ".join(tgt), src=src.split(), tgt=list(tgt), line=line)
            for line, (src, tgt) in enumerate(items[start:stop], start=1)
        ]
        for split, (start, stop) in bounds.items()
    }
