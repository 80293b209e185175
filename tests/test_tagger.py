"""Tagger: overfits a CoNLL sample, constrained decoding, confidences against brute force,
checkpoints, pretrained vectors, and ``seqlearn tag``."""
from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from seqeval import metrics as seqeval_metrics
from seqeval import scheme as seqeval_scheme

from seqlearn import cli, registry, tag_schemes
from seqlearn.cells import Cell
from seqlearn.datamodules import TaggingDataModule
from seqlearn.errors import ConfigError, UnknownComponentError
from seqlearn.readers import read_conll
from seqlearn.tagger import Tagger, TextSpan, tagging_metrics
from seqlearn.tagger_cli import is_tagger_config, tag_lines
from seqlearn.vocab import Vocab

torch.set_num_threads(1)

# the first five sentences of CoNLL-2003 eng.train (IOB2 NER in the last column, POS second)
SAMPLE = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
on IN B-PP O
Thursday NNP B-NP O
it PRP B-NP O
disagreed VBD B-VP O
with IN B-PP O
German JJ B-NP B-MISC
advice NN I-NP O
to TO B-PP O
consumers NNS B-NP O
. . O O

Germany NNP B-NP B-LOC
's POS B-NP O
representative NN I-NP O
to TO B-PP O
the DT B-NP O
European NNP I-NP B-ORG
Union NNP I-NP I-ORG
's POS B-NP O
veterinary JJ I-NP O
committee NN I-NP O
Werner NNP I-NP B-PER
Zwingmann NNP I-NP I-PER
said VBD B-VP O
. . O O
"""
SMALL = dict(embedding_dim=16, char_dim=8, char_out_dim=8, hidden_size=16, dropout=0.0, lr=0.05)


def _fit(tagger: Tagger, dm: TaggingDataModule, root: Path, epochs: int) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs, check_val_every_n_epoch=epochs, num_sanity_val_steps=0, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, accelerator="cpu",
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
    )  # fmt: skip
    trainer.fit(tagger, dm)
    return trainer


@pytest.fixture(scope="module")
def sample_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conll") / "sample.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ner(sample_path, tmp_path_factory):
    """A BiLSTM-CRF with char-CNN trained to overfit the sample (BIO data, BIOUL training)."""
    torch.manual_seed(0)
    dm = TaggingDataModule(sample_path, sample_path, scheme="BIO", target_scheme="BIOUL")
    tagger = Tagger.from_datamodule(dm, char_features="cnn", head="crf", **SMALL)
    trainer = _fit(tagger, dm, tmp_path_factory.mktemp("ner"), epochs=40)
    return tagger, trainer


def test_overfits_sample_with_gold_tags_and_spans(ner, sample_path):
    tagger, trainer = ner
    assert trainer.callback_metrics["val_f1"] == 1.0
    assert trainer.callback_metrics["val_acc"] == 1.0
    gold = read_conll(sample_path)
    predicted = tagger.predict([" ".join(s.tokens) for s in gold])
    for sentence, result in zip(gold, predicted):
        assert result.tokens == sentence.tokens
        assert result.tags == sentence.tags  # the data's scheme (see test_predict_returns_the_data_scheme)
        expected = [TextSpan(s.label, s.start, s.end, " ".join(sentence.tokens[s.start : s.end]))
                    for s in tag_schemes.spans(sentence.tags, "BIO")]  # fmt: skip
        assert result.spans == expected
    assert predicted[3].spans[0] == TextSpan("ORG", 1, 3, "European Commission")
    # token lists and strings give the same result
    assert tagger.predict([gold[0].tokens]) == predicted[:1]


def test_predict_returns_the_data_scheme_unless_asked_for_another(ner, sample_path):
    """Trained in BIOUL on BIO files: seqeval's strict IOB2 mode, the oracle, reads predict's
    tags (it refuses BIOUL's U- tags), and scheme="BIOUL" gives the tags trained on."""
    tagger, _ = ner
    gold = [s.tags for s in read_conll(sample_path)]
    sentences = [s.tokens for s in read_conll(sample_path)]
    assert tagger.scheme == "BIOUL" and tagger.hparams.data_scheme == "BIO"
    strict = {"mode": "strict", "scheme": seqeval_scheme.IOB2}
    predicted = [t.tags for t in tagger.predict(sentences)]
    assert seqeval_metrics.f1_score(gold, predicted, **strict) == 1.0
    bioul = [t.tags for t in tagger.predict(sentences, scheme="BIOUL")]
    assert any(tag.startswith("U-") for tags in bioul for tag in tags)
    with pytest.raises(ValueError):  # what predict returned before: strict IOB2 refuses U-PER
        seqeval_metrics.f1_score(gold, bioul, **strict)
    assert seqeval_metrics.f1_score([tag_schemes.convert_tags(g, "BIO", "BIOUL") for g in gold], bioul,
                                    mode="strict", scheme=seqeval_scheme.BILOU) == 1.0  # fmt: skip
    iob1 = [t.tags for t in tagger.predict(sentences, scheme="iob1")]
    assert iob1 == [tag_schemes.convert_tags(g, "BIO", "IOB1") for g in gold]
    with pytest.raises(ConfigError, match="unknown tag scheme"):
        tagger.predict(sentences, scheme="BILUO-ish")


def test_pos_with_softmax_head_and_char_bilstm(sample_path, tmp_path):
    torch.manual_seed(1)
    dm = TaggingDataModule(sample_path, sample_path, tag_column=1)
    tagger = Tagger.from_datamodule(dm, char_features="bilstm", head="softmax", **SMALL)
    trainer = _fit(tagger, dm, tmp_path, epochs=40)
    assert trainer.callback_metrics["val_acc"] == 1.0
    assert "val_f1" not in trainer.callback_metrics  # no chunk scheme, no span metrics
    sentence = read_conll(sample_path, tag_column=1)[0]
    result = tagger.predict(" ".join(sentence.tokens))[0]
    assert result.tags == sentence.tags and result.spans == []
    # the confidence is the softmax probability of the predicted (argmax) tag
    words, chars = tagger.encode([sentence.tokens])
    tagger.eval()
    probs = tagger(words, chars).softmax(-1)[0]
    assert result.confidence == pytest.approx(probs.max(-1).values.tolist(), abs=1e-6)


def _random_tagger(scheme: str, head: str, types=("PER", "LOC", "ORG"), seed: int = 0) -> Tagger:
    torch.manual_seed(seed)
    letters = {"BIO": "BI", "IOB1": "BI", "BIOUL": "BILU"}[scheme]
    tags = ["O"] + [f"{p}-{t}" for t in types for p in letters]
    words = Vocab([f"w{i}" for i in range(20)])
    chars = Vocab("w0123456789")
    return Tagger(words, Vocab(tags, specials=("<pad>",)), chars, scheme=scheme, head=head, **SMALL).eval()


def _random_sentences(n: int, seed: int) -> list[list[str]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (n,), generator=gen).tolist()
    return [[f"w{int(i)}" for i in torch.randint(0, 30, (k,), generator=gen)] for k in lengths]  # w20+ unknown


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "BIOUL"])
def test_crf_decoding_never_violates_the_scheme(scheme):
    sentences = _random_sentences(200, seed=3)
    for seed in range(3):
        tagger = _random_tagger(scheme, "crf", seed=seed)
        with torch.no_grad():  # large random scores, so that the scheme has to push back
            tagger.emission.weight.mul_(20)
        for result in tagger.predict(sentences):
            assert tag_schemes.find_violation(result.tags, scheme) is None, result.tags
    # the same untrained network with a softmax head does break the scheme
    softmax = _random_tagger(scheme, "softmax")
    with torch.no_grad():
        softmax.emission.weight.mul_(20)
    assert any(tag_schemes.find_violation(r.tags, scheme) is not None for r in softmax.predict(sentences))


