"""Tokenizers: registry names, spaCy equivalence and caching, detokenization round trips."""
from __future__ import annotations

import gzip
import pickle

import pytest
import spacy
from hypothesis import given
from hypothesis import strategies as st

from seqlearn import registry
from seqlearn import tokenizers as tk
from seqlearn.errors import ConfigError, UnknownComponentError

ENGLISH = [
    'A man in a "dark-blue" T-shirt, sitting (alone) on a bench.',
    "It's late; the dog doesn't want to go, and she'll wait: 3.5 hours!",
    "Two children play with a $5 ball in the park?",
    "The woman's hat is red, isn't it?",
    "A “quoted” title [and a note] on 50% of the signs.",
]
GERMAN = [
    "Ein Mann sagt: „Hallo!“ und geht weiter.",
    "Zwei Kinder spielen (im Park) mit einem Ball, der rot ist.",
    "Eine Frau in einem T-Shirt wartet; ihr Hund auch.",
    'Er sagt: "Das ist gut."',
]


def test_builtin_names_build_their_classes():
    expected = {
        "spacy:en": tk.SpacyTokenizer,
        "nltk:toktok": tk.ToktokTokenizer,
        "nltk:treebank": tk.TreebankTokenizer,
        "whitespace": tk.WhitespaceTokenizer,
        "char": tk.CharTokenizer,
    }
    for name, cls in expected.items():
        tok = tk.get_tokenizer(name)
        assert type(tok) is cls
        assert tok.provenance.name == name and tok.provenance.builtin
    assert {"spacy", "nltk:toktok", "nltk:treebank", "whitespace", "char"} <= set(registry.tokenizers.names())


def test_get_tokenizer_passes_objects_through_and_rejects_others():
    class Upper:
        def tokenize(self, text):
            return text.upper().split()

    obj = Upper()
    assert tk.get_tokenizer(obj) is obj
    with pytest.raises(ConfigError, match="tokenize"):
        tk.get_tokenizer(42)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownComponentError) as err:
        tk.get_tokenizer("whitespce")
    assert "Did you mean 'whitespace'" in str(err.value)
    assert "nltk:toktok" in str(err.value)  # lists what is available


@pytest.mark.parametrize("lang, texts", [("en", ENGLISH), ("de", GERMAN)])
def test_spacy_tokens_are_spacy_blank_tokens(lang, texts):
    oracle = spacy.blank(lang)  # a separate pipeline, not the cached one
    tok = tk.get_tokenizer(f"spacy:{lang}")
    texts = texts + ["  extra   spaces\tand a tab  "]
    expected = [[t.text for t in oracle(s) if not t.is_space] for s in texts]
    assert [tok.tokenize(s) for s in texts] == expected
    assert tok.tokenize_batch(texts) == expected
    assert "extra" in expected[-1] and all(t.strip() for t in expected[-1])


def test_spacy_pipeline_is_built_once_per_language(monkeypatch):
    monkeypatch.delitem(tk._BLANK_PIPELINES, "nl", raising=False)
    calls = []
    real_blank = spacy.blank
    monkeypatch.setattr(spacy, "blank", lambda lang: calls.append(lang) or real_blank(lang))
    first, second = tk.get_tokenizer("spacy:nl"), tk.get_tokenizer("spacy:nl")
    assert calls == ["nl"]
    assert first is not second and first.nlp is second.nlp


def test_spacy_bad_or_missing_language():
    with pytest.raises(ConfigError, match="'zz'"):
        tk.get_tokenizer("spacy:zz")
    with pytest.raises(ConfigError, match="spacy:<lang>"):
        tk.get_tokenizer("spacy")


def test_spacy_tokenizer_pickles_by_language():
    tok = tk.get_tokenizer("spacy:de")
    copy = pickle.loads(pickle.dumps(tok))
    assert copy.nlp is tok.nlp and copy.provenance == tok.provenance
    assert copy.tokenize(GERMAN[0]) == tok.tokenize(GERMAN[0])


@pytest.mark.parametrize(
    "name, texts",
    [("spacy:en", ENGLISH), ("spacy:de", GERMAN), ("nltk:toktok", ENGLISH + GERMAN), ("nltk:treebank", ENGLISH[:4])],
)
def test_detokenize_round_trips_common_punctuation(name, texts):
    tok = tk.get_tokenizer(name)
    for text in texts:
        tokens = tok.tokenize(text)
        assert len(tokens) > len(text.split())  # punctuation really was split off
        assert tok.detokenize(tokens) == text


def test_rule_detokenize_quotes_alternate_and_clitics_attach():
    assert tk.rule_detokenize(['"', "a", '"', "b", '"', "c", '"']) == '"a" b "c"'
    assert tk.rule_detokenize(["do", "n't", "go", "("]) == "don't go ("
    assert tk.rule_detokenize(["it", "'", "s", "'", "ok", "'"]) == "it's 'ok'"


def test_whitespace_round_trip_normalizes_spacing():
    tok = tk.get_tokenizer("whitespace")
    assert tok.tokenize(" a  b\tc ") == ["a", "b", "c"]
    assert tok.detokenize(tok.tokenize(" a  b\tc ")) == "a b c"


@given(st.text(alphabet=st.characters(blacklist_characters="▁", blacklist_categories=("Cs",))))
def test_char_round_trip(text):
    tok = tk.CharTokenizer()
    tokens = tok.tokenize(text)
    assert len(tokens) == len(text) and " " not in tokens
    assert tok.detokenize(tokens) == text


@given(st.text())
def test_char_with_plain_space_round_trips_everything(text):
    tok = tk.CharTokenizer(space=" ")
    assert tok.detokenize(tok.tokenize(text)) == text


def test_char_space_must_be_one_character():
    assert tk.get_tokenizer("char").tokenize("a b") == ["a", "▁", "b"]
    with pytest.raises(ConfigError):
        tk.CharTokenizer(space="__")


@pytest.mark.shared_data
@pytest.mark.parametrize("lang, name", [("en", "spacy:en"), ("de", "spacy:de"), ("en", "nltk:toktok"), ("de", "nltk:toktok")])
def test_multi30k_val_round_trips(shared_data, lang, name):
    with gzip.open(shared_data / "multi30k" / f"val.{lang}.gz", "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    tok = tk.get_tokenizer(name)
    exact = sum(tok.detokenize(tokens) == line for line, tokens in zip(lines, tok.tokenize_batch(lines)))
    assert exact / len(lines) >= 0.99  # measured: 1012 of 1014 (an ellipsis and a 4' / a no-break space)
