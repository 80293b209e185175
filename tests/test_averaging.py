"""Checkpoint averaging against the parameter mean computed by hand from the files, for
every model class (tied weights included); buffers that are counts are the first's;
checkpoints of different models are refused naming both files and the difference; the
averaged checkpoint loads like any other; ``seqlearn average`` end to end."""
from __future__ import annotations

import io
import sys

import pytest
import torch
from test_export import (
    SRC_WORDS, TAGS, TGT_WORDS, save_checkpoint, tiny_classifier, tiny_lm, tiny_seq2seq, tiny_tagger,
)

from seqlearn import CheckpointError, Seq2Seq, Vocab
from seqlearn.averaging import average_checkpoints, average_state_dicts, first_difference, save_checkpoint as save_avg
from seqlearn.cli import main

torch.set_num_threads(1)

MODELS = {
    "seq2seq": lambda seed: tiny_seq2seq(seed=seed),
    "seq2seq-tied": lambda seed: tiny_seq2seq(seed=seed, tie_embeddings=True, cell="lstm", encoder_layers=2),
    "tagger": lambda seed: tiny_tagger("cnn", "crf", seed=seed),
    "language_model": lambda seed: tiny_lm(seed=seed),  # ties its embeddings by default
    "classifier": lambda seed: tiny_classifier(seed=seed, multi_label=True),
}


def hand_mean(paths):
    """The oracle: each state-dict entry of the files, read with torch.load, stacked and
    averaged in float64."""
    dicts = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in paths]
    return {k: torch.stack([d[k].double() for d in dicts]).mean(0) for k in dicts[0]}


@pytest.mark.parametrize("kind", MODELS)
def test_average_is_the_parameter_mean(kind, tmp_path):
    models = [MODELS[kind](seed) for seed in (0, 1, 2)]
    paths = [save_checkpoint(m, tmp_path / f"{kind}-{i}.ckpt") for i, m in enumerate(models)]
    averaged = average_checkpoints(paths)
    assert type(averaged) is type(models[0]) and not averaged.training
    want = hand_mean(paths)
    got = averaged.state_dict()
    assert set(got) == set(want) and len(want) > 5
    for key, value in got.items():
        torch.testing.assert_close(value.double(), want[key], rtol=1e-6, atol=1e-7, msg=key)
    if kind == "seq2seq-tied":
        assert averaged.generator.weight is averaged.tgt_embedding.weight  # still tied
    if kind == "language_model":
        assert averaged.output.weight is averaged.embedding.weight


def test_integer_buffers_are_the_first_checkpoints():
    first = {"w": torch.tensor([1.0, 2.0]), "half": torch.tensor([0.5], dtype=torch.float16),
             "count": torch.tensor(7), "mask": torch.tensor([True, False])}
    second = {"w": torch.tensor([2.0, 6.0]), "half": torch.tensor([1.5], dtype=torch.float16),
              "count": torch.tensor(9), "mask": torch.tensor([False, False])}
    third = {"w": torch.tensor([6.0, 1.0]), "half": torch.tensor([1.0], dtype=torch.float16),
             "count": torch.tensor(1), "mask": torch.tensor([True, True])}
    got = average_state_dicts([first, second, third])
    assert got["w"].tolist() == [3.0, 3.0] and got["half"].dtype == torch.float16 and got["half"].item() == 1.0
    assert got["count"].item() == 7 and got["mask"].tolist() == [True, False]
    with pytest.raises(CheckpointError, match=r"a\.ckpt and b\.ckpt differ in w: shape \(2,\) torch.float32 vs "
                                              r"\(3,\) torch.float32"):
        average_state_dicts([first, {**second, "w": torch.zeros(3)}], ["a.ckpt", "b.ckpt"])
    with pytest.raises(CheckpointError, match=r"only in a\.ckpt: \['count'\]; only in b\.ckpt: none"):
        average_state_dicts([first, {k: v for k, v in second.items() if k != "count"}], ["a.ckpt", "b.ckpt"])


