"""The example plugins in plugins/: each pip-installed as the real distribution it is, its own
tests run, and its component used by name everywhere a built-in goes -- Seq2Seq, ``seqlearn
plugins``, a ``seqlearn fit`` config, the hidden-state explorer, checkpoints -- and a
checkpoint loaded where the plugins are missing names the distributions to install; the
same for the tagger, language model and classifier with a throwaway plugin distribution."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from _reliability_runs import tiny
from seqlearn import Seq2Seq, Tagger, Vocab, registry
from seqlearn.batching import TranslationBatch, pad
from seqlearn.classifier import SequenceClassifier
from seqlearn.errors import CheckpointError
from seqlearn.language_model import LanguageModel

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
#: every plugin folder: its distribution name, version and entry points ``(kind, name)``
DISTRIBUTIONS = {}
for _folder in sorted(p for p in PLUGINS.iterdir() if (p / "pyproject.toml").is_file()):
    _project = tomllib.loads((_folder / "pyproject.toml").read_text())["project"]
    DISTRIBUTIONS[_folder.name] = (
        _project["name"],
        _project["version"],
        [(group.removeprefix("seqlearn."), name) for group, names in _project["entry-points"].items() for name in names],
    )
#: what these tests use by name (tutorials/02 installs seqlearn-mgu and uses cell "mgu")
USED = {"seqlearn-mgu": ("cells", "mgu"), "seqlearn-multihead-attention": ("attentions", "multihead"),
        "seqlearn-coverage": ("decoders", "coverage")}
WORDS = "a b c d e".split()
TINY = dict(embedding_dim=8, hidden_size=12, dropout=0.0)


def _env(site: Path | None) -> dict[str, str]:
    """The environment of a subprocess, with ``site`` (the installed plugins) on its path or not."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return env


def _run(args: list[str], site: Path | None, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(site), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """Every plugin folder copied (so building leaves the checkout clean), pip-installed into
    a fresh folder put on sys.path, and the registry refreshed.  Yields ``(site, copies)``.
    Afterwards the folder, its modules and the components they registered are gone again."""
    root = tmp_path_factory.mktemp("plugins")
    copies = {}
    for folder in DISTRIBUTIONS:
        copies[folder] = root / folder
        shutil.copytree(PLUGINS / folder, copies[folder], ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), *map(str, copies.values())],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = {kind: dict(reg._entries) for kind, reg in registry.registries.items()}
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        registry.refresh()
        yield site, copies
    for name in [m for m, mod in sys.modules.items() if str(site) in str(getattr(mod, "__file__", None) or "")]:
        del sys.modules[name]
    for kind, reg in registry.registries.items():
        reg._entries = loaded.get(kind, {})
    registry.refresh()


def test_every_plugin_folder_is_a_distribution_with_seqlearn_components():
    assert {name for name, _, _ in DISTRIBUTIONS.values()} >= set(USED)
    for folder, (name, _, entry_points) in DISTRIBUTIONS.items():
        assert folder == name and entry_points, folder
        assert (PLUGINS / folder / "README.md").is_file() and list((PLUGINS / folder / "tests").glob("test_*.py"))
        assert all(kind in registry.registries for kind, _ in entry_points)


@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(DISTRIBUTIONS))
def test_the_plugins_own_tests_pass_against_the_installed_distribution(plugins, folder):
    site, copies = plugins
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], site, copies[folder], timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, summary


def test_seqlearn_plugins_lists_them_with_distribution_and_version(plugins, tmp_path):
    site, _ = plugins
    done = _run([sys.executable, "-m", "seqlearn.cli", "plugins"], site, tmp_path)
    assert done.returncode == 0, done.stderr
    sections: dict[str, list[list[str]]] = {}
    for line in done.stdout.splitlines():
        if not line.startswith(" "):
            kind = line.rstrip(":")
        else:
            sections.setdefault(kind, []).append(line.split())
    for name, version, entry_points in DISTRIBUTIONS.values():
        for kind, component in entry_points:
            assert [component, name, version] in sections[kind], (kind, component)
    # and in this process too, after refresh()
    for folder, (kind, component) in USED.items():
        name, version, _ = DISTRIBUTIONS[folder]
        assert (component, f"{name} {version}") in registry.registries[kind].listing()


