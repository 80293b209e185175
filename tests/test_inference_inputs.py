"""What translate, predict (tagger and classifier) and generate/sample (language model
prompts) do with out-of-vocabulary, empty, whitespace-only, over-long and wrongly typed
inputs, against the same model fed the equivalent well-formed input."""
from __future__ import annotations

import warnings

import pytest
import torch

from seqlearn import Seq2Seq, Tagger, Vocab
from seqlearn.classifier import Classification, SequenceClassifier
from seqlearn.language_model import LanguageModel
from seqlearn.batching import StreamBatch
from seqlearn.errors import InputError, TruncationWarning
from seqlearn.inputs import MAX_INPUT_TOKENS

torch.set_num_threads(1)

SRC, TGT = ["a", "b", "c", "d"], ["x", "y", "z"]


def seq2seq(tokenizer: str = "whitespace") -> Seq2Seq:
    torch.manual_seed(0)
    model = Seq2Seq(Vocab(SRC), Vocab(TGT), embedding_dim=6, hidden_size=8, dropout=0.0, src_tokenizer=tokenizer)
    with torch.no_grad():
        model.generator.weight.mul_(3.0)  # clear-cut choices: </s> comes early for some inputs
    return model.eval()


def tagger(char_features: str | None = "cnn", tokenizer: str = "whitespace") -> Tagger:
    torch.manual_seed(0)
    return Tagger(Vocab(SRC), Vocab(["O", "B-X", "I-X"], specials=("<pad>",)), Vocab("abcd"), scheme="BIO",
                  char_features=char_features, tokenizer=tokenizer, embedding_dim=5, char_dim=3, char_out_dim=4,
                  hidden_size=4, dropout=0.0).eval()


def language_model(tokenizer: str = "whitespace", lowercase: bool = False) -> LanguageModel:
    torch.manual_seed(0)
    model = LanguageModel(Vocab(SRC), tokenizer=tokenizer, lowercase=lowercase, embedding_dim=6, num_layers=1,
                          dropout=0.0, input_dropout=0.0)  # fmt: skip
    with torch.no_grad():
        model.output.bias[model.vocab.eos_index] += 1.0  # sentences end within a few steps
    return model.eval()


def classifier(tokenizer: str = "whitespace", lowercase: bool = False) -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(Vocab(SRC), ["p", "q"], tokenizer=tokenizer, lowercase=lowercase, embedding_dim=5,
                              hidden_size=4, dropout=0.0).eval()  # fmt: skip


def same_hypotheses(a, b) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)


def same_tagged(a, b) -> None:
    assert (a.tokens, a.tags, a.spans) == (b.tokens, b.tags, b.spans)
    assert a.confidence == pytest.approx(b.confidence, abs=1e-6)


def same_classified(a, b) -> None:
    assert (a.tokens, a.labels) == (b.tokens, b.labels) and a.probabilities.keys() == b.probabilities.keys()
    assert list(a.probabilities.values()) == pytest.approx(list(b.probabilities.values()), abs=1e-6)


# -- out of vocabulary ----------------------------------------------------------------------


def test_translate_reads_unknown_tokens_as_unk_and_keeps_them_in_the_source():
    model = seq2seq()
    out = model.translate(["a zzz b", "qq"], beam_size=2, n_best=2, max_length=6, return_attention=True)
    same_hypotheses(out[0], model.translate([["a", "<unk>", "b"]], beam_size=2, n_best=2, max_length=6)[0])
    same_hypotheses(out[1], model.translate([["<unk>"]], beam_size=2, n_best=2, max_length=6)[0])
    for hyps, source in zip(out, (["a", "zzz", "b"], ["qq"])):
        for h in hyps:
            assert h.source == source
            assert h.attention.shape[1] == len(source) + 1  # a column per source token and </s>


def test_predict_tags_unknown_words_as_unk_one_tag_per_token():
    model = tagger(char_features=None)  # without characters, an unknown word is exactly <unk>
    got = model.predict(["a zzz b"])[0]
    expected = model.predict([["a", "<unk>", "b"]])[0]
    assert got.tokens == ["a", "zzz", "b"] and got.tags == expected.tags
    assert got.confidence == pytest.approx(expected.confidence)
    with_chars = tagger().predict(["a zzz b é"])[0]  # characters unseen in training too
    assert with_chars.tokens == ["a", "zzz", "b", "é"] and len(with_chars.tags) == len(with_chars.confidence) == 4


