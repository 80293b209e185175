"""``seqlearn fit`` (LightningCLI) and ``seqlearn translate``, run as subprocesses like a user would."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from seqlearn import Seq2Seq
from seqlearn.cli import main
from seqlearn.datamodules import TranslationDataModule
from seqlearn.seq2seq_cli import bundled_configs

SEQLEARN = [sys.executable, "-m", "seqlearn.cli"]
LINES = ["twenty one", "", "march 3 , 1 9 9 8", "4 5 2 1"]


def run(args, stdin="", cwd=None):
    return subprocess.run(SEQLEARN + args, input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model trained for two steps on the default task by ``seqlearn fit``."""
    root = tmp_path_factory.mktemp("fit")
    done = run(["fit", "--config", "default_task", "--model.embedding_dim", "8", "--model.hidden_size", "16",
                "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar",
                "false", "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root)],
               cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = root.rglob("*.ckpt")
    return path


def test_bundled_configs_are_found():
    assert {"default_task", "multi30k_de_en"} <= set(bundled_configs())


def test_fit_hands_the_data_vocabularies_to_the_model(checkpoint):
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)  # plain data only
    assert ckpt["global_step"] == 2
    data = TranslationDataModule("default")
    data.setup("fit")
    assert ckpt["hyper_parameters"]["src_vocab"]["itos"] == data.src_vocab.itos
    assert ckpt["hyper_parameters"]["tgt_vocab"]["itos"] == data.tgt_vocab.itos
    assert ckpt["hyper_parameters"]["hidden_size"] == 16
    # no import paths that loading would import and call (LightningCLI's _class_path, _instantiator)
    assert not [k for k in ckpt["hyper_parameters"] if k.startswith("_")]


def test_translate_matches_the_python_api(checkpoint):
    done = run(["translate", "--ckpt", str(checkpoint), "--beam-size", "3", "--max-length", "7"], "\n".join(LINES) + "\n")
    assert done.returncode == 0, done.stderr[-3000:]
    model = Seq2Seq.load_from_checkpoint(checkpoint, map_location="cpu")
    expected = [model.tgt_tokenizer.detokenize(h[0].tokens) for h in model.translate(LINES, beam_size=3, max_length=7)]
    assert done.stdout.split("\n")[:-1] == expected
    assert expected[1] == "" and all(expected[i] for i in (0, 2, 3))


def test_translate_n_best(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(LINES[2:]) + "\n"))
    assert main(["translate", "--ckpt", str(checkpoint), "--beam-size", "4", "--n-best", "3", "--max-length", "6",
                 "--length-penalty", "gnmt", "--alpha", "0.6", "--tokens"]) == 0
    model = Seq2Seq.load_from_checkpoint(checkpoint, map_location="cpu")
    hyps = model.translate(LINES[2:], beam_size=4, n_best=3, max_length=6, length_penalty="gnmt", alpha=0.6)
    rows = [line.split(" ||| ") for line in capsys.readouterr().out.splitlines()]
    assert [(int(i), text) for i, text, _ in rows] == [(i, " ".join(h.tokens)) for i, hs in enumerate(hyps) for h in hs]
    assert [float(s) for *_, s in rows] == pytest.approx([h.score for hs in hyps for h in hs], abs=1e-5)


def test_translate_in_bfloat16_matches_the_python_api(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(LINES) + "\n"))
    assert main(["translate", "--ckpt", str(checkpoint), "--n-best", "2", "--max-length", "6", "--precision", "bf16",
                 "--tokens"]) == 0
    model = Seq2Seq.load_from_checkpoint(checkpoint, map_location="cpu")
    hyps = model.translate(LINES, beam_size=5, n_best=2, max_length=6, precision="bf16")
    scores = [float(line.split(" ||| ")[2]) for line in capsys.readouterr().out.splitlines()]
    assert scores == pytest.approx([h.score for hs in hyps for h in hs], abs=1e-5)


def test_translate_passes_the_search_options_on(checkpoint, monkeypatch, capsys):
    seen = {}
    original = Seq2Seq.translate

    def spy(self, inputs, **options):
        seen.update(options)
        return original(self, inputs, **options)

    monkeypatch.setattr(Seq2Seq, "translate", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(LINES) + "\n"))
    assert main(["translate", "--ckpt", str(checkpoint), "--stopping", "heuristic", "--length-penalty", "gnmt",
                 "--alpha", "0.6", "--beam-size", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(LINES)
    assert {k: seen[k] for k in ("stopping", "length_penalty", "alpha", "beam_size")} == {
        "stopping": "heuristic", "length_penalty": "gnmt", "alpha": 0.6, "beam_size": 3}


def test_translate_without_checkpoint_fails_cleanly(tmp_path, capsys):
    assert main(["translate", "--ckpt", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt: no such checkpoint file" in capsys.readouterr().err


def test_other_commands_reject_unknown_arguments(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["plugins", "--trainer.max_steps", "2"])
    assert exit.value.code == 2 and "unrecognized arguments: --trainer.max_steps 2" in capsys.readouterr().err
