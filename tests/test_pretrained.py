"""Hub-format model folders (:mod:`seqlearn.pretrained`): each model class round-trips
through ``save_pretrained``/``from_pretrained`` to identical outputs in a fresh process,
from a folder and from a Hugging Face Hub cache laid out on disk (offline, with
revisions); the SentencePiece model travels as a file; tied weights are stored once; a
folder holding a pickle, lacking weights, of another class or needing a missing plugin is
refused; fine-tuning options work on folders; the CLI reads folders and writes one."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from safetensors import safe_open

from _reliability_runs import tagged_sentences, tiny
from seqlearn import registry, serving
from seqlearn.classifier import SequenceClassifier
from seqlearn.cli import main as cli_main
from seqlearn.errors import CheckpointError, ConfigError
from seqlearn.language_model import LanguageModel
from seqlearn.seq2seq import Seq2Seq
from seqlearn.subwords import train_sentencepiece
from seqlearn.tagger import Tagger
from seqlearn.vocab import Vocab
from test_example_plugins import THROWAWAY
from test_subwords import CORPUS, SOURCES

torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
CLASSES = {"seq2seq": Seq2Seq, "seq2seq-sp": Seq2Seq, "tagger": Tagger, "language_model": LanguageModel,
           "classifier": SequenceClassifier}
TRANSLATE = ["twenty one", "march 3 , 1 9 9 8", "4 5 2 1", "unknownword 7"]
SENTENCES = [s.tokens for s in tagged_sentences(6, 9)] + [["w3", "never-seen", "w0", "w20"]]
TEXTS = [" ".join(s) for s in SENTENCES]


def outputs(kind: str, model) -> list:
    """What the model answers, as JSON values (floats exactly as computed)."""
    if kind.startswith("seq2seq"):
        inputs = SOURCES if kind == "seq2seq-sp" else TRANSLATE
        hyps = model.translate(inputs, beam_size=3, max_length=10, min_length=2)
        return [[h[0].tokens, h[0].text, h[0].score] for h in hyps]
    if kind == "tagger":
        return [[r.tags, r.confidence] for r in model.predict(SENTENCES)]
    if kind == "language_model":
        return [[h.tokens, h.score] for hs in model.generate(TEXTS[:3], beam_size=2, n_best=2, max_length=6) for h in hs]
    return [[c.labels, c.probabilities] for c in model.predict(TEXTS)]


# run by fresh processes: argv[1] is a JSON list of [label, kind, source, revision]
LOAD = """
import json, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_pretrained import CLASSES, outputs
results = {{}}
for label, kind, source, revision in json.loads(sys.argv[1]):
    try:
        results[label] = outputs(kind, CLASSES[kind].from_pretrained(source, revision=revision))
    except Exception as exc:
        results[label] = {{"error": type(exc).__name__, "message": str(exc)}}