def other_vocab_model(seed):
    """Like tiny_seq2seq, with one target word replaced: the same sizes, another vocabulary."""
    torch.manual_seed(seed)
    return Seq2Seq(Vocab(SRC_WORDS), Vocab([*TGT_WORDS[:3], "u3", *TGT_WORDS[4:]]), embedding_dim=6, hidden_size=8,
                   dropout=0.0)


@pytest.mark.parametrize("other, message", [
    (lambda: tiny_seq2seq(seed=1, hidden_size=10), r"their hidden_size differs \(8 vs 10\)"),
    (lambda: tiny_seq2seq(seed=1, tie_embeddings=True, embedding_dim=8),  # the same parameter shapes
     r"their embedding_dim differs \(6 vs 8\)"),
    (lambda: other_vocab_model(1), r"their tgt_vocab differs \(itos\[7\]: 't3' vs 'u3'\)"),
    (lambda: tiny_seq2seq(seed=1, cell="lstm"), r"their cell differs \('gru' vs 'lstm'\)"),
    (lambda: tiny_tagger(None, "softmax"), r"different models: a Seq2Seq and a Tagger"),
])
def test_checkpoints_of_different_models_are_refused(other, message, tmp_path):
    a = save_checkpoint(tiny_seq2seq(seed=0), tmp_path / "a.ckpt")
    b = save_checkpoint(other(), tmp_path / "b.ckpt")
    with pytest.raises(CheckpointError, match=message) as caught:
        average_checkpoints([a, b])
    assert f"{a} and {b} are checkpoints of different models" in str(caught.value)


def test_tied_and_untied_weights_of_the_same_shapes_are_refused(tmp_path):
    a = save_checkpoint(tiny_seq2seq(seed=0, embedding_dim=8), tmp_path / "a.ckpt")
    b = save_checkpoint(tiny_seq2seq(seed=1, embedding_dim=8, tie_embeddings=True), tmp_path / "b.ckpt")
    assert {k: v.shape for k, v in torch.load(a, weights_only=True)["state_dict"].items()} == {
        k: v.shape for k, v in torch.load(b, weights_only=True)["state_dict"].items()}
    with pytest.raises(CheckpointError, match=r"their tie_embeddings differs \(False vs True\)"):
        average_checkpoints([a, b])


def test_training_only_hyperparameters_may_differ(tmp_path):
    a = save_checkpoint(tiny_seq2seq(seed=0), tmp_path / "a.ckpt")
    b = save_checkpoint(tiny_seq2seq(seed=1, lr=1e-4, dropout=0.1, label_smoothing=0.1), tmp_path / "b.ckpt")
    averaged = average_checkpoints([a, b])
    assert averaged.hparams.lr == 1e-3  # the first's
    torch.testing.assert_close(averaged.generator.weight.double(), hand_mean([a, b])["generator.weight"])


def test_first_difference_says_where():
    assert first_difference({"a": [1, 2, {"b": "x"}]}, {"a": [1, 2, {"b": "y"}]}) == "a[2].b: 'x' vs 'y'"
    assert first_difference([1, 2], [1, 2, 3]) == "2 vs 3 items"
    assert first_difference({"a": 1}, {"a": 1, "c": 2}) == "c: only in the second"
    assert first_difference(b"ab", b"abc") == "different bytes (2 and 3)"
    assert first_difference({"a": [1]}, {"a": [1]}) is None