def test_confidence_is_the_crf_marginal_of_the_predicted_tag():
    """Against brute force: every path the scheme allows, scored with the CRF's own
    parameters; marginals summed over paths, and the best path."""
    tagger = _random_tagger("BIO", "crf", types=("PER", "LOC"), seed=5)
    with torch.no_grad():
        tagger.emission.weight.mul_(5)
    names = tagger.tag_names
    crf = tagger.crf
    for tokens in (["w1", "w7", "w3", "w25"], ["w4"], ["w9", "w2"]):
        result = tagger.predict([tokens])[0]
        words, chars = tagger.encode([tokens])
        with torch.no_grad():
            emissions = tagger(words, chars)[0].double()
        start, trans, end = (p.detach().double() for p in (crf.start_transitions, crf.transitions, crf.end_transitions))
        scores = {}
        for path in itertools.product(range(len(names)), repeat=len(tokens)):
            if tag_schemes.find_violation([names[i] for i in path], "BIO") is not None:
                continue
            s = start[path[0]] + end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path))
            scores[path] = float(s + sum(trans[a, b] for a, b in zip(path, path[1:])))
        log_z = torch.logsumexp(torch.tensor(list(scores.values())), 0)
        best = max(scores, key=scores.get)
        assert result.tags == [names[i] for i in best]
        for t, k in enumerate(best):
            marginal = sum(math.exp(s - log_z) for p, s in scores.items() if p[t] == k)
            assert result.confidence[t] == pytest.approx(marginal, abs=1e-5)
        assert all(0.0 <= c <= 1.0 for c in result.confidence)


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_checkpoint_round_trip_gives_identical_predictions(ner, sample_path):
    tagger, trainer = ner
    path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    assert _plain(checkpoint["hyper_parameters"])
    loaded = Tagger.load_from_checkpoint(path, weights_only=True)
    sentences = [" ".join(s.tokens) for s in read_conll(sample_path)] + ["unseen words in Brussels", ""]
    assert loaded.predict(sentences) == tagger.predict(sentences)
    assert loaded.predict([""])[0].tags == []