def test_prompts_and_classified_texts_read_unknown_tokens_as_unk_and_keep_them():
    lm, clf = language_model(), classifier()
    (beams,) = lm.generate("a zzz b", beam_size=2, n_best=2, max_length=6)
    same_hypotheses(beams, lm.generate([["a", "<unk>", "b"]], beam_size=2, n_best=2, max_length=6)[0])
    assert all(h.source == ["a", "zzz", "b"] for h in beams)
    got = clf.predict(["a zzz b", "qq"])
    for result, tokens in zip(got, (["a", "zzz", "b"], ["qq"])):
        expected = clf.predict([["<unk>" if t not in SRC else t for t in tokens]])[0]
        assert result.tokens == tokens and result.labels == expected.labels
        assert result.probabilities == pytest.approx(expected.probabilities)


# -- empty and whitespace-only ----------------------------------------------------------------

BLANKS = ["", " ", "\t", "\n", " \t\r\n ", "\u00a0\u2003"]


@pytest.mark.parametrize("tokenizer", ["whitespace", "char", "nltk:toktok", "nltk:treebank", "spacy:en"])
def test_blank_inputs_give_empty_results_whatever_the_tokenizer(tokenizer):
    model, tag = seq2seq(tokenizer), tagger(tokenizer=tokenizer)
    # Toktok alone would turn a tab into the token "&#9;", the char tokenizer a space into "▁"
    translated = model.translate(BLANKS + [[]], beam_size=2, n_best=2)
    assert all(len(h) == 1 and h[0].tokens == [] and h[0].score == 0.0 and h[0].source == [] for h in translated)
    tagged = tag.predict(BLANKS + [[]])
    assert all(t.tokens == t.tags == t.spans == t.confidence == [] for t in tagged)
    classified = classifier(tokenizer=tokenizer).predict(BLANKS + [[]])
    assert classified == [Classification([], [], {})] * (len(BLANKS) + 1)
    assert classified[0].label is None
    # a blank prompt has no tokens: the language model starts a new sentence, as for ""
    lm = language_model(tokenizer=tokenizer)
    fresh = lm.generate("", beam_size=2, n_best=2, max_length=6, min_length=2)[0]
    assert fresh[0].source == [] and fresh[0].tokens  # a sentence from scratch, not nothing
    for beams in lm.generate(BLANKS + [[]], beam_size=2, n_best=2, max_length=6, min_length=2):
        same_hypotheses(beams, fresh)
        assert all(h.source == [] for h in beams)


def test_blank_inputs_keep_their_place_among_others():
    model, tag = seq2seq(), tagger()
    mixed = model.translate(["", "a b", "  ", "c"], max_length=6)
    assert [h[0].tokens for h in (mixed[0], mixed[2])] == [[], []]
    same_hypotheses(mixed[1], model.translate("a b", max_length=6)[0])
    same_hypotheses(mixed[3], model.translate("c", max_length=6)[0])
    tagged = tag.predict(["a b", "\t", "c d a"])
    assert tagged[1].tokens == []
    same_tagged(tagged[0], tag.predict("a b")[0])
    same_tagged(tagged[2], tag.predict("c d a")[0])
    clf = classifier()
    classified = clf.predict(["", "a b", " ", "c d a"], batch_size=1)
    assert classified[0] == classified[2] == Classification([], [], {})
    same_classified(classified[1], clf.predict("a b")[0])
    same_classified(classified[3], clf.predict("c d a")[0])


# -- over-long ----------------------------------------------------------------------------------


def test_translate_cuts_long_inputs_with_a_warning_at_the_callers_line():
    model = seq2seq()
    long, short = "a b c d a b c d", "a b c"
    with pytest.warns(TruncationWarning, match=r"1 input\(s\) longer than 5 tokens cut.*input 1, 8 tokens") as rec:
        out = model.translate([short, long], max_input_length=5, max_length=6, return_attention=True)
    assert rec[0].filename == __file__
    same_hypotheses(out[1], model.translate([long.split()[:5]], max_length=6)[0])
    assert out[1][0].source == long.split()[:5] and out[1][0].attention.shape[1] == 6
    same_hypotheses(out[0], model.translate(short, max_length=6)[0])  # short inputs are untouched


