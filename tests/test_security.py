"""Loading runs no code: checkpoints are read with torch.load(weights_only=True) on every
path (a real pickle payload that writes a file is refused, and the file stays unwritten),
names in checkpoints and configs are registry lookups, never imports, and no module of
seqlearn evaluates strings as code."""
from __future__ import annotations

import ast
import builtins
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import pytorch_lightning as pl
import torch

import seqlearn
from seqlearn import Seq2Seq, Tagger, Vocab
from seqlearn.errors import CheckpointError, ConfigError, UnknownComponentError

torch.set_num_threads(1)


class Payload:
    """Unpickling this calls ``open(target, "w")``: it creates the file ``target``."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return builtins.open, (self.target, "w")


def seq2seq(**options: Any) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(Vocab(["a", "b"]), Vocab(["x", "y"]), embedding_dim=4, hidden_size=6, dropout=0.0, **options)


def tagger() -> Tagger:
    torch.manual_seed(0)
    return Tagger(Vocab(["EU"]), Vocab(["O", "B-ORG"], specials=("<pad>",)), Vocab("EU"), scheme="BIO", embedding_dim=4,
                  char_dim=3, char_out_dim=4, hidden_size=3)


def checkpoint(model: Any, path: Path, hparams: dict | None = None, **extra: Any) -> Path:
    """A checkpoint as Lightning writes it (what loading reads of it), with ``extra`` keys."""
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {**dict(model.hparams), **(hparams or {})},
                "pytorch-lightning_version": pl.__version__, **extra}, path)
    return path


def _load_with_spacy(path: Path) -> Any:
    import spacy

    return spacy.blank("en").add_pipe("seqlearn_tagger", config={"model": str(path)})


def language_model() -> Any:
    from seqlearn.language_model import LanguageModel

    torch.manual_seed(0)
    return LanguageModel(Vocab(["a", "b"]), embedding_dim=4, hidden_size=4, num_layers=1)


def classifier() -> Any:
    from seqlearn.classifier import SequenceClassifier

    torch.manual_seed(0)
    return SequenceClassifier(Vocab(["a", "b"]), ["pos", "neg"], embedding_dim=4, hidden_size=4)


LOADERS = {
    "Seq2Seq.load_from_checkpoint": (seq2seq, Seq2Seq.load_from_checkpoint),
    "LanguageModel.load_from_checkpoint": (language_model, lambda p: type(language_model()).load_from_checkpoint(p)),
    "SequenceClassifier.load_from_checkpoint": (classifier, lambda p: type(classifier()).load_from_checkpoint(p)),
    "Seq2Seq.from_pretrained": (seq2seq, Seq2Seq.from_pretrained),
    "Tagger.load_from_checkpoint": (tagger, Tagger.load_from_checkpoint),
    "spaCy seqlearn_tagger component": (tagger, _load_with_spacy),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_pickle_payload_is_refused_and_never_runs(loader, tmp_path):
    make, load = LOADERS[loader]
    target = tmp_path / "pwned"
    path = checkpoint(make(), tmp_path / "evil.ckpt", callbacks={"x": Payload(target)})
    with pytest.raises(CheckpointError) as err:
        load(path)
    message = str(err.value)
    # builtins.open pickles as io.open, the name the message gives
    assert message.startswith(f"{path}: refused") and "(io.open)" in message and "weights_only=True" in message
    assert not target.exists()
    # the oracle: an unrestricted unpickler does run the payload
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(path, weights_only=False)
    assert target.exists()


@pytest.mark.parametrize("command", ["translate", "tag"])
def test_the_cli_refuses_a_payload_with_one_line_on_stderr(command, tmp_path, capsys):
    from seqlearn import cli

    target = tmp_path / "pwned"
    model = seq2seq() if command == "translate" else tagger()
    path = checkpoint(model, tmp_path / "evil.ckpt", callbacks={"x": Payload(target)})
    assert cli.main([command, "--ckpt", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seqlearn {command}: error: {path}: refused") and err.count("\n") == 1
    assert not target.exists()


def test_weights_only_cannot_be_switched_off(tmp_path, monkeypatch):
    target = tmp_path / "pwned"
    path = checkpoint(seq2seq(), tmp_path / "evil.ckpt", callbacks={"x": Payload(target)})
    with pytest.raises(ConfigError, match="weights_only=True only"):
        Seq2Seq.load_from_checkpoint(path, weights_only=False)
    # PyTorch's escape hatch applies only where a caller leaves weights_only unset
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="refused"):
        Seq2Seq.load_from_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        Seq2Seq.from_pretrained(path)
    assert not target.exists()


def test_a_clean_checkpoint_still_loads_on_every_path(tmp_path):
    model = seq2seq()
    path = checkpoint(model, tmp_path / "m.ckpt")
    expected = model.translate(["a b"], max_length=4)[0][0].tokens
    assert Seq2Seq.load_from_checkpoint(path).translate(["a b"], max_length=4)[0][0].tokens == expected
    assert Seq2Seq.from_pretrained(path).translate(["a b"], max_length=4)[0][0].tokens == expected
    tag = tagger()
    tag_path = checkpoint(tag, tmp_path / "t.ckpt")
    assert Tagger.load_from_checkpoint(tag_path).predict("EU")[0].tags == tag.predict("EU")[0].tags


# -- names are looked up, never imported ---------------------------------------------------------

EVIL_MODULE = "seqlearn_evil_plugin"


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """An importable module on sys.path whose import writes a file (returned)."""
    marker = tmp_path / "imported"
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{EVIL_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nimport torch\nclass Cell(torch.nn.Module):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, EVIL_MODULE, raising=False)
    return folder / f"{EVIL_MODULE}.py", marker


def _names(module_file: Path) -> list[str]:
    return [f"{EVIL_MODULE}:Cell", f"{EVIL_MODULE}.Cell", str(module_file), f"{module_file}:Cell"]


@pytest.mark.parametrize("key", ["cell", "attention", "decoder", "src_tokenizer"])
def test_a_checkpoint_naming_a_module_or_file_imports_nothing(key, evil_module, tmp_path):
    module_file, marker = evil_module
    for i, name in enumerate(_names(module_file)):
        path = checkpoint(seq2seq(), tmp_path / f"m{i}.ckpt", hparams={key: name})
        with pytest.raises(UnknownComponentError, match="unknown"):
            model = Seq2Seq.load_from_checkpoint(path)
            model.translate(["a"])  # tokenizers are built on first use
        with pytest.raises(UnknownComponentError):
            Seq2Seq.from_pretrained(path).translate(["a"])
    assert EVIL_MODULE not in sys.modules and not marker.exists()


def test_a_tagger_checkpoint_naming_a_module_imports_nothing(evil_module, tmp_path):
    module_file, marker = evil_module
    for key in ("cell", "char_features", "tokenizer"):
        path = checkpoint(tagger(), tmp_path / f"{key}.ckpt", hparams={key: f"{EVIL_MODULE}:Cell"})
        with pytest.raises(UnknownComponentError):
            Tagger.load_from_checkpoint(path).predict("EU")
    assert EVIL_MODULE not in sys.modules and not marker.exists()


@pytest.mark.parametrize("key", ["_instantiator", "_class_path"])
def test_import_paths_in_hyperparameters_are_never_followed(key, evil_module, tmp_path):
    _, marker = evil_module
    path = checkpoint(seq2seq(), tmp_path / "m.ckpt", hparams={key: f"{EVIL_MODULE}.Cell"})
    refused = f"refused: its hyperparameters name import paths \\({key}\\)"
    with pytest.raises(CheckpointError, match=refused):
        Seq2Seq.from_pretrained(path)
    if key == "_instantiator":  # Lightning would call it: blocked, and explained
        with pytest.raises(CheckpointError, match=refused):
            Seq2Seq.load_from_checkpoint(path)
    else:  # Lightning drops a class path that no instantiator uses
        assert isinstance(Seq2Seq.load_from_checkpoint(path), Seq2Seq)
    assert EVIL_MODULE not in sys.modules and not marker.exists()


def fit_config(folder: Path, name: str, **model: Any) -> str:
    """A ``seqlearn fit`` config training a tiny Seq2Seq on two pairs."""
    train = folder / "pairs.tsv"
    train.write_text("a b\tx y\nb\ty\n")
    config = folder / name
    config.write_text(json.dumps({
        "trainer": {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "default_root_dir": str(folder)},
        "model": {"embedding_dim": 4, "hidden_size": 6, **model},
        "data": {"train": str(train), "max_tokens": 64},
    }))
    return str(config)


def test_a_config_naming_a_module_as_a_cell_imports_nothing(evil_module, tmp_path):
    from seqlearn.seq2seq_cli import fit

    module_file, marker = evil_module
    for i, name in enumerate(_names(module_file)):
        with pytest.raises(UnknownComponentError, match="unknown cell"):
            fit(["--config", fit_config(tmp_path, f"c{i}.yaml", cell=name)])
    assert EVIL_MODULE not in sys.modules and not marker.exists()


def test_resuming_training_refuses_a_payload(tmp_path, monkeypatch):
    from seqlearn.seq2seq_cli import fit, fit_arguments

    target = tmp_path / "pwned"
    path = str(checkpoint(seq2seq(), tmp_path / "evil.ckpt", callbacks={"x": Payload(target)}))
    config = fit_config(tmp_path, "c.yaml")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="refused"):
        fit(["--config", config, "--ckpt_path", path])
    for option in (["--weights_only", "false"], ["--weights_only=False"]):
        with pytest.raises(ConfigError, match="weights_only=True only"):
            fit(["--config", config, "--ckpt_path", path, *option])
    assert not target.exists()
    # Lightning's own load of the checkpoint is told weights_only=True too, last word on the line
    assert fit_arguments(["--config", config])[-2:] == ["--weights_only", "true"]


# -- no strings evaluated as code --------------------------------------------------------------

PACKAGE = Path(seqlearn.__file__).parent


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f"{ast.unparse(f.value)}.{f.attr}" if isinstance(f, ast.Attribute) else ""
            out.append((name, node))
    return out


def _bound_names(tree: ast.AST) -> set[str]:
    """Names a module binds itself (arguments, assignments, definitions, imports)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def test_no_module_evaluates_strings_or_unpickles_unsafely():
    """A static guard over every module of the package: no eval/exec/compile, no
    ``__import__``, no unpickling, YAML only through ``safe_load``, ``torch.load`` only with
    ``weights_only=True``, and ``import_module`` only where the names are seqlearn's own."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"))
        builtins_called = {"eval", "exec", "compile", "__import__"} - _bound_names(tree)  # not shadowed here
        for name, call in _calls(tree):
            where = f"{file.relative_to(PACKAGE)}:{call.lineno}"
            assert name not in builtins_called, where
            assert not name.startswith(("pickle.", "marshal.", "dill.", "cloudpickle.")), where
            assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), where
            if name == "torch.load":
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, where
            if name.endswith("import_module"):  # only on seqlearn's own fixed names:
                # the lazy exports of __init__, the exporter registry's table (export/dispatch.py) and
                # the converters' table (convert/__init__.py, checked against TOOLS before the import)
                assert file.relative_to(PACKAGE).as_posix() in ("__init__.py", "export/dispatch.py",
                                                                "convert/__init__.py"), where