def test_pretrained_vectors_initialize_rows_and_are_not_reread(sample_path, tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("2 3\neu 1 2 3\nGerman 4 5 6\n", encoding="utf-8")
    dm = TaggingDataModule(sample_path, sample_path, scheme="BIO", char_features=False)
    tagger = Tagger.from_datamodule(dm, char_features=None, embeddings=str(vectors), **{**SMALL, "embedding_dim": 3})
    rows = tagger.word_embedding.weight
    assert rows[tagger.word_vocab.stoi["EU"]].tolist() == [1.0, 2.0, 3.0]  # by lowercase fallback
    assert rows[tagger.word_vocab.stoi["German"]].tolist() == [4.0, 5.0, 6.0]
    assert tagger.embeddings_coverage.found == 2
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(tagger, dm)
    trainer.save_checkpoint(tmp_path / "t.ckpt")
    vectors.unlink()
    loaded = Tagger.load_from_checkpoint(tmp_path / "t.ckpt")
    assert loaded.hparams.embeddings is None
    assert torch.equal(loaded.word_embedding.weight, tagger.word_embedding.weight)


def test_tag_command_writes_conll(ner, monkeypatch, capsys):
    tagger, trainer = ner
    path = str(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt")
    monkeypatch.setattr("sys.stdin", io.StringIO("EU rejects German call to boycott British lamb .\n\nPeter Blackburn\n"))
    assert cli.main(["tag", "--ckpt", path]) == 0
    expected = tagger.predict(["EU rejects German call to boycott British lamb .", "Peter Blackburn"])
    lines = [f"{w}\t{t}" for w, t in zip(expected[0].tokens, expected[0].tags)]
    assert capsys.readouterr().out == "\n".join(lines) + "\n\n" + "\n" + "Peter\tB-PER\nBlackburn\tI-PER\n\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("Peter Blackburn\n"))
    assert cli.main(["tag", "--ckpt", path, "--scheme", "BIOUL"]) == 0
    assert capsys.readouterr().out == "Peter\tB-PER\nBlackburn\tL-PER\n\n"
    out = io.StringIO()
    assert tag_lines(tagger, ["Peter Blackburn"], out, confidence=True) == 1
    conf = tagger.predict(["Peter Blackburn"])[0].confidence
    assert out.getvalue() == f"Peter\tB-PER\t{conf[0]:.4f}\nBlackburn\tI-PER\t{conf[1]:.4f}\n\n"
    assert cli.main(["tag", "--ckpt", "/nonexistent.ckpt"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_span_metrics_do_not_depend_on_the_scheme_spelling():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-MISC", "B-MISC"]]
    bio = tagging_metrics(gold, pred, "BIO")
    assert (bio["precision"], bio["recall"]) == pytest.approx((2 / 4, 2 / 4))
    assert bio["acc"] == pytest.approx(6 / 8)
    for scheme in ("BIOUL", "BIOES", "IOB1"):
        conv = tagging_metrics([tag_schemes.convert_tags(g, "BIO", scheme) for g in gold],
                               [tag_schemes.convert_tags(p, "BIO", scheme) for p in pred], scheme)  # fmt: skip
        assert (conv["f1"], conv["precision"], conv["recall"]) == pytest.approx((bio["f1"], 0.5, 0.5)), scheme
    assert set(tagging_metrics(gold, pred, None)) == {"acc"}


def test_bad_configurations_are_config_errors():
    words, tags, chars = Vocab(["a"]), Vocab(["O", "B-X"], specials=("<pad>",)), Vocab("a")
    with pytest.raises(ConfigError, match="head must be one of 'crf', 'softmax'"):
        Tagger(words, tags, chars, head="mlp")
    with pytest.raises(ConfigError, match="needs a char_vocab"):
        Tagger(words, tags, None)
    with pytest.raises(UnknownComponentError, match="unknown char feature extractor 'rnn'.*Did you mean"):
        Tagger(words, tags, chars, char_features="rnn")
    with pytest.raises(ConfigError, match="unknown tag scheme"):
        Tagger(words, tags, chars, scheme="BILUO-X")
    with pytest.raises(ConfigError, match="no tags besides"):
        Tagger(words, Vocab([], specials=("<pad>",)), chars)


def test_fit_command_trains_a_tagger_from_a_config(sample_path, tmp_path):
    config = tmp_path / "tagger.yaml"
    config.write_text(
        f"""
seed_everything: 0
trainer:
  max_epochs: 2
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {tmp_path}
model:
  class_path: seqlearn.Tagger
  init_args: {{embedding_dim: 8, char_dim: 4, char_out_dim: 4, hidden_size: 8}}
data:
  train: {sample_path.name}
  valid: {sample_path.name}
  data_dir: {sample_path.parent}
  scheme: BIO
""",
        encoding="utf-8",
    )
    assert is_tagger_config(["--config", str(config)])
    assert cli.main(["fit", "--config", str(config)]) == 0
    (path,) = (tmp_path / "checkpoints").glob("*.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["scheme"] == "BIO" and hparams["hidden_size"] == 8
    assert not [k for k in hparams if k.startswith("_")]  # no import paths for loading to follow
    tagger = Tagger.load_from_checkpoint(path)
    assert Vocab.from_dict(hparams["word_vocab"]).itos == tagger.word_vocab.itos
    assert tagger.predict("EU rejects German call")[0].tokens == ["EU", "rejects", "German", "call"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name, folder, train", [("conll2003_ner", "conll2003", "train.txt"),
                                                 ("ud_ewt_upos", "ud-ewt", "en_ewt-ud-train.conllu.gz")])
def test_bundled_configs_parse_and_run_on_the_real_data(shared_data, tmp_path, name, folder, train):
    assert is_tagger_config(["--config", name])
    assert not is_tagger_config(["--config", "default_task"])
    # the first 8 training sentences, validated on themselves (8 dev sentences may hold tags
    # that 8 training sentences lack, which is a DataError)
    args = ["fit", "--config", name, "--data.data_dir", str(shared_data / folder), "--data.limit", "8",
            "--data.valid", train, "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    assert cli.main(args) == 0


@pytest.mark.parametrize("lowercase", [False, True])
def test_predict_encodes_words_and_chars_as_training_batches_do(sample_path, lowercase):
    dm = TaggingDataModule(sample_path, scheme="BIO", lowercase=lowercase, max_sentences=2, shuffle=False)
    tagger = Tagger.from_datamodule(dm, **SMALL)
    assert tagger.hparams.lowercase is lowercase
    sentences = read_conll(sample_path)
    for batch in dm.train_dataloader():
        words, chars = tagger.encode([sentences[i].tokens for i in batch.index.tolist()])
        assert torch.equal(words.ids, batch.words.ids) and torch.equal(words.lengths, batch.words.lengths)
        assert torch.equal(chars.ids, batch.chars.ids) and torch.equal(chars.lengths, batch.chars.lengths)
    assert ("european" in tagger.word_vocab) is lowercase


@registry.cells.register("test-tagger-mgu")
class _MGUCell(Cell):
    """A minimal gated unit, registered like a plugin cell (no fused kernel)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__(input_size, hidden_size)
        self.f = torch.nn.Linear(input_size + hidden_size, hidden_size, bias=bias)
        self.n = torch.nn.Linear(input_size + hidden_size, hidden_size, bias=bias)

    def forward(self, x, h):
        f = torch.sigmoid(self.f(torch.cat([x, h], -1)))
        h = (1 - f) * h + f * torch.tanh(self.n(torch.cat([x, f * h], -1)))
        return h, h


def test_any_registered_cell_drives_the_encoder(sample_path, tmp_path):
    torch.manual_seed(2)
    dm = TaggingDataModule(sample_path, sample_path, scheme="BIO")
    tagger = Tagger.from_datamodule(dm, cell="test-tagger-mgu", cell_options={"bias": False}, **SMALL)
    cells = tagger.encoder.layers[0].cells
    assert [type(c) for c in cells] == [_MGUCell, _MGUCell] and cells[0].f.bias is None
    backward_weight = cells[1].n.weight.detach().clone()
    trainer = _fit(tagger, dm, tmp_path, epochs=25)
    assert trainer.callback_metrics["val_f1"] > 0.5  # it learns through the plugin cell
    assert not torch.equal(cells[1].n.weight, backward_weight)
