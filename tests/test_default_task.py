"""The embedded default task: deterministic, disjoint splits, real reordering, faithful German."""
from __future__ import annotations

import calendar

import pytest
from num2words import num2words

from seqlearn.default_task import (
    MONTHS_DE,
    MONTHS_EN,
    english_number,
    german_number,
    make_default_task,
    split_german_number,
)
from seqlearn.errors import ConfigError


@pytest.fixture(scope="module")
def task():
    return make_default_task()


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = make_default_task(seed=7, n_train=300, n_valid=50, n_test=50)
    assert a == make_default_task(seed=7, n_train=300, n_valid=50, n_test=50)
    b = make_default_task(seed=8, n_train=300, n_valid=50, n_test=50)
    assert [e.src for e in a["train"]] != [e.src for e in b["train"]]


def test_splits_have_the_requested_sizes_and_share_no_source(task):
    assert {k: len(v) for k, v in task.items()} == {"train": 15000, "valid": 500, "test": 1000}
    sources = {k: {e.src_text for e in v} for k, v in task.items()}
    assert sum(map(len, sources.values())) == 16500  # distinct within and across splits
    assert not sources["test"] & sources["train"] and not sources["valid"] & sources["train"]
    assert [e.line for e in task["test"]] == list(range(1, 1001))


def test_text_is_the_tokens_joined_by_spaces_and_stays_small(task):
    examples = [e for split in task.values() for e in split]
    assert all(e.src_text.split() == e.src and e.tgt_text.split() == e.tgt for e in examples)
    assert max(max(len(e.src), len(e.tgt)) for e in examples) <= 20
    for side in ("src", "tgt"):
        assert len({t for e in task["train"] for t in getattr(e, side)}) < 200
    # every test token is known from training, so exact match is reachable
    for side in ("src", "tgt"):
        train_types = {t for e in task["train"] for t in getattr(e, side)}
        assert {t for e in task["test"] for t in getattr(e, side)} <= train_types


def test_german_splitting_round_trips_through_num2words():
    # every number below 1200, then a stride through the rest (num2words is slow)
    for n in [*range(1200), *range(1200, 10001, 7)]:
        assert "".join(german_number(n)) == num2words(n, lang="de").lower()
    for n in range(1, 32):
        assert "".join(german_number(n, "ordinal")) == num2words(n, lang="de", to="ordinal")
    for year in range(1800, 2100):
        assert "".join(german_number(year, "year")) == num2words(year, lang="de", to="year")
    assert len({p for n in range(0, 10001, 7) for p in german_number(n)}) < 40


def test_german_splitting_follows_german_grammar():
    assert german_number(4521) == ("vier", "tausend", "fünf", "hundert", "ein", "und", "zwanzig")
    assert german_number(1998, "year") == ("neunzehn", "hundert", "acht", "und", "neunzig")
    assert german_number(17) == ("siebzehn",) and german_number(101) == ("ein", "hundert", "eins")
    assert split_german_number("einundzwanzigsten") == ["ein", "und", "zwanzigsten"]
    with pytest.raises(ConfigError):
        split_german_number("einundzwanzigx")


def test_english_words_drop_and_commas_and_hyphens():
    assert english_number(4521) == ("four", "thousand", "five", "hundred", "twenty", "one")
    assert english_number(21, "ordinal") == ("twenty", "first")


def test_units_come_before_tens_in_german_and_after_them_in_english(task):
    tens = {num2words(t, lang="en"): num2words(t, lang="de") for t in range(20, 100, 10)}
    units = {num2words(u, lang="en"): num2words(u, lang="de") for u in range(1, 10)}
    units["one"] = "ein"  # the compound form
    seen = 0
    for e in task["train"]:
        if len(e.src) == 2 and e.src[0] in tens and e.src[1] in units:
            assert e.tgt == [units[e.src[1]], "und", tens[e.src[0]]]
            seen += 1
    assert seen > 20


def test_the_day_moves_before_the_month(task):
    months = {en: de for en, de in zip(MONTHS_EN, MONTHS_DE)}
    seen = 0
    for e in task["train"]:
        if e.src[0] == "on" and e.src[1] in months:  # "on march 3 , 1 9 9 8"
            month, day, year = e.src[1], int("".join(e.src[2 : e.src.index(",")])), e.src[e.src.index(",") + 1 :]
            day_words = german_number(day, "ordinal")
            assert e.tgt[: len(day_words) + 2] == ["am", *day_words[:-1], day_words[-1] + "n", months[month]]
            assert e.tgt[len(day_words) + 2 :] == list(german_number(int("".join(year)), "year"))
            assert day <= calendar.monthrange(int("".join(year)), MONTHS_EN.index(month) + 1)[1]
            seen += 1
    assert seen > 100


def test_asking_for_more_distinct_sentences_than_exist_is_an_error(monkeypatch):
    import seqlearn.default_task as dt

    monkeypatch.setattr(dt, "TEMPLATES", ((dt._in_year, 1),))  # only 300 distinct sentences
    with pytest.raises(ConfigError):
        dt.make_default_task(n_train=400, n_valid=0, n_test=0)
