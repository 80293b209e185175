"""JoeyNMT 2.3.0 models converted by :mod:`seqlearn.convert.joeynmt` against the tool's own
recorded outputs (``tests/fixtures/peers/joey``, see FORMATS.md there): the 200 test2016
sentences each model translated greedily, with beam 5 and with beam 5 capped at 10 steps.

The sources are derived from ../shared/data (skipped without it), as the fixture test does.
"""
from __future__ import annotations

import ast
import functools
import shutil

import pytorch_lightning as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from seqlearn import Seq2Seq
from seqlearn.batching import TranslationBatch, pad
from seqlearn.convert import convert
from seqlearn.convert.joeynmt import convert_joeynmt
from seqlearn.errors import CheckpointError
from test_peer_fixtures import FIXTURES, JOEY, MODELS, derived, lines

RUNS = ("greedy", "beam5", "beam5_max10")
TOLERANCE = 1e-4  # the issue's; float32 rounding differences are ~1e-5 (FORMATS.md, Verification)


@functools.lru_cache
def converted(name: str):
    torch.set_num_threads(1)
    return convert_joeynmt(FIXTURES / MODELS[name]["checkpoint"])


def recorded(name: str, run: str) -> tuple[list[list[str]], list[list[float]]]:
    """The run's output tokens (``</s>`` included when the hypothesis ended) and scores (greedy:
    one per token; beam: ``[sum of log p]``)."""
    out = MODELS[name]["outputs"][run]
    return [ast.literal_eval(x) for x in lines(out["tokens"])], [ast.literal_eval(x) for x in lines(out["scores"])]


@pytest.fixture
def sources(shared_data) -> list[list[str]]:
    return [line.split(" ") for line in derived("de").split("\n")[:-1]]


def teacher_forced(model, sources: list[list[str]], outputs: list[list[str]]) -> list[torch.Tensor]:
    """Each output token's log-probability given the source and the tokens before it, the
    whole batch in one teacher-forced pass."""
    ids = [[model.tgt_vocab.bos_index] + [model.tgt_vocab.stoi[t] for t in out] for out in outputs]
    tgt = pad(ids, model.tgt_vocab.pad_index).ids
    with torch.inference_mode():
        logits = model(model._source_batch(sources), tgt[:, :-1])
    log_probs = torch.log_softmax(logits.float(), -1).gather(-1, tgt[:, 1:, None]).squeeze(-1)
    return [row[: len(out)] for row, out in zip(log_probs, outputs)]


@pytest.mark.parametrize("name", JOEY)
def test_teacher_forced_log_probs_equal_the_recorded_scores(name, sources):
    """The network: every recorded hypothesis of every run, re-scored by the converted model
    with JoeyNMT's rules (log_softmax over the whole vocabulary; greedy scores per token,
    beam scores summed without length penalty), gives the recorded scores."""
    model = converted(name)
    for run in RUNS:
        outputs, scores = recorded(name, run)
        for i, (mine, theirs) in enumerate(zip(teacher_forced(model, sources, outputs), scores)):
            expected = torch.tensor(theirs)
            got = mine if run == "greedy" else mine.sum(0, keepdim=True)
            assert torch.allclose(got, expected, atol=TOLERANCE, rtol=0), (run, i, got, expected)


@pytest.mark.parametrize("name", JOEY)
def test_translate_reproduces_every_run_with_the_models_own_search_defaults(name, sources):
    """``translate`` with only the beam size (and the run's ``max_length``) gives JoeyNMT's
    tokens and scores: greedy, beam 5 and beam 5 capped at 10 steps, under JoeyNMT's rules
    (no length penalty, no ``</s>`` first, ``int(1.5 * n)`` steps, its beam and stopping)."""
    model = converted(name)
    for run, options in (("greedy", {}), ("beam5", {"beam_size": 5}), ("beam5_max10", {"beam_size": 5, "max_length": 10})):
        outputs, scores = recorded(name, run)
        hyps = model.translate(sources, **options)
        for i, (hyp, out, score) in enumerate(zip(hyps, outputs, scores)):
            assert hyp[0].tokens == [t for t in out if t != "</s>"], (run, i)
            assert hyp[0].score == pytest.approx(sum(score), abs=TOLERANCE), (run, i)