print(json.dumps(results))
"""


def fresh_process(loads: list[list], env: dict[str, str] | None = None) -> dict:
    """``outputs`` of each ``[label, kind, source, revision]`` loaded in a new Python process,
    offline, with ``env`` added (a Hub cache)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1", **(env or {})}
    done = subprocess.run([sys.executable, "-c", LOAD.format(tests=str(TESTS)), json.dumps(loads)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def sentencepiece_seq2seq(root: Path) -> tuple[Seq2Seq, Path]:
    """A Seq2Seq whose tokenizers are one SentencePiece model file, and that file."""
    model_file = root / "joint.model"
    model_file.write_bytes(train_sentencepiece(CORPUS, vocab_size=400))
    name = f"sentencepiece:{model_file}"
    vocab = Vocab.from_sentencepiece(registry.tokenizers.build(name))
    torch.manual_seed(1)
    model = Seq2Seq(vocab, vocab, src_tokenizer=name, tgt_tokenizer=name, embedding_dim=8, hidden_size=16,
                    tie_embeddings=True)
    with torch.no_grad():
        model.generator.weight.mul_(8)  # clear-cut choices (the tied embeddings grow with it)
    return model.eval(), model_file


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every kind of model, trained a few steps and validated (on training batches: logged
    metrics), saved as a
    folder: ``{kind: (model, folder, outputs in this process)}``.  The SentencePiece model
    file is deleted once saved."""
    root = tmp_path_factory.mktemp("pretrained")
    models = {}
    for kind in ("seq2seq", "tagger", "language_model", "classifier"):
        model, data, _ = tiny(kind)
        trainer = pl.Trainer(max_steps=4, limit_val_batches=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
        trainer.fit(model, data)
        trainer.validate(model, data.train_dataloader(), verbose=False)  # metrics for the model card
        models[kind] = model.eval()
    models["seq2seq-sp"], model_file = sentencepiece_seq2seq(root)
    out = {}
    for kind, model in models.items():
        folder = model.save_pretrained(root / kind, model_card={"language": ["en"]} if kind == "tagger" else None)
        out[kind] = (model, folder, outputs(kind, model))
    model_file.unlink()
    return out


def test_every_model_class_round_trips_through_a_folder_in_a_fresh_process(saved):
    loaded = fresh_process([[kind, kind, str(folder), None] for kind, (_, folder, _) in saved.items()])
    for kind, (_, _, expected) in saved.items():
        assert loaded[kind] == expected, kind
    # not trivially equal: the models answer differently for different inputs
    assert all(o[0] for o in saved["seq2seq"][2]) and len({o[2] for o in saved["seq2seq"][2]}) > 1
    assert len({tuple(t) for t, _ in saved["tagger"][2]}) > 1


def test_a_folder_holds_json_safetensors_tokenizer_files_and_a_card(saved):
    model, folder, _ = saved["seq2seq"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "src_vocab.json", "tgt_vocab.json"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_class"] == "Seq2Seq" and config["format"] == "seqlearn.model/1"
    assert config["seqlearn_version"] == __import__("seqlearn").__version__
    hparams = {k: v for k, v in model.hparams.items() if k not in ("src_vocab", "tgt_vocab", "tokenizer_models")}
    assert config["hyperparameters"] == json.loads(json.dumps(hparams))
    assert config["components"]["cell"] == {"kind": "cells", "name": "gru", "distribution": "seqlearn",
                                            "version": config["seqlearn_version"], "module": "seqlearn.cells"}
    assert Vocab.load(folder / "tgt_vocab.json") == model.tgt_vocab
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert set(weights.keys()) == set(model.state_dict())
        assert torch.equal(weights.get_tensor("generator.bias"), model.generator.bias)
    # renamed hyperparameters are saved under today's names only
    tagger_config = json.loads((saved["tagger"][1] / "config.json").read_text())["hyperparameters"]
    assert "embedding_dim" in tagger_config and "word_dim" not in tagger_config and "lr_decay" not in tagger_config


def test_the_model_card_has_front_matter_task_data_metrics_and_loading(saved):
    model, folder, _ = saved["tagger"]
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "seqlearn" and meta["pipeline_tag"] == "token-classification"
    assert meta["language"] == ["en"] and {"seqlearn", "lstm", "cnn"} <= set(meta["tags"])
    logged = {k: float(v) for k, v in model.trainer.callback_metrics.items() if k.startswith("val_")}
    assert logged and set(meta["metrics"]) == {k.removeprefix("val_") for k in logged}
    for name, value in logged.items():
        assert f"| {name} | {value:.4g} |" in text
    assert 'Tagger.from_pretrained("tagger")' in text and "seqlearn tag --ckpt tagger" in text
    assert "- Data: train: list given in code" in text  # the sentences were passed in code


def test_sentencepiece_models_are_files_and_survive_without_the_original(saved):
    model, folder, expected = saved["seq2seq-sp"]
    config = json.loads((folder / "config.json").read_text())
    assert config["tokenizer_files"] == {"src": "sentencepiece.model", "tgt": "sentencepiece.model"}
    assert "tokenizer_models" not in config["hyperparameters"]  # the bytes are a file, not JSON
    assert (folder / "sentencepiece.model").read_bytes() == model.hparams.tokenizer_models["src"]
    assert not (folder.parent / "joint.model").exists()
    assert [e[1] for e in expected] == [model.tgt_tokenizer.detokenize(e[0]) for e in expected]
    # tied: stored once, tied again on loading
    assert config["tied_weights"] == {"generator.weight": "tgt_embedding.weight"}
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert "generator.weight" not in weights.keys()
    again = Seq2Seq.from_pretrained(folder)
    assert again.generator.weight is again.tgt_embedding.weight
    assert torch.equal(again.generator.weight, model.generator.weight)


def _hub_repo(cache: Path, repo: str, commits: dict[str, Path], refs: dict[str, str]) -> None:
    """Lay out ``repo`` in a Hub cache as ``huggingface_hub`` writes it: content-addressed
    blobs, one snapshot folder of links per commit, refs naming commits."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    for commit, folder in commits.items():
        snapshot = base / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in folder.iterdir():
            data = file.read_bytes()
            blob = base / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (base / "refs").mkdir(exist_ok=True)
    for ref, commit in refs.items():
        (base / "refs" / ref).write_text(commit)


def test_every_model_class_loads_from_an_offline_hub_cache_at_a_revision(saved, tmp_path):
    cache = tmp_path / "hub"
    v1, v2 = "1" * 40, "2" * 40
    for kind, (_, folder, _) in saved.items():
        # v1 holds the model; main a later commit holding another model of the same class
        later = "seq2seq-sp" if kind == "seq2seq" else "seq2seq" if kind == "seq2seq-sp" else kind
        _hub_repo(cache, f"seqlearn-test/{kind}", {v1: folder, v2: saved[later][1] if later != kind else folder},
                  {"main": v2, "v1": v1})
    loads = [[kind, kind, f"seqlearn-test/{kind}", "v1"] for kind in saved]
    loads += [["by-commit", "seq2seq", "seqlearn-test/seq2seq", v1], ["main", "seq2seq-sp", "seqlearn-test/seq2seq", None],
              ["absent", "tagger", "seqlearn-test/absent", None], ["no-such-tag", "tagger", "seqlearn-test/tagger", "v9"]]
    loaded = fresh_process(loads, {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")})
    for kind, (_, _, expected) in saved.items():
        assert loaded[kind] == expected, kind
    assert loaded["by-commit"] == saved["seq2seq"][2]
    assert loaded["main"] == saved["seq2seq-sp"][2]  # the default revision is main: the later commit
    for label in ("absent", "no-such-tag"):
        assert loaded[label]["error"] == "CheckpointError"
        assert "could not be had from the Hub or its cache" in loaded[label]["message"]
        assert "HF_HUB_OFFLINE is set" in loaded[label]["message"]
    assert "at revision 'v9'" in loaded["no-such-tag"]["message"]


class _RunsCode:
    """Unpickling this creates a file: what a malicious pickle would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights/extra.pt", "notes.pkl"])
def test_a_folder_holding_a_pickle_is_refused_without_reading_it(saved, tmp_path, name):
    folder = shutil.copytree(saved["classifier"][1], tmp_path / "model")
    marker = tmp_path / "ran"
    (folder / name).parent.mkdir(exist_ok=True)
    (folder / name).write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match=re.escape(f"{folder}: refused: the folder holds pickle-format files ({name})")):
        SequenceClassifier.from_pretrained(folder)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="holds pickle-format files"):  # nor is a model saved beside one
        saved["classifier"][0].save_pretrained(folder)


def test_a_folder_without_weights_or_of_another_class_is_refused(saved, tmp_path):
    folder = shutil.copytree(saved["language_model"][1], tmp_path / "model")
    with pytest.raises(CheckpointError, match=re.escape(f"{folder}: a LanguageModel folder, not a Tagger one")):
        Tagger.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="a LanguageModel folder, not a Seq2Seq one"):
        Seq2Seq.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{folder}: not a seqlearn model folder: it has no model.safetensors")):
        LanguageModel.from_pretrained(folder)
    with pytest.raises(FileNotFoundError):
        LanguageModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(ConfigError, match="revision='v1' applies to Hub repo ids"):
        LanguageModel.from_pretrained(saved["language_model"][1], revision="v1")


def test_tied_weights_of_a_language_model_are_stored_once_and_tied_again(saved):
    model, folder, _ = saved["language_model"]
    assert json.loads((folder / "config.json").read_text())["tied_weights"] == {"output.weight": "embedding.weight"}
    loaded = LanguageModel.from_pretrained(folder, lr=0.5)
    assert loaded.output.weight is loaded.embedding.weight and loaded.hparams.lr == 0.5
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        LanguageModel.from_pretrained(folder, no_such_option=1)


@pytest.mark.parametrize("kind", ["seq2seq", "tagger"])
def test_a_folder_whose_plugin_is_missing_names_the_pip_line(kind, plugin_env, tmp_path, monkeypatch):
    before = dict(registry.cells._entries)
    monkeypatch.setattr(registry.cells, "_entries", dict(before))
    plugin_env("seqlearn-throwaway", "0.3.1", {"seqlearn_throwaway": THROWAWAY},
               {"seqlearn.cells": {"throwaway-gru": "seqlearn_throwaway:ThrowawayGRU"}})
    model, _, _ = tiny(kind, cell="throwaway-gru")
    folder = model.save_pretrained(tmp_path / "model")
    record = json.loads((folder / "config.json").read_text())["components"]["cell"]
    assert (record["distribution"], record["version"]) == ("seqlearn-throwaway", "0.3.1")
    assert type(model).from_pretrained(folder).hparams.cell == "throwaway-gru"  # loads while installed

    site = str(tmp_path / "site")  # the distribution goes
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != site])
    monkeypatch.setattr(registry.cells, "_entries", dict(before))
    registry.refresh()
    with pytest.raises(CheckpointError) as err:
        type(model).from_pretrained(folder)
    assert str(err.value) == (f"{folder}: this checkpoint needs cell 'throwaway-gru' from distribution "
                              "seqlearn-throwaway 0.3.1, which is not installed: pip install seqlearn-throwaway")


def test_fine_tuning_options_work_on_a_folder_as_on_a_checkpoint(saved, tmp_path):
    model, folder, _ = saved["seq2seq"]
    ckpt = tmp_path / "model.ckpt"
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(ckpt)
    options = dict(extend_src=["Zugspitze"], extend_tgt=["Zugspitze", "Alm"], freeze=["encoder"], lr=1e-4)
    torch.manual_seed(5)
    tuned = Seq2Seq.from_pretrained(folder, **options)
    torch.manual_seed(5)
    from_ckpt = Seq2Seq.from_pretrained(ckpt, **options)
    assert tuned.tgt_vocab.itos[-2:] == ["Zugspitze", "Alm"] and tuned.hparams.lr == 1e-4
    assert not any(p.requires_grad for p in tuned.encoder.parameters())
    old = model.tgt_vocab
    rows = [tuned.tgt_vocab[t] for t in old.itos]
    assert torch.equal(tuned.tgt_embedding.weight[rows], model.tgt_embedding.weight)  # bit for bit, by token
    assert tuned.state_dict().keys() == from_ckpt.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), from_ckpt.state_dict().values()))


def test_translate_tag_and_export_accept_a_folder(saved, tmp_path, monkeypatch, capsys):
    model, folder, _ = saved["seq2seq"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TRANSLATE) + "\n"))
    assert cli_main(["translate", "--ckpt", str(folder), "--beam-size", "3", "--min-length", "2"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == [h[0].text for h in model.translate(TRANSLATE, beam_size=3,
                                                                                            min_length=2)]
    tagger, tagger_folder, _ = saved["tagger"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS) + "\n"))
    assert cli_main(["tag", "--ckpt", str(tagger_folder)]) == 0
    blocks = capsys.readouterr().out.split("\n\n")[:-1]
    assert [[line.split("\t")[1] for line in b.strip("\n").split("\n")] for b in blocks] == [
        r.tags for r in tagger.predict(TEXTS)]
    clf, clf_folder, _ = saved["classifier"]
    assert cli_main(["export", "--ckpt", str(clf_folder), "--out", str(tmp_path / "exported")]) == 0
    assert "classifier exported as torchscript" in capsys.readouterr().out
    served = serving.load(tmp_path / "exported")
    assert [c.labels for c in served.classify(TEXTS)] == [c.labels for c in clf.predict(TEXTS)]
    assert cli_main(["tag", "--ckpt", str(folder)]) == 2  # a Seq2Seq folder is no tagger
    assert "a Seq2Seq folder, not a Tagger one" in capsys.readouterr().err
    assert cli_main(["tag", "--ckpt", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such checkpoint file or model folder" in capsys.readouterr().err


def test_fit_saves_its_best_model_as_a_folder(tmp_path):
    root, folder = tmp_path / "run", tmp_path / "folder"
    root.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "seqlearn.cli", "fit", "--config", "default_task", "--model.embedding_dim", "8",
         "--model.hidden_size", "16", "--model.val_bleu", "false", "--trainer.max_steps", "2",
         "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root),
         "--save-pretrained", str(folder)],
        capture_output=True, text=True, timeout=600, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"saved the best Seq2Seq as the model folder {folder}" in done.stdout
    (ckpt,) = root.rglob("*.ckpt")
    want = Seq2Seq.load_from_checkpoint(ckpt, map_location="cpu")
    got = Seq2Seq.from_pretrained(folder)
    assert outputs("seq2seq", got) == outputs("seq2seq", want)
    card = (folder / "README.md").read_text()
    assert "| val_loss |" in card and "Data: train: the embedded default task" in card, card