def _vocabs() -> tuple[Vocab, Vocab]:
    return Vocab.build([WORDS]), Vocab.build([WORDS])


def test_seq2seq_builds_every_plugin_component_by_name(plugins):
    torch.manual_seed(0)
    model = Seq2Seq(*_vocabs(), cell="mgu", attention="multihead", decoder="coverage",
                    attention_options={"heads": 2}, **TINY)
    assert type(model.encoder.layers[0].cells[0]).__name__ == "MGUCell"
    assert type(model.decoder.layers[0].cells[0]).__name__ == "MGUCell"
    assert type(model.decoder.attention).__name__ == "MultiHeadAdditiveAttention"
    assert type(model.decoder).__name__ == "CoverageDecoder"
    provenance = model.provenance()
    for role, folder in (("cell", "seqlearn-mgu"), ("attention", "seqlearn-multihead-attention"),
                         ("decoder", "seqlearn-coverage")):
        name, version, _ = DISTRIBUTIONS[folder]
        assert provenance[role] | {"module": None} == {
            "kind": USED[folder][0], "name": USED[folder][1], "distribution": name, "version": version, "module": None}
    # they train: a few updates on two pairs lower the loss
    src, tgt = ["a b c", "d e"], ["c b a", "e d"]
    batch = TranslationBatch(
        pad([model.src_vocab.encode(s.split(), add_eos=True) for s in src], model.src_vocab.pad_index),
        pad([model.tgt_vocab.encode(t.split(), add_bos=True, add_eos=True) for t in tgt], model.tgt_vocab.pad_index),
        torch.arange(2),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = -model.score(src, tgt).sum()
    for _ in range(20):
        optimizer.zero_grad()
        model.batch_loss(batch)[0].backward()
        optimizer.step()
    assert -model.score(src, tgt).sum() < 0.5 * before
    hyps = model.translate(src, beam_size=3, n_best=2, max_length=5, return_attention=True)
    assert [len(h) for h in hyps] == [2, 2] and hyps[0][0].attention.shape[1] == 4


def test_the_hidden_state_explorer_shows_the_mgu_gates(plugins):
    torch.manual_seed(0)
    model = Seq2Seq(*_vocabs(), cell="mgu", **TINY).eval()
    view = model.show_hidden_states("a b c")
    names = [s["name"] for s in view.series]
    assert names == [f"{arrow} {series}" for arrow in "→←" for series in ("hidden", "forget gate", "candidate")]
    assert view.tokens == ["a", "b", "c", "</s>"]
    with torch.no_grad():
        ids = torch.tensor([model.src_vocab.encode("a b c".split(), add_eos=True)])
        outputs, _ = model.encoder(model.src_embedding(ids), torch.tensor([4]))
    half = model.encoder.layers[0].hidden_size
    for index, expected in ((0, outputs[0, :, :half]), (3, outputs[0, :, half:])):
        view.series_index = index
        torch.testing.assert_close(torch.from_numpy(view.current), expected)
    view.series_index = 1
    assert 0.0 < view.current.min() and view.current.max() < 1.0  # a gate


FIT_CONFIG = """\
seed_everything: 0
trainer:
  accelerator: cpu
  max_steps: 3
  limit_val_batches: 0
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {root}
model:
  cell: mgu
  attention: multihead
  attention_options: {{heads: 2}}
  decoder: coverage
  embedding_dim: 8
  hidden_size: 12
  val_bleu: false
data:
  train: default
  max_tokens: 256
"""


@pytest.fixture(scope="module")
def fitted(plugins, tmp_path_factory):
    """A checkpoint written by ``seqlearn fit`` with a config naming all three plugin components."""
    site, _ = plugins
    root = tmp_path_factory.mktemp("fit")
    config = root / "plugins.yaml"
    config.write_text(FIT_CONFIG.format(root=root))
    done = _run([sys.executable, "-m", "seqlearn.cli", "fit", "--config", str(config)], site, root)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = root.rglob("*.ckpt")
    return path


LOAD = """\
import importlib.util, json, sys
from seqlearn import Seq2Seq
from seqlearn.errors import SeqlearnError
present = [m for m in ("seqlearn_mgu", "seqlearn_multihead_attention", "seqlearn_coverage") if importlib.util.find_spec(m)]
results = {"present": present}
for how, load in (("load_from_checkpoint", Seq2Seq.load_from_checkpoint), ("from_pretrained", Seq2Seq.from_pretrained)):
    try:
        model = load(sys.argv[1])
        results[how] = model.translate(["twenty one"], max_length=5)[0][0].tokens
    except SeqlearnError as exc:
        results[how] = {"error": type(exc).__name__, "message": str(exc)}
print(json.dumps(results))
"""


def _load_in_fresh_process(path: Path, site: Path | None, cwd: Path) -> dict:
    done = _run([sys.executable, "-c", LOAD, str(path)], site, cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fit_config_names_plugin_components_and_the_checkpoint_records_them(fitted):
    checkpoint = torch.load(fitted, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["hyper_parameters"]["cell"] == "mgu"
    provenance = checkpoint["seqlearn"]["provenance"]
    for role, folder in (("cell", "seqlearn-mgu"), ("attention", "seqlearn-multihead-attention"),
                         ("decoder", "seqlearn-coverage")):
        name, version, _ = DISTRIBUTIONS[folder]
        assert (provenance[role]["name"], provenance[role]["distribution"], provenance[role]["version"]) == (
            USED[folder][1], name, version)
    assert provenance["src_tokenizer"]["distribution"] == "seqlearn"


@pytest.mark.slow
def test_the_checkpoint_loads_where_the_plugins_are_installed(plugins, fitted, tmp_path):
    site, _ = plugins
    results = _load_in_fresh_process(fitted, site, tmp_path)
    model = Seq2Seq.load_from_checkpoint(fitted, map_location="cpu")
    expected = model.translate(["twenty one"], max_length=5)[0][0].tokens
    assert results["load_from_checkpoint"] == results["from_pretrained"] == expected


@pytest.mark.slow
def test_loading_without_the_plugins_names_the_distributions_to_install(plugins, fitted, tmp_path):
    results = _load_in_fresh_process(fitted, None, tmp_path)
    assert results["present"] == [], "the example plugins are installed in this environment itself"
    versions = {folder: DISTRIBUTIONS[folder][1] for folder in USED}
    for how in ("load_from_checkpoint", "from_pretrained"):
        error = results[how]
        assert error["error"] == "CheckpointError", error
        message = error["message"]
        assert message.startswith(f"{fitted}: this checkpoint needs "), message
        assert f"cell 'mgu' from distribution seqlearn-mgu {versions['seqlearn-mgu']}, which is not installed" in message
        assert f"attention 'multihead' from distribution seqlearn-multihead-attention" in message
        assert f"decoder 'coverage' from distribution seqlearn-coverage" in message
        assert message.endswith(": pip install seqlearn-coverage seqlearn-mgu seqlearn-multihead-attention"), message
    # and on the command line
    done = _run([sys.executable, "-m", "seqlearn.cli", "translate", "--ckpt", str(fitted)], None, tmp_path)
    assert done.returncode != 0 and "pip install seqlearn-coverage seqlearn-mgu" in done.stderr


def test_a_component_registered_in_a_notebook_is_named_as_such():
    """Provenance of a component no distribution provides: the message says to run its code."""
    from seqlearn.provenance import missing_components, missing_components_message

    record = {"provenance": {
        "cell": {"kind": "cells", "name": "my-cell", "distribution": None, "version": None, "module": "__main__"},
        "attention": {"kind": "attentions", "name": "bahdanau", "distribution": "seqlearn", "version": "0.1.0"},
        "src_tokenizer": {"kind": "tokenizers", "name": "spacy:de", "distribution": "seqlearn", "version": "0.1.0"},
        "decoder": None,
    }}
    assert [r["name"] for r in missing_components(record["provenance"])] == ["my-cell"]
    assert missing_components_message(record) == (
        "this checkpoint needs cell 'my-cell' registered by module __main__ (a notebook or script), which has not "
        "run: run the code that registers the module's components before loading"
    )
    assert missing_components_message({"provenance": {"cell": record["provenance"]["attention"]}}) is None
    assert missing_components_message(None) is None  # a checkpoint without a record: nothing to check


THROWAWAY = '''
from seqlearn import registry
from seqlearn.cells import GRUCell
from seqlearn.pooling import MeanPooling


@registry.cells.register("throwaway-gru")
class ThrowawayGRU(GRUCell):
    """A GRU under another name, from a distribution of its own."""


@registry.poolings.register("throwaway-mean")
class ThrowawayMean(MeanPooling):
    """Mean pooling under another name."""
'''
MODEL_CLASSES = {"tagger": Tagger, "language_model": LanguageModel, "classifier": SequenceClassifier}


@pytest.mark.parametrize("kind", sorted(MODEL_CLASSES))
def test_every_model_records_its_plugins_and_a_checkpoint_without_them_names_the_distribution(
    kind, plugin_env, tmp_path, monkeypatch
):
    """As Seq2Seq does above: the tagger, language model and classifier record where their
    cell (and char features, pooling, tokenizer) come from, and loading their checkpoint
    where the plugin is not installed says what to pip install."""
    before = {reg: dict(reg._entries) for reg in (registry.cells, registry.poolings)}
    for reg, entries in before.items():
        monkeypatch.setattr(reg, "_entries", dict(entries))  # the plugin's components leave with the test
    plugin_env("seqlearn-throwaway", "0.3.1", {"seqlearn_throwaway": THROWAWAY},
               {"seqlearn.cells": {"throwaway-gru": "seqlearn_throwaway:ThrowawayGRU"},
                "seqlearn.poolings": {"throwaway-mean": "seqlearn_throwaway:ThrowawayMean"}})
    plugins = {"cell": "throwaway-gru", **({"pooling": "throwaway-mean"} if kind == "classifier" else {})}
    model, data, _ = tiny(kind, **plugins)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu")  # fmt: skip
    trainer.fit(model, data)
    path = tmp_path / f"{kind}.ckpt"
    trainer.save_checkpoint(path)
    provenance = torch.load(path, weights_only=True)["seqlearn"]["provenance"]
    for role, name in plugins.items():
        assert provenance[role] | {"module": None} == {
            "kind": f"{role}s", "name": name, "distribution": "seqlearn-throwaway", "version": "0.3.1", "module": None}
    builtin = {"tagger": ["char_features", "tokenizer"], "language_model": ["tokenizer"], "classifier": ["tokenizer"]}
    assert sorted(provenance) == sorted([*plugins, *builtin[kind]])
    assert all(provenance[role]["distribution"] == "seqlearn" for role in builtin[kind])
    cls = MODEL_CLASSES[kind]
    assert cls.load_from_checkpoint(path).checkpoint_provenance == provenance  # loads while installed

    # the distribution goes: off sys.path, out of the registries
    site = str(tmp_path / "site")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != site])
    for reg, entries in before.items():
        monkeypatch.setattr(reg, "_entries", dict(entries))
    registry.refresh()
    with pytest.raises(CheckpointError) as err:
        cls.load_from_checkpoint(path)
    needs = "; ".join(f"{role} {name!r} from distribution seqlearn-throwaway 0.3.1, which is not installed"
                      for role, name in plugins.items())
    assert str(err.value) == f"{path}: this checkpoint needs {needs}: pip install seqlearn-throwaway"
