"""SentencePiece subwords: training, the tokenizer, aligned vocabularies, subword data and
models whose checkpoints carry the SentencePiece model."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import warnings

import pytest
import pytorch_lightning as pl
import sentencepiece as spm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlearn import Seq2Seq, registry
from seqlearn.cli import main
from seqlearn.datamodules import TranslationDataModule
from seqlearn.errors import ConfigError
from seqlearn.readers import ParallelExample
from seqlearn.subwords import SentencePieceTokenizer, sample_lines, train_sentencepiece
from seqlearn.vocab import DEFAULT_SPECIALS, Vocab

def cpu_trainer(**options):
    options = {"logger": False, "enable_checkpointing": False, **options}
    return pl.Trainer(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **options)


# German and English sentences with digits, punctuation and a few non-Latin words
CORPUS = [
    "Ein Hund läuft über die grüne Wiese.",
    "A dog runs across the green meadow.",
    "Zwei Männer spielen Fußball im Park, 1998.",
    "Two men play football in the park, 1998.",
    "Die Katze schläft auf dem Sofa — ruhig!",
    "The cat sleeps on the sofa — quietly!",
    "Москва и Киев; 東京 and Αθήνα?",
] * 20


@pytest.fixture(scope="module")
def tokenizer() -> SentencePieceTokenizer:
    return SentencePieceTokenizer(train_sentencepiece(CORPUS, vocab_size=400))


# -- training ---------------------------------------------------------------------------------


def test_training_is_seeded_and_puts_seqlearns_specials_first():
    first = train_sentencepiece(CORPUS, vocab_size=400, seed=3)
    assert first == train_sentencepiece(CORPUS, vocab_size=400, seed=3)
    sp = spm.SentencePieceProcessor(model_proto=first)
    assert [sp.id_to_piece(i) for i in range(4)] == list(DEFAULT_SPECIALS)
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert 260 < sp.get_piece_size() <= 400  # specials, 256 bytes and learned pieces; at most vocab_size


def test_unigram_and_bpe_differ_and_bad_options_are_config_errors():
    assert train_sentencepiece(CORPUS, vocab_size=400, model_type="unigram") != train_sentencepiece(CORPUS, vocab_size=400)
    with pytest.raises(ConfigError, match="model_type"):
        train_sentencepiece(CORPUS, model_type="wordpiece")
    with pytest.raises(ConfigError, match="vocab_size"):
        train_sentencepiece(CORPUS, vocab_size=100)


@given(st.lists(st.integers(0, 50), max_size=80), st.integers(1, 30), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_the_training_sample_is_capped_seeded_and_drawn_from_the_lines(numbers, size, seed):
    lines = [f"line {n} {i}" for i, n in enumerate(numbers)]
    sample = sample_lines(iter(lines), size, seed)
    if len(lines) <= size:
        assert sample == lines
    else:
        assert len(sample) == size and len(set(sample)) == size and set(sample) <= set(lines)
    assert sample == sample_lines(iter(lines), size, seed)


def test_the_sample_is_uniform():
    # each of 100 lines kept by a 10-line sample with probability 1/10: over 400 seeds
    # every line is kept about 40 times
    counts = [0] * 100
    for seed in range(400):
        for line in sample_lines((str(i) for i in range(100)), 10, seed):
            counts[int(line)] += 1
    assert min(counts) > 15 and max(counts) < 70


# -- the tokenizer ---------------------------------------------------------------------------


# The contract: exact for every string without U+2581, the symbol SentencePiece writes for
# a space (models trained here keep text unnormalized and whitespace as written).
@given(st.text(st.characters(blacklist_characters="\u2581", blacklist_categories=("Cs",)), max_size=60))
@settings(max_examples=300, deadline=None)
def test_detokenize_inverts_tokenize_on_any_text(tokenizer, text):
    pieces = tokenizer.tokenize(text)
    assert tokenizer.detokenize(pieces) == text
    assert "<unk>" not in pieces  # byte fallback: nothing is unknown
    assert tokenizer.tokenize_batch([text, text]) == [pieces, pieces]


@given(st.text(st.characters(blacklist_characters="\u2581", blacklist_categories=("Cs",)), max_size=40))
@settings(max_examples=100, deadline=None)
def test_vocabulary_ids_are_sentencepiece_ids(tokenizer, text):
    vocab = Vocab.from_sentencepiece(tokenizer)
    assert vocab.encode(tokenizer.tokenize(text)) == tokenizer.sp.encode(text)
    assert tokenizer.sp.unk_id() not in tokenizer.sp.encode(text)


def test_vocabulary_of_the_model():
    proto = train_sentencepiece(CORPUS, vocab_size=400)
    vocab = Vocab.from_sentencepiece(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    assert vocab.itos == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert vocab.unk_index == sp.unk_id() == 1
    assert (vocab.pad_index, vocab.bos_index, vocab.eos_index) == (0, 2, 3)


def test_vocabulary_of_a_model_with_sentencepieces_default_layout(tmp_path):
    # <unk> 0, <s> 1, </s> 2, no pad: the other pieces keep their order behind seqlearn's specials
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "m"), vocab_size=80,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    tok = registry.tokenizers.build(f"sentencepiece:{tmp_path / 'm.model'}")
    vocab = Vocab.from_sentencepiece(tok)
    assert vocab.itos == list(DEFAULT_SPECIALS) + [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    text = "Ein Hund schläft. Ω"  # Ω is unknown to this model (no byte fallback)
    assert vocab.encode(tok.tokenize(text)) == [i + 1 if i >= 3 else vocab.unk_index for i in sp.encode(text)]


def test_registry_name_loads_a_model_file_and_is_listed(tmp_path, capsys):
    path = tmp_path / "x.model"
    path.write_bytes(train_sentencepiece(CORPUS, vocab_size=400))
    tok = registry.tokenizers.build(f"sentencepiece:{path}")
    assert isinstance(tok, SentencePieceTokenizer) and tok.model_proto == path.read_bytes()
    assert tok.provenance.name == f"sentencepiece:{path}" and tok.provenance.builtin
    assert main(["plugins"]) == 0
    assert "sentencepiece" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="cannot read"):
        registry.tokenizers.build(f"sentencepiece:{tmp_path / 'missing.model'}")
    with pytest.raises(ConfigError, match="needs a model"):
        registry.tokenizers.build("sentencepiece")
    with pytest.raises(ConfigError, match="not a SentencePiece model"):
        SentencePieceTokenizer(b"not a model")


def test_sampling_varies_the_segmentation_but_never_the_text(tokenizer):
    text = "Zwei Männer spielen Fußball im Park, 1998."
    sampling = SentencePieceTokenizer(tokenizer.model_proto, alpha=0.3)
    samples = [sampling.sample(text) for _ in range(30)]
    assert all(sampling.detokenize(s) == text for s in samples)
    assert len({tuple(s) for s in samples}) > 5
    assert sampling.tokenize(text) == tokenizer.tokenize(text)  # tokenize stays deterministic
    assert tokenizer.sample(text) == tokenizer.tokenize(text)  # no alpha: no sampling


# -- subword data ----------------------------------------------------------------------------

PAIRS = [ParallelExample(de, en, de.split(), en.split(), i + 1) for i, (de, en) in enumerate(zip(CORPUS[0:6:2] * 20, CORPUS[1:6:2] * 20))]
VALID = PAIRS[:3]


def test_joint_subwords_are_one_model_and_vocabulary_trained_on_both_sides():
    dm = TranslationDataModule(PAIRS, VALID, subwords="bpe", vocab_size=400, max_sentences=4)
    dm.setup("fit")
    assert dm.src_tokenizer is dm.tgt_tokenizer and dm.src_vocab is dm.tgt_vocab
    texts = [t for ex in PAIRS for t in (ex.src_text, ex.tgt_text)]
    assert dm.src_tokenizer.model_proto == train_sentencepiece(
        [ex.src_text for ex in PAIRS] + [ex.tgt_text for ex in PAIRS], vocab_size=400)
    assert dm.src_vocab == Vocab.from_sentencepiece(dm.src_tokenizer)
    ex = dm.split("valid")[0]
    assert ex.src == dm.src_tokenizer.tokenize(ex.src_text) and ex.tgt == dm.tgt_tokenizer.tokenize(ex.tgt_text)
    assert all(dm.src_vocab.unk_index not in ids for _, src, tgt in dm.encoded("train") for ids in (src, tgt))
    assert len(texts) == 2 * len(PAIRS)


def test_separate_subword_models_per_side_and_max_length_in_pieces():
    dm = TranslationDataModule(PAIRS, subwords="unigram", vocab_size=400, joint=False, max_sentences=4, max_length=35)
    dm.setup("fit")
    assert dm.src_tokenizer.model_proto == train_sentencepiece([ex.src_text for ex in PAIRS], model_type="unigram",
                                                              vocab_size=400)
    assert dm.tgt_tokenizer.model_proto == train_sentencepiece([ex.tgt_text for ex in PAIRS], model_type="unigram",
                                                              vocab_size=400)
    kept = [ex for ex in PAIRS if len(dm.src_tokenizer.tokenize(ex.src_text)) <= 35
            and len(dm.tgt_tokenizer.tokenize(ex.tgt_text)) <= 35]
    assert 0 < len(kept) < len(PAIRS)
    assert [ex.src_text for ex in dm.split("train")] == [ex.src_text for ex in kept]


def test_subword_options_are_checked():
    with pytest.raises(ConfigError, match="subwords"):
        TranslationDataModule(PAIRS, subwords="wordpiece")
    with pytest.raises(ConfigError, match="src_vocab"):
        TranslationDataModule(PAIRS, subwords="bpe", src_vocab=Vocab(["a"]))
    dm = TranslationDataModule(PAIRS, subword_alpha=0.1, max_sentences=4)
    dm.setup("fit")
    with pytest.raises(ConfigError, match="SentencePiece"):
        dm.train_dataloader()


def _epoch(loader):
    out = {}
    for batch in loader:
        rows = zip(batch.index.tolist(), batch.src.ids.tolist(), batch.src.lengths.tolist(), batch.tgt.ids.tolist(),
                   batch.tgt.lengths.tolist())
        for i, src, src_len, tgt, tgt_len in rows:
            out[i] = (src[:src_len], tgt[:tgt_len])
    return out


def test_training_batches_sample_while_validation_batches_are_deterministic():
    dm = TranslationDataModule(PAIRS, VALID, subwords="bpe", vocab_size=400, max_sentences=8, subword_alpha=0.2)
    dm.setup("fit")
    vocab, tok = dm.tgt_vocab, dm.tgt_tokenizer
    epochs = [_epoch(dm.train_dataloader()) for _ in range(2)]
    assert epochs[0].keys() == epochs[1].keys() == set(range(len(PAIRS)))
    assert sum(epochs[0][i] != epochs[1][i] for i in epochs[0]) > len(PAIRS) // 2
    for i, (src, tgt) in epochs[0].items():  # sampled segmentations of the very same text
        assert tok.detokenize(vocab.decode(src)) == PAIRS[i].src_text
        assert tok.detokenize(vocab.decode(tgt)) == PAIRS[i].tgt_text
    validation = [_epoch(dm.val_dataloader()) for _ in range(2)]
    assert validation[0] == validation[1] == {
        i: (vocab.encode(tok.tokenize(ex.src_text), add_eos=True),
            vocab.encode(tok.tokenize(ex.tgt_text), add_bos=True, add_eos=True)) for i, ex in enumerate(VALID)
    }


# -- models ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subword_checkpoint(tmp_path_factory):
    """A tiny model trained on pieces of a SentencePiece model loaded from a file, its checkpoint."""
    root = tmp_path_factory.mktemp("subword_model")
    model_file = root / "joint.model"
    model_file.write_bytes(train_sentencepiece([t for ex in PAIRS for t in (ex.src_text, ex.tgt_text)], vocab_size=400))
    name = f"sentencepiece:{model_file}"
    tok = registry.tokenizers.build(name)
    vocab = Vocab.from_sentencepiece(tok)
    dm = TranslationDataModule(PAIRS, VALID, src_tokenizer=name, tgt_tokenizer=name, src_vocab=vocab, tgt_vocab=vocab,
                               max_sentences=16)
    torch.manual_seed(0)
    model = Seq2Seq(vocab, vocab, src_tokenizer=name, tgt_tokenizer=name, embedding_dim=16, hidden_size=32, lr=1e-2)
    trainer = cpu_trainer(max_epochs=40, limit_val_batches=0)
    trainer.fit(model, dm)
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return model, path, model_file


SOURCES = ["Ein Hund läuft über die grüne Wiese.", "Zwei Männer spielen Fußball im Park, 1998.", "Ω und 東京"]


def test_a_subword_checkpoint_translates_in_a_fresh_process_after_the_model_file_is_gone(subword_checkpoint, tmp_path):
    model, path, model_file = subword_checkpoint
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hparams["tokenizer_models"]["src"] == hparams["tokenizer_models"]["tgt"] == model_file.read_bytes()
    expected = [[h.text, h.tokens, h.score] for h in (hyps[0] for hyps in model.translate(SOURCES, max_length=12))]
    assert [e[0] for e in expected] == [model.tgt_tokenizer.detokenize(e[1]) for e in expected]
    model_file.unlink()
    code = (
        "import json, torch\n"
        "from seqlearn.seq2seq import Seq2Seq\n"
        f"loaded = Seq2Seq.load_from_checkpoint({str(path)!r})\n"
        f"tuned = Seq2Seq.from_pretrained({str(path)!r})\n"
        f"out = [[[h[0].text, h[0].tokens, h[0].score] for h in m.translate({SOURCES!r}, max_length=12)]\n"
        "       for m in (loaded, tuned)]\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    for out in json.loads(result.stdout.strip().splitlines()[-1]):
        assert [o[:2] for o in out] == [e[:2] for e in expected]
        assert [o[2] for o in out] == pytest.approx([e[2] for e in expected], abs=1e-5)
    cli = subprocess.run([sys.executable, "-m", "seqlearn.cli", "translate", "--ckpt", str(path), "--max-length", "12",
                          "--beam-size", "1"],
                         input="\n".join(SOURCES) + "\n", capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert cli.stdout.split("\n")[:-1] == [e[0] for e in expected]


def test_a_checkpoint_without_model_bytes_loads_as_before(subword_checkpoint, tmp_path):
    # what 0.1.0 writes: tokenizer names only, rebuilt through the registry
    model, path, _ = subword_checkpoint
    ckpt = torch.load(path, weights_only=True)
    hparams = ckpt["hyper_parameters"]
    del hparams["tokenizer_models"]
    hparams["src_tokenizer"] = hparams["tgt_tokenizer"] = "whitespace"
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    loaded = Seq2Seq.load_from_checkpoint(old)
    assert loaded.hparams.tokenizer_models is None and type(loaded.src_tokenizer).__name__ == "WhitespaceTokenizer"
    pieces = [model.src_tokenizer.tokenize(s) for s in SOURCES]
    assert [h[0].tokens for h in loaded.translate(pieces, max_length=8)] == [
        h[0].tokens for h in model.translate(pieces, max_length=8)]


def test_raw_strings_and_token_lists_translate_alike_with_text(subword_checkpoint):
    model, _, _ = subword_checkpoint
    by_text = model.translate(SOURCES[0])[0][0]
    by_pieces = model.translate([model.src_tokenizer.tokenize(SOURCES[0])])[0][0]
    assert by_text.tokens == by_pieces.tokens and "<unk>" not in by_text.tokens
    sp = model.tgt_tokenizer.sp  # decoding ids, not pieces, as a second opinion
    assert by_text.text == by_pieces.text == sp.decode(model.tgt_vocab.encode(by_text.tokens))
    assert model.translate([""])[0][0].text == ""


def test_fine_tuning_reuses_the_checkpoints_subword_model(subword_checkpoint):
    model, path, _ = subword_checkpoint
    tuned = Seq2Seq.from_pretrained(path, lr=1e-3)
    assert tuned.src_tokenizer.model_proto == model.src_tokenizer.model_proto
    new_domain = [ParallelExample("Der Xylophonist übt Quantenmechanik.", "The xylophonist practises quantum mechanics.",
                                  [], [], 1)]
    assert "Xylophonist" not in " ".join(ex.src_text for ex in PAIRS)
    dm = TranslationDataModule(new_domain, src_tokenizer=tuned.src_tokenizer, tgt_tokenizer=tuned.tgt_tokenizer,
                               src_vocab=tuned.src_vocab, tgt_vocab=tuned.tgt_vocab, max_sentences=1)
    dm.setup("fit")
    ((_, src, tgt),) = dm.encoded("train")
    assert tuned.src_vocab.unk_index not in src and tuned.tgt_vocab.unk_index not in tgt
    assert tuned.tgt_tokenizer.detokenize(tuned.tgt_vocab.decode(tgt)) == new_domain[0].tgt_text
    # and the word-level vocabulary of the same data would know neither word
    words = TranslationDataModule(PAIRS, max_sentences=1)
    words.setup("fit")
    assert words.src_vocab.encode(["Xylophonist"]) == [words.src_vocab.unk_index]
    cpu_trainer(max_epochs=1, limit_val_batches=0).fit(tuned, dm)
    assert tuned.translate(new_domain[0].src_text, max_length=5)[0][0].text is not None


def test_the_cli_trains_subwords_and_its_checkpoint_carries_them(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "seqlearn.cli", "fit", "--config", "default_task", "--model.embedding_dim", "8",
         "--model.hidden_size", "16", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.default_root_dir", str(tmp_path), "--data.subwords", "bpe", "--data.vocab_size", "300"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.rglob("*.ckpt")
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    dm = TranslationDataModule("default", subwords="bpe", vocab_size=300)
    dm.setup("fit")
    assert hparams["src_tokenizer"] == hparams["tgt_tokenizer"] == "sentencepiece"
    assert hparams["tokenizer_models"]["src"] == dm.src_tokenizer.model_proto
    assert hparams["src_vocab"]["itos"] == dm.src_vocab.itos
    assert not [k for k in hparams if k.startswith("_")]


def test_an_export_carries_the_subword_models_and_serves_text(subword_checkpoint, tmp_path):
    from seqlearn.export import export
    from seqlearn.serving import load

    model, _, _ = subword_checkpoint
    export(model, tmp_path / "exported")
    assert (tmp_path / "exported" / "src_tokenizer.model").read_bytes() == model.src_tokenizer.model_proto
    served = load(tmp_path / "exported")
    outputs = served.translate(SOURCES, max_length=12)
    expected = model.translate(SOURCES, max_length=12)
    assert outputs == [h[0].tokens for h in expected]
    assert [served.detokenize(o) for o in outputs] == [h[0].text for h in expected]


def test_validation_bleu_is_standard_sacrebleu_with_the_piece_bleu_beside_it(subword_checkpoint):
    import sacrebleu

    model, _, _ = subword_checkpoint
    held_out = [("Zwei Hunde schlafen im Park.", "Two dogs sleep in the park."),
                ("Die Männer laufen über die Wiese!", "The men run across the meadow!")]
    valid = [ParallelExample(de, en, de.split(), en.split(), i + 1) for i, (de, en) in enumerate(held_out)]
    dm = TranslationDataModule(PAIRS, valid, src_tokenizer=model.src_tokenizer, tgt_tokenizer=model.tgt_tokenizer,
                               src_vocab=model.src_vocab, tgt_vocab=model.tgt_vocab, max_sentences=2)
    metrics = cpu_trainer().validate(model, dm, verbose=False)[0]
    hyps = [h[0] for h in model.translate([ex.src_text for ex in valid])]
    refs = [ex.tgt_text for ex in valid]
    assert metrics["val_bleu"] == pytest.approx(sacrebleu.corpus_bleu([h.text for h in hyps], [refs]).score)
    pieces = [" ".join(model.tgt_tokenizer.tokenize(r)) for r in refs]
    assert metrics["val_bleu_tok"] == pytest.approx(
        sacrebleu.corpus_bleu([" ".join(h.tokens) for h in hyps], [pieces], tokenize="none").score)
    assert metrics["val_bleu"] != metrics["val_bleu_tok"]


def test_training_on_pieces_with_other_tokenizers_in_the_model_warns_at_fit_start(tokenizer):
    # the mistake a Multi30k benchmark run made: pieces trained fine, but val_bleu and translate()
    # detokenized them with the model's default whitespace tokenizer (BLEU near 0)
    vocab = Vocab.from_sentencepiece(tokenizer)
    dm = TranslationDataModule(PAIRS, src_tokenizer=tokenizer, tgt_tokenizer=tokenizer, src_vocab=vocab,
                               tgt_vocab=vocab, max_sentences=16)

    def fit(**tokenizers):
        model = Seq2Seq(vocab, vocab, embedding_dim=8, hidden_size=8, val_bleu=False, **tokenizers)
        cpu_trainer(max_steps=1, limit_val_batches=0).fit(model, dm)

    with pytest.warns(UserWarning) as caught:
        fit()
    for side in ("src", "tgt"):
        assert any(re.search(rf"splits {side} text with a SentencePiece model.*'whitespace'", str(w.message))
                   for w in caught), side
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*SentencePiece model, this Seq2Seq")
        fit(src_tokenizer=tokenizer, tgt_tokenizer=tokenizer)
