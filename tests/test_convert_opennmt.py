"""Converted OpenNMT-py 3.5.1 models against the tool's own recorded outputs (issue 16).

The oracle is ``onmt_translate`` itself: ``tests/fixtures/peers/onmt`` holds eight tiny real
checkpoints covering every supported option and their greedy, beam-5 and beam-5
``-max_length 10`` translations and scores of 200 test2016 sentences (FORMATS.md).  A
converted model must give the same tokens and scores within 1e-4 with no extra arguments.
The sentences are derived from ../shared/data; without it those tests are skipped.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch
from test_peer_fixtures import FIXTURES, MODELS, derived, lines

from seqlearn import Seq2Seq
from seqlearn.convert import convert
from seqlearn.convert.opennmt_py import load_checkpoint
from seqlearn.errors import CheckpointError, ConfigError

torch.set_num_threads(1)
ONMT = sorted(n for n, m in MODELS.items() if m["tool"] == "opennmt-py")
RUNS = {"greedy": {"beam_size": 1}, "beam5": {"beam_size": 5}, "beam5_max10": {"beam_size": 5, "max_length": 10}}


@pytest.fixture
def sources(shared_data):
    return [line.split(" ") for line in derived("de").split("\n")[:-1]]


def checkpoint(name: str) -> Path:
    return FIXTURES / MODELS[name]["checkpoint"]


@pytest.mark.parametrize("name", ONMT)
def test_teacher_forced_scores_equal_the_recorded_ones(name, sources):
    """The network alone: each recorded beam-5 hypothesis (all end with </s>) re-scored by
    the converted model, divided by onmt_translate's length penalty (n + 1 with </s>)."""
    model = convert("opennmt-py", checkpoint(name))
    out = MODELS[name]["outputs"]["beam5"]
    hyps, recorded = lines(out["tokens"]), torch.tensor([float(x) for x in lines(out["scores"])])
    total = model.score(sources, [h.split(" ") if h else [] for h in hyps])
    lengths = torch.tensor([len(h.split()) + 1 for h in hyps], dtype=torch.float)
    assert (total / (lengths + 1) - recorded).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ONMT)
def test_translations_and_scores_equal_onmt_translate(name, sources):
    model = convert("opennmt-py", checkpoint(name))
    for run, options in RUNS.items():
        out = MODELS[name]["outputs"][run]
        hyps, recorded = lines(out["tokens"]), [float(x) for x in lines(out["scores"])]
        results = model.translate(sources, **options)
        assert [" ".join(r[0].tokens) for r in results] == hyps, run
        assert max(abs(r[0].score - s) for r, s in zip(results, recorded)) < 1e-4, run


def test_the_models_defaults_are_onmt_translates(sources):
    """No argument at all: onmt_translate's defaults, beam 5 included."""
    name = ONMT[0]
    model = convert("opennmt-py", checkpoint(name))
    assert [" ".join(r[0].tokens) for r in model.translate(sources[:40])] == \
        lines(MODELS[name]["outputs"]["beam5"]["tokens"])[:40]


def test_the_converted_network_has_the_checkpoints_shapes():
    """Sizes come from the checkpoint: separate embedding sizes, brnn halves, the joint bridge."""
    model = convert("opennmt-py", checkpoint("onmt_c_brnn_gru_mlp_bridge_2l"))
    h = model.hparams
    assert (h.embedding_dim, h.tgt_embedding_dim, h.hidden_size, h.encoder_hidden_size) == (16, 24, 32, 16)
    assert (h.src_eos, h.mask_specials, h.decoder, h.attention) == (False, "none", "luong", "luong-concat")
    assert model.decoder.bridge[0].weight.shape == (64, 64)  # 2 layers x 32, W (32, 32) twice on the diagonal
    ckpt = load_checkpoint(checkpoint("onmt_c_brnn_gru_mlp_bridge_2l"))
    assert model.src_vocab.itos[4:] == ckpt["vocab"]["src"][4:] and model.tgt_vocab.pad_index == 1