def test_averaged_checkpoint_loads_and_translates_the_same(tmp_path):
    paths = [save_checkpoint(tiny_seq2seq(seed=s, eos_bias=0.3), tmp_path / f"{s}.ckpt") for s in (4, 5)]
    averaged = average_checkpoints(paths)
    save_avg(averaged, tmp_path / "avg.ckpt")
    loaded = Seq2Seq.load_from_checkpoint(tmp_path / "avg.ckpt", map_location="cpu")
    sources = [["s1", "s2"], ["s3", "s1", "s4"], ["s9"]]
    want = [[(h.tokens, h.score) for h in hs] for hs in averaged.translate(sources, beam_size=3, n_best=2, max_length=8)]
    assert [[(h.tokens, h.score) for h in hs] for hs in loaded.translate(sources, beam_size=3, n_best=2, max_length=8)] \
        == want
    checkpoint = torch.load(tmp_path / "avg.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"] == torch.load(paths[0], weights_only=True)["hyper_parameters"]
    assert checkpoint["seqlearn"]["provenance"]["cell"]["name"] == "gru"
    # and it averages again: it is a checkpoint like the others
    torch.testing.assert_close(average_checkpoints([tmp_path / "avg.ckpt"]).generator.weight,
                               averaged.generator.weight, rtol=0, atol=0)


# -- seqlearn average ----------------------------------------------------------------------------------


def test_cli_averages_into_a_checkpoint(tmp_path, capsys, monkeypatch):
    paths = [save_checkpoint(tiny_tagger("cnn", "crf", seed=s), tmp_path / f"t{s}.ckpt") for s in (0, 1, 2)]
    out = tmp_path / "avg.ckpt"
    assert main(["average", *map(str, paths), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: Tagger averaged from 3 checkpoints"
    got = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    want = hand_mean(paths)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-6, atol=1e-7, msg=key)
    # the averaged tagger tags from the command line
    monkeypatch.setattr(sys, "stdin", io.StringIO("w1 w2 w3\n"))
    assert main(["tag", "--ckpt", str(out)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line]
    assert [r[0] for r in rows] == ["w1", "w2", "w3"] and {r[1] for r in rows} <= set(TAGS)


def test_cli_refuses_checkpoints_of_different_models(tmp_path, capsys):
    a = save_checkpoint(tiny_seq2seq(seed=0), tmp_path / "a.ckpt")
    b = save_checkpoint(other_vocab_model(1), tmp_path / "b.ckpt")
    assert main(["average", str(a), str(b), "--out", str(tmp_path / "avg.ckpt")]) == 2
    err = capsys.readouterr().err
    assert f"seqlearn average: error: {a} and {b} are checkpoints of different models: their tgt_vocab differs" in err
    assert not (tmp_path / "avg.ckpt").exists()
    assert main(["average", str(a), str(tmp_path / "gone.ckpt"), "--out", str(tmp_path / "avg.ckpt")]) == 2
    assert "gone.ckpt: no such checkpoint file" in capsys.readouterr().err


def test_files_of_no_seqlearn_model_are_refused_by_name(tmp_path):
    a = save_checkpoint(tiny_seq2seq(seed=0), tmp_path / "a.ckpt")
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"{notes}: not a PyTorch checkpoint"):
        average_checkpoints([a, notes])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"units": 3}}, foreign)
    with pytest.raises(CheckpointError, match=rf"{foreign}: not a checkpoint of a seqlearn model \(Seq2Seq, Tagger"):
        average_checkpoints([a, foreign])
    with pytest.raises(CheckpointError, match="nothing to average"):
        average_checkpoints([])


def test_cli_refuses_a_pickled_payload_before_anything_runs(tmp_path, capsys):
    from test_security import Payload, checkpoint, seq2seq

    target = tmp_path / "pwned"
    good = checkpoint(seq2seq(), tmp_path / "good.ckpt")
    evil = checkpoint(seq2seq(), tmp_path / "evil.ckpt", callbacks={"x": Payload(target)})
    for command in (["average", str(good), str(evil), "--out", str(tmp_path / "avg.ckpt")],
                    ["translate", "--ckpt", str(good), str(evil)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"seqlearn {command[0]}: error: {evil}: refused") and err.count("\n") == 1
    assert not target.exists() and not (tmp_path / "avg.ckpt").exists()