def test_a_converted_model_fine_tunes_and_round_trips_through_a_checkpoint(tmp_path):
    """Fine-tuning (with a grown target vocabulary: the output layer has no bias to grow)
    lowers the loss on the pairs it trains on, and the checkpoint it writes loads back with
    JoeyNMT's architecture and decoding rules: the same translations, no extra arguments."""
    name = "joey_d_lstm_bahdanau_lastfwd_feed_2l"
    pairs = [("ein mann fährt fahrrad .", "a man rides a bike ."), ("zwei hunde spielen .", "two dogs playing zzz .")]
    model = Seq2Seq.from_pretrained(converted(name), extend_tgt=["zzz"], lr=0.01, dropout=0.0)
    assert model.generator.bias is None and len(model.tgt_vocab) == len(converted(name).tgt_vocab) + 1
    src = pad([model.src_vocab.encode(s.split(), add_eos=True) for s, _ in pairs], model.src_vocab.pad_index)
    tgt = pad([model.tgt_vocab.encode(t.split(), add_bos=True, add_eos=True) for _, t in pairs],
              model.tgt_vocab.pad_index)
    batch = TranslationBatch(src, tgt, torch.arange(len(pairs)))
    with torch.no_grad():
        before = float(model.batch_loss(batch)[0])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_steps=30)
    trainer.fit(model, DataLoader([batch], batch_size=None))
    with torch.no_grad():
        assert float(model.eval().batch_loss(batch)[0]) < before / 2
    path = tmp_path / "tuned.ckpt"
    trainer.save_checkpoint(path)
    loaded = Seq2Seq.load_from_checkpoint(path)
    assert loaded.hparams.search_defaults == model.hparams.search_defaults
    sources = [s for s, _ in pairs] + ["eine frau singt ."]
    for options in ({}, {"beam_size": 5}):
        expected = [(h[0].tokens, h[0].score) for h in model.translate(sources, **options)]
        assert [(h[0].tokens, h[0].score) for h in loaded.translate(sources, **options)] == expected


def test_convert_dispatches_on_the_tool_name():
    name = JOEY[0]
    model = convert("joeynmt", FIXTURES / MODELS[name]["checkpoint"].rsplit("/", 1)[0])
    assert model.hparams.decoder == "luong" and not model.hparams.output_bias
    for (key, mine), theirs in zip(model.state_dict().items(), converted(name).state_dict().values()):
        assert torch.equal(mine, theirs), key


def _folder(tmp_path, name: str, edit=None):
    """A copy of fixture model ``name``'s folder, its config.yaml changed by ``edit(cfg)``."""
    src = (FIXTURES / MODELS[name]["checkpoint"]).parent
    folder = tmp_path / name
    shutil.copytree(src, folder)
    if edit is not None:
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        edit(cfg)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return folder


@pytest.mark.parametrize("option,value", [
    ("encoder.type", "transformer"), ("encoder.bidirectional", False), ("tied_embeddings", True),
    ("tied_softmax", True), ("decoder.attention", "multihead"), ("decoder.init_hidden", "random"),
    ("encoder.embeddings.scale", True), ("decoder.activation", "relu"),
])
def test_unsupported_configurations_raise_checkpoint_error_naming_the_option(tmp_path, option, value):
    def edit(cfg):
        node = cfg["model"]
        *parents, last = option.split(".")
        for key in parents:
            node = node[key]
        node[last] = value

    with pytest.raises(CheckpointError, match=rf"config\.yaml: model\.{option}: {value!r}"):
        convert_joeynmt(_folder(tmp_path, "joey_a_gru_bahdanau_bridge_feed", edit))


def test_last_with_a_decoder_of_another_width_is_a_checkpoint_error(tmp_path):
    """``init_hidden: last`` copies the encoder's final state: the decoder must be as wide as
    it (2h) or as one direction (h)."""
    def edit(cfg):
        cfg["model"]["decoder"]["init_hidden"] = "last"
        cfg["model"]["decoder"]["hidden_size"] = 24

    with pytest.raises(CheckpointError, match="config.yaml: model: .*bridge"):
        convert_joeynmt(_folder(tmp_path, "joey_a_gru_bahdanau_bridge_feed", edit))


def test_missing_files_and_mismatched_weights_are_named(tmp_path):
    folder = _folder(tmp_path, "joey_b_lstm_luong_last_nofeed")
    (folder / "trg_vocab.txt").rename(folder / "other.txt")
    with pytest.raises(CheckpointError, match="trg_vocab.txt is missing"):
        convert_joeynmt(folder)
    folder = _folder(tmp_path / "b", "joey_b_lstm_luong_last_nofeed",
                     lambda cfg: cfg["model"]["decoder"].update(input_feeding=True))
    with pytest.raises(CheckpointError, match=r"1200\.ckpt: its parameters do not match config\.yaml"):
        convert_joeynmt(folder)
    (folder / "1200.ckpt").unlink()
    with pytest.raises(CheckpointError, match="found none"):
        convert_joeynmt(folder)