def test_the_documented_default_limit_and_no_limit():
    model, tag = seq2seq(), tagger()
    tokens = ["a", "b"] * (MAX_INPUT_TOKENS // 2) + ["c"]  # one token over
    with pytest.warns(TruncationWarning, match=f"longer than {MAX_INPUT_TOKENS} tokens"):
        (hyp,) = model.translate([tokens], max_length=3)[0]
    assert hyp.source == tokens[:MAX_INPUT_TOKENS]
    with pytest.warns(TruncationWarning) as rec:
        (result,) = tag.predict([tokens])
    assert rec[0].filename == __file__
    assert result.tokens == tokens[:MAX_INPUT_TOKENS] and len(result.tags) == MAX_INPUT_TOKENS
    clf, lm = classifier(), language_model()
    with pytest.warns(TruncationWarning, match=f"longer than {MAX_INPUT_TOKENS} tokens"):
        assert clf.predict([tokens])[0].tokens == tokens[:MAX_INPUT_TOKENS]
    with pytest.warns(TruncationWarning, match=f"longer than {MAX_INPUT_TOKENS} tokens"):
        assert lm.generate([tokens], max_length=3)[0][0].source == tokens[-MAX_INPUT_TOKENS:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.translate([tokens], max_length=3, max_input_length=None)[0][0].source == tokens
        assert len(tag.predict([tokens], max_input_length=None)[0].tags) == len(tokens)
        assert clf.predict([tokens], max_input_length=None)[0].tokens == tokens
        assert lm.generate([tokens], max_length=3, max_input_length=None)[0][0].source == tokens
        model.translate([tokens[:MAX_INPUT_TOKENS]], max_length=3)  # exactly the limit: no warning


def test_predict_cuts_long_inputs_to_the_tags_of_the_kept_tokens():
    tag = tagger()
    with pytest.warns(TruncationWarning, match="predict: 1 input"):
        (cut,) = tag.predict(["a b c d a b"], max_input_length=4)
    same_tagged(cut, tag.predict([["a", "b", "c", "d"]])[0])


def test_classifier_reads_the_first_tokens_of_a_long_text_with_a_warning_at_the_callers_line():
    clf = classifier()
    with pytest.warns(TruncationWarning, match=r"predict: 1 input\(s\) longer than 4 tokens cut to their first 4") as rec:
        short, cut = clf.predict(["a b", "a b c d a b"], max_input_length=4)
    assert rec[0].filename == __file__
    same_classified(cut, clf.predict([["a", "b", "c", "d"]])[0])
    same_classified(short, clf.predict("a b")[0])
    assert cut.probabilities != clf.predict(["a b c d a b"], max_input_length=None)[0].probabilities


def test_a_long_prompt_keeps_its_last_tokens_the_context_of_the_continuation():
    lm = language_model()
    prompt = "c d a b c b d".split()
    for method, options in ((lm.generate, {}), (lm.sample, {"generator": torch.Generator().manual_seed(1)})):
        with pytest.warns(TruncationWarning, match=rf"{method.__name__}: 1 input\(s\) longer than 3 tokens cut to their "
                                                   r"last 3 \(the first is input 0, 7 tokens\)") as rec:
            (cut,) = method(" ".join(prompt), max_input_length=3, max_length=5, **options)
        assert rec[0].filename == __file__
        assert all(h.source == ["c", "b", "d"] == prompt[-3:] for h in cut)
    with pytest.warns(TruncationWarning):
        cut = lm.generate([prompt], max_input_length=3, beam_size=2, n_best=2, max_length=5)[0]
    same_hypotheses(cut, lm.generate([prompt[-3:]], beam_size=2, n_best=2, max_length=5)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (whole,) = lm.generate([prompt], max_input_length=None, max_length=5)
    assert whole[0].source == prompt


def test_lowercasing_models_read_prompts_and_texts_lowercased():
    lm, clf = language_model(lowercase=True), classifier(lowercase=True)
    same_hypotheses(lm.generate(["A B"], beam_size=2, n_best=2, max_length=5)[0],
                    lm.generate([["a", "b"]], beam_size=2, n_best=2, max_length=5)[0])
    assert lm.generate([["C", "D"]], max_length=5)[0][0].source == ["c", "d"]
    upper, lower = clf.predict(["A B", ["C", "D"]]), clf.predict(["a b", "c d"])
    assert [r.tokens for r in upper] == [["a", "b"], ["c", "d"]]
    for a, b in zip(upper, lower):
        same_classified(a, b)


# -- wrong types --------------------------------------------------------------------------------

WRONG = [
    (None, "takes a string or a list of sentences.*got NoneType"),
    (3, "got int 3"),
    (b"a b", "got bytes"),
    ({"a": "b"}, "got dict"),
    ([None], "input 0 is NoneType"),
    (["a", 7], "input 1 is int 7"),
    ([b"a"], "input 0 is bytes"),
    ([["a", 1]], "token 1 of input 0 is int 1"),
    ([["a", ["b"]]], "token 1 of input 0 is list"),
    ([["a"], [None]], "token 0 of input 1 is NoneType"),
]


@pytest.mark.parametrize("value, message", WRONG, ids=[repr(v) for v, _ in WRONG])
def test_wrong_types_are_input_errors_before_any_work(value, message):
    lm = language_model()
    for method, name in ((seq2seq().translate, "translate"), (tagger().predict, "predict"),
                         (classifier().predict, "predict"), (lm.generate, "generate"), (lm.sample, "sample")):
        with pytest.raises(InputError, match=f"^{name}.*{message}"):
            method(value)


def test_any_iterable_of_sentences_is_accepted():
    model, tag = seq2seq(), tagger()
    same_hypotheses(model.translate(s for s in ["a b"])[0], model.translate(["a b"])[0])
    same_tagged(tag.predict((tuple(s.split()) for s in ["a b"]))[0], tag.predict(["a b"])[0])
    clf, lm = classifier(), language_model()
    same_classified(clf.predict(s for s in ["a b"])[0], clf.predict(["a b"])[0])
    same_hypotheses(lm.generate((tuple(s.split()) for s in ["a b"]), max_length=5)[0], lm.generate(["a b"], max_length=5)[0])


def test_the_spacy_component_tags_a_long_doc_whole():
    import spacy

    from seqlearn.spacy_component import TaggerComponent

    component = TaggerComponent(tagger())
    doc = spacy.blank("en")(" ".join(["a", "b", "c"] * (MAX_INPUT_TOKENS // 3 + 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        component(doc)
    assert len(doc) > MAX_INPUT_TOKENS and all(t._.seqlearn_confidence is not None for t in doc)


# -- the mode inference runs in -------------------------------------------------------------------

INFERENCE = {
    "translate": (seq2seq, lambda m: m.translate(["a b"], beam_size=2, max_length=3)),
    "score": (seq2seq, lambda m: m.score(["a b"], ["x y"])),
    "tag": (tagger, lambda m: m.predict(["a b"])),
    "classify": (classifier, lambda m: m.predict(["a b"])),
    "generate": (language_model, lambda m: m.generate(["a b"], max_length=3)),
    "perplexity": (language_model, lambda m: m.perplexity(
        [StreamBatch(torch.tensor([[4, 5, 6]]), torch.tensor([[5, 6, 3]]), 0)])),
}


@pytest.mark.parametrize("name", INFERENCE)
def test_inference_runs_in_eval_mode_without_gradients_and_gives_every_module_its_mode_back(name):
    build, infer = INFERENCE[name]
    model = build().train()
    model.encoder.eval()  # a part kept in eval mode while the rest trains (frozen, say)
    modes = {key: m.training for key, m in model.named_modules()}
    seen = []
    model.encoder.register_forward_hook(lambda module, inputs, out: seen.append((model.training, torch.is_grad_enabled())))
    infer(model)
    assert seen and all(mode == (False, False) for mode in seen)
    assert {key: m.training for key, m in model.named_modules()} == modes

    def fail(module, inputs, out):
        raise RuntimeError("boom")

    model.encoder.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        infer(model)
    assert {key: m.training for key, m in model.named_modules()} == modes and torch.is_grad_enabled()