def test_a_checkpoint_pickling_anything_else_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    ckpt = load_checkpoint(checkpoint(ONMT[0]))
    ckpt["opt"].extra = Payload()
    torch.save(ckpt, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: refused"):
        convert("opennmt-py", tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        convert("opennmt-py", tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such"):
        convert("opennmt-py", tmp_path / "missing.pt")


@pytest.mark.parametrize("option,value", [("copy_attn", True), ("encoder_type", "transformer"),
                                          ("global_attention", "none"), ("rnn_type", "SRU"),
                                          ("coverage_attn", True), ("context_gate", "both")])
def test_unsupported_options_are_named(tmp_path, option, value):
    ckpt = load_checkpoint(checkpoint(ONMT[1]))
    setattr(ckpt["opt"], option, value)
    torch.save(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=f"{option}={value!r}"):
        convert("opennmt-py", tmp_path / "m.pt")


def test_unknown_tool():
    with pytest.raises(ConfigError, match="fairseq"):
        convert("fairseq", "x.pt")


def test_a_converted_model_fine_tunes_like_a_native_one():
    """Gradients reach every weight, and growing the vocabularies keeps each side's sizes,
    the old rows and the translations of known words (not their scores: the new target word
    takes some probability)."""
    model = convert("opennmt-py", checkpoint("onmt_e_brnn_lstm_dot_bridge_shared_2l"), dropout=0.0)
    src = [["ein", "mann", "läuft", "."], ["zwei", "hunde", "."]]
    before = model.translate(src, beam_size=2)
    tgt = model._source_batch(src)  # any ids: a loss to differentiate
    model.train()
    logits = model(tgt, torch.full((2, 3), model.tgt_vocab.bos_index))
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    old = {k: v.clone() for k, v in model.state_dict().items()}
    added = model.extend_vocab(["neuwort"], ["newword"])
    assert added == (["neuwort"], ["newword"])
    assert model.tgt_embedding.embedding_dim == 20 and isinstance(model, Seq2Seq)
    for key, value in model.state_dict().items():
        assert torch.equal(value[: old[key].size(0)], old[key]), key
    assert [h[0].tokens for h in model.translate(src, beam_size=2)] == [h[0].tokens for h in before]


def test_loading_needs_the_namespace_allowlist_only():
    """The same file without the allowlist is refused by torch itself (FORMATS.md)."""
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(checkpoint(ONMT[0]), weights_only=True)
    assert isinstance(load_checkpoint(checkpoint(ONMT[0]))["opt"], argparse.Namespace)


def test_cli_convert_writes_a_model_folder_that_translates_the_same(tmp_path):
    from seqlearn.cli import main

    if not hasattr(Seq2Seq, "save_pretrained"):
        pytest.skip("Seq2Seq.save_pretrained (model folders) is not in this branch")
    name = ONMT[2]
    assert main(["convert", "--from", "opennmt-py", str(checkpoint(name)), str(tmp_path / "out")]) == 0
    folder_model = Seq2Seq.from_pretrained(tmp_path / "out")
    src = [["ein", "mann", "läuft", "."], ["zwei", "hunde", "spielen", "im", "schnee", "."]]
    expected = convert("opennmt-py", checkpoint(name)).translate(src)
    assert [(h[0].tokens, h[0].score) for h in folder_model.translate(src)] == [(h[0].tokens, h[0].score)
                                                                                 for h in expected]


def test_cli_convert_names_a_bad_input(tmp_path, capsys):
    from seqlearn.cli import main

    assert main(["convert", "--from", "opennmt-py", str(tmp_path / "none.pt"), str(tmp_path / "out")]) == 2
    assert "none.pt: no such OpenNMT-py checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_training_batches_lose_their_source_eos_for_a_model_that_reads_none():
    """Data modules end every source with </s>; an OpenNMT-py model reads sources without
    it, so its training loss is the NLL that scoring the same pairs gives."""
    from seqlearn.batching import TranslationBatch, pad

    model = convert("opennmt-py", checkpoint(ONMT[3]))
    src = [["ein", "mann", "."], ["zwei", "hunde", "spielen", "im", "schnee", "."]]
    tgt = [["a", "man", "."], ["two", "dogs", "play", "."]]
    batch = TranslationBatch(
        pad([model.src_vocab.encode(s, add_eos=True) for s in src], model.src_vocab.pad_index),
        pad([model.tgt_vocab.encode(t, add_bos=True, add_eos=True) for t in tgt], model.tgt_vocab.pad_index),
        torch.arange(2))
    assert model.batch_source(batch).lengths.tolist() == [3, 6]
    with torch.no_grad():
        _, nll, n = model.batch_loss(batch)
    assert n.item() == 9
    assert nll.item() == pytest.approx(-model.score(src, tgt).sum().item(), abs=1e-4)


def test_an_exported_converted_model_reads_sources_without_eos_and_keeps_its_search_rules(tmp_path):
    """Serving appended </s> to every source, which an OpenNMT-py model never read: its
    greedy output changed.  The manifest now says so, and carries the tool's search rules."""
    import inspect

    from seqlearn import search, serving
    from seqlearn.export import export

    model = convert("opennmt-py", checkpoint("onmt_b_rnn_gru_dot_nofeed"))
    served = serving.load(export(model, tmp_path / "exported"))
    assert served.src_eos is False and served.search_defaults == model.hparams.search_defaults
    src = [["ein", "mann", "läuft", "."], ["zwei", "hunde", "spielen", "im", "schnee", "."], ["ein", "kind", "."]]
    greedy = model.translate(src, beam_size=1, length_penalty=None, max_length=30)
    assert served.translate(src, max_length=30) == [h[0].tokens for h in greedy]
    beam_options = inspect.signature(search.beam_search).parameters.keys() - {"beam_size", "n_best", "max_length"}
    batch = model._source_batch(src)
    got = search.beam_search(served.search_step, served.start(batch.ids, batch.lengths),
                             bos_index=model.tgt_vocab.bos_index, eos_index=model.tgt_vocab.eos_index, beam_size=5,
                             max_length=30, **{k: v for k, v in served.search_defaults.items() if k in beam_options})
    want = model.translate(src, beam_size=5, max_length=30)
    assert [[model.tgt_vocab.itos[i] for i in h[0].tokens] for h in got] == [h[0].tokens for h in want]
    assert [h[0].score for h in got] == pytest.approx([h[0].score for h in want], abs=1e-5)
