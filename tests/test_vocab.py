from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqlearn import ConfigError, Vocab, VocabError
from seqlearn.vocab import BOS, EOS, PAD, UNK


def test_specials_at_fixed_indices_and_frequency_order():
    v = Vocab.build([["b", "a", "a"], ["c", "a", "b"]])
    assert (v.pad_index, v.unk_index, v.bos_index, v.eos_index) == (0, 1, 2, 3)
    assert v.itos == [PAD, UNK, BOS, EOS, "a", "b", "c"]


token_lists = st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=8), max_size=8)


@given(token_lists, st.integers(1, 3), st.one_of(st.none(), st.integers(0, 5)))
def test_min_freq_and_max_size_against_counts(lists, min_freq, max_size):
    v = Vocab.build(lists, min_freq=min_freq, max_size=max_size)
    counts = Counter(t for tokens in lists for t in tokens)
    kept = v.itos[4:]
    eligible = {t for t, c in counts.items() if c >= min_freq}
    assert set(kept) <= eligible
    assert len(kept) == (len(eligible) if max_size is None else min(len(eligible), max_size))
    # frequency order: nothing dropped is more frequent than something kept
    if kept:
        assert all(counts[t] <= min(counts[k] for k in kept) for t in eligible - set(kept))


def test_encode_decode_round_trip_with_unk_and_eos():
    v = Vocab.build([["hello", "world"]])
    ids = v.encode(["hello", "mars"], add_bos=True, add_eos=True)
    assert ids == [v.bos_index, v["hello"], v.unk_index, v.eos_index]
    assert v.decode(ids) == ["hello", UNK]
    assert v.decode(ids + [v["world"]]) == ["hello", UNK]  # stops at </s>
    assert v.decode(ids, strip_specials=False) == [BOS, "hello", UNK, EOS]


def test_tag_vocab_without_unk_refuses_unknown_tags():
    tags = Vocab.build([["O", "B-PER"]], specials=(PAD,))
    assert tags.pad_index == 0 and tags.unk_index is None
    with pytest.raises(VocabError, match="'I-LOC'"):
        tags.encode(["I-LOC"])
    with pytest.raises(VocabError, match="</s>"):
        tags.encode(["O"], add_eos=True)


def test_extend_keeps_existing_indices():
    v = Vocab.build([["a", "b"]])
    before = list(v.itos)
    assert v.extend(["b", "z", "y", "z"]) == ["z", "y"]
    assert v.itos[: len(before)] == before and v.itos[-2:] == ["z", "y"]
    assert v["z"] == len(before)


def test_save_load_json(tmp_path):
    v = Vocab.build([["ä", "b", "ä"]], specials=(PAD, UNK))
    path = tmp_path / "v.json"
    v.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["itos"] == v.itos
    assert Vocab.load(path) == v


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a JSON vocabulary"),
        ('{"itos": ["a"]}', "not a seqlearn vocabulary"),
        ('{"format": "seqlearn.vocab/1", "specials": ["<pad>"], "itos": ["a"]}', "first entries"),
        ('{"format": "seqlearn.vocab/1", "specials": [], "itos": ["a", "a"]}', "duplicate"),
        ('{"format": "seqlearn.vocab/1", "specials": [], "itos": [1]}', "list of strings"),
    ],
)
def test_bad_vocab_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(VocabError, match=message) as err:
        Vocab.load(path)
    assert str(path) in str(err.value)


# -- coercing a model's vocabulary argument -------------------------------------------------------


def test_coerce_takes_a_vocab_its_dict_or_with_tokens_a_list():
    vocab = Vocab(["a", "b"])
    assert Vocab.coerce(vocab, "vocab") is vocab
    assert Vocab.coerce(vocab.to_dict(), "vocab") == vocab
    labels = Vocab.coerce(["pos", "neg"], "label_vocab", tokens=True, specials=())
    assert labels.itos == ["pos", "neg"] and labels.specials == ()


@pytest.mark.parametrize("value, tokens, kind", [
    (["a", "b"], False, "a Vocab, its to_dict\\(\\); got list"),
    (42, True, "a Vocab, its to_dict\\(\\) or a list of token strings; got int"),
    (["a", 1], True, "a Vocab, its to_dict\\(\\) or a list of token strings; got list"),
    (None, False, "a Vocab, its to_dict\\(\\); got NoneType"),
])  # fmt: skip
def test_coerce_names_the_argument_it_refuses(value, tokens, kind):
    with pytest.raises(ConfigError, match=f"^tgt_vocab must be {kind}"):
        Vocab.coerce(value, "tgt_vocab", tokens=tokens)


def test_coerce_reports_a_foreign_dict_as_a_vocabulary_error_naming_the_argument():
    with pytest.raises(VocabError, match="^word_vocab, the word vocabulary: not a seqlearn vocabulary"):
        Vocab.coerce({"itos": ["a"]}, "word_vocab")


def test_models_coerce_their_vocabulary_arguments_by_name():
    from seqlearn import LanguageModel, SequenceClassifier, Tagger

    with pytest.raises(ConfigError, match="^vocab must be a Vocab"):
        LanguageModel(("a", "b"))
    with pytest.raises(ConfigError, match="^char_vocab must be a Vocab"):
        Tagger(Vocab(["a"]), Vocab(["O"], specials=("<pad>",)), "abc")
    model = SequenceClassifier(Vocab(["a"]).to_dict(), ["yes", "no"], embedding_dim=2, hidden_size=2)
    assert model.label_vocab.itos == ["yes", "no"] and model.vocab == Vocab(["a"])
