"""Hub-format model folders: ``save_pretrained`` and ``from_pretrained`` for every model.

::

    model.save_pretrained("de-en-gru")                     # any of the four model classes
    Tagger.from_pretrained("de-en-gru")                    # a folder ...
    Seq2Seq.from_pretrained("org/de-en-gru", revision="v1")   # ... or a Hugging Face Hub repo id

A folder holds:

* ``config.json``: ``format`` (``seqlearn.model/1``), ``model_class``, ``seqlearn_version``,
  the ``hyperparameters`` (the constructor's arguments, in today's names: see
  :mod:`seqlearn.renamed`), the files of the ``vocabularies`` and ``tokenizer_files``, the
  ``components`` with their provenance (registry name, distribution, version: see
  :mod:`seqlearn.provenance`) and the ``tied_weights`` (a shared tensor's other names);
* ``model.safetensors``: the weights, each shared tensor once (safetensors refuses
  aliases; loading ties them again);
* one ``<name>.json`` per vocabulary (``Vocab.to_dict()``), and the SentencePiece models a
  Seq2Seq carries as ``.model`` files (one ``sentencepiece.model`` when both sides share it);
* ``README.md``, a model card with YAML front matter (``library_name: seqlearn``, tags,
  language, data and metrics when known).

Loading runs no code: it reads JSON, safetensors and tokenizer files only, never a pickle.
A folder holding a pickle-format file (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``,
``.pickle``) or lacking ``model.safetensors`` is refused; the model class is looked up in
seqlearn's four, and components go through the registries, so a plugin that is missing is
named with the ``pip install`` line (:func:`seqlearn.checkpoint_loading.check_model_checkpoint`).
A repo id that is not a local path resolves through ``huggingface_hub.snapshot_download``,
which honours ``HF_HUB_OFFLINE`` and the local cache (``HF_HUB_CACHE``/``HF_HOME``).  Share a
saved folder with ``hf upload org/name FOLDER`` (``huggingface-cli upload`` in older
``huggingface_hub`` releases).
"""
from __future__ import annotations

import errno
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint_loading import check_model_checkpoint, load_checkpoint
from .errors import CheckpointError, ConfigError
from .renamed import RENAMED, loading_checkpoint
from .vocab import Vocab

__all__ = ["PretrainedMethods", "FORMAT", "PICKLE_SUFFIXES", "read_model", "load_model", "resolve", "is_repo_id",
           "check_overrides", "card_text", "save_best_model"]

FORMAT = "seqlearn.model/1"
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
#: files that hold pickles, which loading them would unpickle (and which a folder must not hold)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# "name" or "org/name" as the Hub spells repo ids
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

#: model class -> (Hub pipeline tag, what it does, how to use it after loading)
_TASKS = {
    "Seq2Seq": ("translation", "translation with an attention encoder-decoder RNN",
                'model.translate(["ein hund läuft"], beam_size=5)[0][0].text',
                "seqlearn translate --ckpt {folder} < in.txt"),
    "Tagger": ("token-classification", "sequence tagging with a (Bi)RNN and a CRF or softmax head",
               'model.predict([["EU", "rejects", "German", "call"]])[0].tags', "seqlearn tag --ckpt {folder} < in.txt"),
    "LanguageModel": ("text-generation", "language modelling with an RNN",
                      'model.generate(["the"], beam_size=1)[0][0].tokens', None),
    "SequenceClassifier": ("text-classification", "text classification with an RNN encoder and pooling",
                           'model.predict(["a fine film"])[0].labels', None),
}  # fmt: skip


def _model_classes() -> dict[str, type]:
    """seqlearn's model classes by name: the only classes a folder can name."""
    from .classifier import SequenceClassifier
    from .language_model import LanguageModel
    from .seq2seq import Seq2Seq
    from .tagger import Tagger

    return {cls.__name__: cls for cls in (Seq2Seq, Tagger, LanguageModel, SequenceClassifier)}


# -- finding the folder --------------------------------------------------------------------------------


def resolve(source: str | os.PathLike, revision: str | None = None) -> Path | None:
    """The model folder ``source`` names: a local folder as it is, a Hub repo id (``org/name``
    that is no local path) as the snapshot ``huggingface_hub.snapshot_download`` gives for
    ``revision`` (a branch, tag or commit; offline with ``HF_HUB_OFFLINE=1``, from the cache
    alone); None for a local file (a checkpoint).  Anything else is a
    :class:`FileNotFoundError`; a repo the Hub (or its cache) does not have, a
    :class:`~seqlearn.errors.CheckpointError`."""
    path = Path(source)
    if path.exists():
        if revision is not None:
            raise ConfigError(f"{path}: revision={revision!r} applies to Hub repo ids, not to local files or folders")
        return path if path.is_dir() else None
    name = os.fspath(source)
    if not is_repo_id(name):
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file or model folder", name)
    return _snapshot(name, revision)


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is spelled like a Hub repo id (``name`` or ``org/name``, not a ``.ckpt``)."""
    return bool(_REPO_ID.fullmatch(name)) and not name.lower().endswith(PICKLE_SUFFIXES)


def _snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except (OSError, ValueError, HfHubHTTPError) as exc:
        at = f" at revision {revision!r}" if revision is not None else ""
        offline = " (HF_HUB_OFFLINE is set: only the cache is searched)" if constants.HF_HUB_OFFLINE else ""
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{repo_id}: no such local file or folder, and the Hugging Face Hub repo{at} could not be had from the "
            f"Hub or its cache {constants.HF_HUB_CACHE}{offline}: {type(exc).__name__}: {detail}"
        ) from exc


# -- reading ----------------------------------------------------------------------------------------


def read_model(source: str | os.PathLike, model: type | None = None, *, revision: str | None = None,
               map_location: Any = None) -> tuple[dict[str, Any], str]:  # fmt: skip
    """``(checkpoint, where)``: what a checkpoint file, model folder or Hub repo id holds, as a
    checkpoint dict (``hyper_parameters``, ``state_dict``, ``seqlearn`` provenance record,
    and for folders ``model_class``), checked to be one of ``model`` (any of seqlearn's
    classes when None) whose components are all available here; ``where`` names it in
    messages.  Files are read by :func:`~seqlearn.checkpoint_loading.load_checkpoint`,
    folders as JSON and safetensors only.  Every problem is a :class:`CheckpointError`."""
    folder = resolve(source, revision)
    if folder is None:
        if model is None:
            raise CheckpointError(f"{os.fspath(source)}: a checkpoint file: load it with its model class")
        return load_checkpoint(source, map_location, model), os.fspath(source)
    where = os.fspath(folder) if Path(source) == folder else f"{os.fspath(source)} ({folder})"
    checkpoint = _read_folder(folder, where, map_location)
    named = _model_classes().get(checkpoint["model_class"])
    if named is None:
        raise CheckpointError(f"{where}: its model_class {checkpoint['model_class']!r} is none of seqlearn's "
                              f"({', '.join(_model_classes())})")  # fmt: skip
    if model is not None and not issubclass(model, named):
        raise CheckpointError(f"{where}: a {named.__name__} folder, not a {model.__name__} one: load it with "
                              f"{named.__name__}.from_pretrained")  # fmt: skip
    check_model_checkpoint(checkpoint, model or named, where)
    return checkpoint, where


def _read_folder(folder: Path, where: str, map_location: Any) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    pickles = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.suffix.lower() in PICKLE_SUFFIXES)  # fmt: skip
    if pickles:
        raise CheckpointError(
            f"{where}: refused: the folder holds pickle-format files ({', '.join(pickles)}), which can run code when "
            f"loaded; a seqlearn model folder holds only JSON, {WEIGHTS} and tokenizer files, and nothing was read"
        )
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{where}: not a seqlearn model folder: it has no {WEIGHTS}")
    config = _read_json(folder, CONFIG, where)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{where}: {CONFIG} is not a seqlearn model config (no 'format': {FORMAT!r} in it)")
    hparams = dict(config.get("hyperparameters") or {})
    for key, name in (config.get("vocabularies") or {}).items():
        hparams[key] = Vocab.coerce(_read_json(folder, name, where), f"{where}/{name}").to_dict()
    files = config.get("tokenizer_files") or {}
    if files:
        hparams["tokenizer_models"] = {side: _inside(folder, name, where).read_bytes() for side, name in files.items()}
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        weights = load_file(folder / WEIGHTS, device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{where}/{WEIGHTS}: not a safetensors file, or a truncated one ({exc})") from exc
    for alias, name in (config.get("tied_weights") or {}).items():
        if name not in weights:
            raise CheckpointError(f"{where}: {CONFIG} ties {alias} to {name}, which {WEIGHTS} lacks")
        weights[alias] = weights[name]
    return {"hyper_parameters": hparams, "state_dict": weights, "model_class": config.get("model_class"),
            "seqlearn": {"version": config.get("seqlearn_version"), "provenance": config.get("components")}}


def _inside(folder: Path, name: Any, where: str) -> Path:
    """``folder/name`` for a file name of the config, which must stay inside the folder."""
    path = folder / str(name)
    if not isinstance(name, str) or ".." in Path(name).parts or Path(name).is_absolute() or not path.is_file():
        raise CheckpointError(f"{where}: {CONFIG} names the file {name!r}, which is not in the folder")
    return path


def _read_json(folder: Path, name: str, where: str) -> Any:
    path = _inside(folder, name, where)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where}/{name}: not a JSON file ({exc})") from exc


def check_overrides(model: type, overrides: Mapping[str, Any]) -> None:
    """Raise a :class:`ConfigError` for ``overrides`` that are not hyperparameters of ``model``."""
    unknown = sorted(set(overrides) - set(inspect.signature(model.__init__).parameters))
    if unknown:
        raise ConfigError(f"from_pretrained: unknown hyperparameter(s) {', '.join(unknown)}")


def _build(model: type, checkpoint: dict[str, Any], where: str, overrides: Mapping[str, Any]) -> Any:
    """``model`` made from the checkpoint's hyperparameters (``overrides`` replacing some), with its weights."""
    check_overrides(model, overrides)
    accepted = set(inspect.signature(model.__init__).parameters) | set(RENAMED.get(f"{model.__name__}.__init__", {}))
    unknown = sorted(set(checkpoint["hyper_parameters"]) - accepted)
    if unknown:
        raise CheckpointError(f"{where}: hyperparameters {', '.join(unknown)} are not arguments of {model.__name__}")
    with loading_checkpoint():  # older names map to today's
        instance = model(**{**checkpoint["hyper_parameters"], **overrides})
    try:
        instance.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{where}: the weights do not fit the {model.__name__} its hyperparameters "
                              f"describe ({first})") from exc  # fmt: skip
    instance.on_load_checkpoint(checkpoint)
    return instance


def load_model(source: str | os.PathLike, model: type | None = None, *, revision: str | None = None,
               map_location: Any = None) -> Any:  # fmt: skip
    """The model a checkpoint file (of class ``model``, by Lightning's safe loader), a model
    folder or a Hub repo id (of the class its config names, which must be ``model`` or a
    subclass when given) holds, exactly as saved, on ``map_location``.  This is how
    ``seqlearn translate|tag|export`` read ``--ckpt``."""
    if resolve(source, revision) is None and model is not None:
        return model.load_from_checkpoint(source, map_location=map_location)
    checkpoint, where = read_model(source, model, revision=revision, map_location=map_location)
    loaded = _build(model or _model_classes()[checkpoint["model_class"]], checkpoint, where, {})
    return loaded if map_location is None else loaded.to(map_location)


# -- writing --------------------------------------------------------------------------------------


def _untied(weights: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``weights`` with each shared tensor kept under its first name, and ``{other name: first name}``."""
    kept: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for name, tensor in weights.items():
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tensor.stride(), tensor.dtype)  # fmt: skip
        if tensor.numel() and key in first:
            tied[name] = first[key]
            continue
        first[key] = name
        kept[name] = tensor.detach().cpu().contiguous()
    return kept, tied


def _tokenizer_files(models: Mapping[str, bytes] | None) -> dict[str, tuple[str, bytes]]:
    """``{side: (file name, bytes)}`` for a Seq2Seq's ``tokenizer_models``: one
    ``sentencepiece.model`` for a model both sides share, ``<side>_sentencepiece.model`` otherwise."""
    models = dict(models or {})
    shared = len(models) > 1 and len({bytes(b) for b in models.values()}) == 1
    return {side: ("sentencepiece.model" if shared else f"{side}_sentencepiece.model", bytes(proto))
            for side, proto in models.items()}  # fmt: skip


def _is_vocabulary(key: str, value: Any) -> bool:
    return (key == "vocab" or key.endswith("_vocab")) and isinstance(value, (dict, Vocab))


def _card_class(model: Any) -> str:
    """The name of the first of seqlearn's model classes ``model`` is an instance of."""
    classes = _model_classes()
    for cls in type(model).__mro__:
        if classes.get(cls.__name__) is cls:
            return cls.__name__
    raise ConfigError(f"save_pretrained: {type(model).__name__} is none of seqlearn's model classes "
                      f"({', '.join(classes)}), which are all a folder can name")  # fmt: skip


class PretrainedMethods:
    """``save_pretrained`` and ``from_pretrained`` (see the module docstring), a part of every
    :class:`~seqlearn.training.TrainingModule`."""

    def save_pretrained(self, folder: str | os.PathLike, *, model_card: Mapping[str, Any] | None = None) -> Path:
        """Write this model into ``folder`` (created if missing) as a Hub-format model folder;
        returns it.  ``model_card`` fills the README: ``language`` (a code or a list),
        ``dataset`` (a Hub dataset id or a name), ``data`` (a sentence on the training data),
        ``metrics`` (``{"val_bleu": 31.2}``; default: the validation and test metrics the
        attached Trainer logged last), ``tags``, ``license``, ``description``::

            model.save_pretrained("de-en-gru", model_card={"language": ["de", "en"], "dataset": "bentrevett/multi30k"})
        """
        folder = Path(folder)
        class_name = _card_class(self)
        if folder.is_dir():
            pickles = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                raise ConfigError(f"save_pretrained: {folder} holds pickle-format files ({', '.join(pickles)}), so "
                                  "from_pretrained would refuse it; save into another folder")  # fmt: skip
        # the checkpoint hook gives what a checkpoint keeps: plain hyperparameters, provenance
        checkpoint: dict[str, Any] = {self.CHECKPOINT_HYPER_PARAMS_KEY: dict(self.hparams)}  # type: ignore[attr-defined]
        self.on_save_checkpoint(checkpoint)  # type: ignore[attr-defined]
        hparams = dict(checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY])  # type: ignore[attr-defined]
        vocabularies = {k: Vocab.coerce(v, k) for k, v in hparams.items() if _is_vocabulary(k, v)}
        tokenizers = _tokenizer_files(hparams.pop("tokenizer_models", None))
        rest = {k: v for k, v in hparams.items() if k not in vocabularies}
        for key, value in rest.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"save_pretrained: hyperparameter {key} is not a JSON value ({exc})") from None
        weights, tied = _untied(self.state_dict())  # type: ignore[attr-defined]
        record = checkpoint["seqlearn"]
        config = {
            "format": FORMAT, "model_class": class_name, "seqlearn_version": record["version"],
            "hyperparameters": rest, "vocabularies": {k: f"{k}.json" for k in vocabularies},
            "tokenizer_files": {side: name for side, (name, _) in tokenizers.items()},
            "components": record["provenance"], "tied_weights": tied,
        }  # fmt: skip

        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        save_file(weights, folder / WEIGHTS, metadata={"format": "pt"})
        for key, vocab in vocabularies.items():
            vocab.save(folder / f"{key}.json")
        for name, proto in dict(tokenizers.values()).items():
            (folder / name).write_bytes(proto)
        card = dict(model_card or {})
        if "metrics" not in card:
            card["metrics"] = _logged_metrics(self)
        if "data" not in card:
            card["data"] = _data_description(getattr(getattr(self, "_trainer", None), "datamodule", None))
        (folder / CARD).write_text(card_text(config, card, folder.name), encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, revision: str | None = None, **overrides: Any) -> Any:
        """The model saved by :meth:`save_pretrained` in the folder ``source``, or in the Hub
        repo ``source`` (``org/name``) at ``revision`` -- a checkpoint file works too.
        ``overrides`` replace hyperparameters (``lr=1e-4``...).  Loading reads JSON and
        safetensors only; a folder with a pickle, of another model class, or whose plugin
        is missing (named with its ``pip install`` line) raises :class:`CheckpointError`::

            tagger = Tagger.from_pretrained("ner-tagger")
            lm = LanguageModel.from_pretrained("org/tiny-lm", revision="v1.0", lr=1e-4)
        """
        checkpoint, where = read_model(source, cls, revision=revision)
        return _build(cls, checkpoint, where, overrides)


# -- the model card ---------------------------------------------------------------------------------


def _logged_metrics(model: Any) -> dict[str, float]:
    """The validation and test metrics the model's Trainer logged last (none without one)."""
    trainer = getattr(model, "_trainer", None)
    logged = getattr(trainer, "callback_metrics", None) or {}
    return {k: float(v) for k, v in sorted(logged.items()) if k.startswith(("val_", "test_"))}


def _data_description(datamodule: Any) -> str | None:
    """Which data a data module read, as file names (``train: train.tsv; valid: valid.tsv``)."""
    sources = getattr(datamodule, "sources", None)
    if not isinstance(sources, dict):
        return None
    parts = []
    for split, source in sources.items():
        if isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
            parts.append(f"{split}: {'the embedded default task' if name == 'default' else Path(name).name}")
        elif source is not None:
            parts.append(f"{split}: {type(source).__name__} given in code")
    return "; ".join(parts) or None


def card_text(config: Mapping[str, Any], card: Mapping[str, Any], name: str) -> str:
    """The ``README.md`` of a model folder: YAML front matter the Hub reads (``library_name:
    seqlearn``, ``pipeline_tag``, ``tags``, ``language``, ``datasets``, ``metrics``, and
    ``model-index`` results when the dataset is named) and the task, data, metrics and how
    to load it.  ``config`` is the folder's config, ``card`` as for :meth:`PretrainedMethods.save_pretrained`."""
    import yaml

    class_name = config["model_class"]
    pipeline, task, usage, command = _TASKS[class_name]
    hp = config["hyperparameters"]
    components = [r["name"] for r in (config.get("components") or {}).values() if r and "tokenizer" not in r["kind"]]
    tags = list(dict.fromkeys(["seqlearn", "rnn", pipeline, *components, *card.get("tags", [])]))
    meta: dict[str, Any] = {"library_name": "seqlearn", "pipeline_tag": pipeline, "tags": tags}
    if card.get("language"):
        meta["language"] = [card["language"]] if isinstance(card["language"], str) else list(card["language"])
    if card.get("license"):
        meta["license"] = card["license"]
    if card.get("dataset"):
        meta["datasets"] = [card["dataset"]]
    metrics = {k: float(v) for k, v in (card.get("metrics") or {}).items()}
    if metrics:
        meta["metrics"] = sorted({k.split("_", 1)[-1] for k in metrics})
        if card.get("dataset"):
            meta["model-index"] = [{"name": name, "results": [{
                "task": {"type": pipeline}, "dataset": {"name": card["dataset"], "type": card["dataset"]},
                "metrics": [{"type": k.split("_", 1)[-1], "name": k, "value": v} for k, v in metrics.items()]}]}]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name}", "", card.get("description") or f"A seqlearn {class_name}: {task}.", ""]
    sizes = ", ".join(f"{k}={hp[k]}" for k in ("cell", "attention", "decoder", "head", "pooling", "embedding_dim",
                                                "hidden_size", "num_layers", "encoder_layers", "decoder_layers")
                      if k in hp)  # fmt: skip
    lines += [f"- Model: `{class_name}` ({sizes}), seqlearn {config['seqlearn_version']}",
              f"- Data: {card.get('dataset') or card.get('data') or 'not recorded'}"]
    if card.get("dataset") and card.get("data"):
        lines.append(f"  ({card['data']})")
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    lines += ["", "## Use", "", "```python", f"from seqlearn import {class_name}", "",
              f'model = {class_name}.from_pretrained("{name}")  # this folder, or the Hub repo id it was uploaded to',
              usage, "```"]
    if command:
        lines += ["", "```bash", command.format(folder=name), "```"]
    lines += ["", "Loading reads only JSON, safetensors and tokenizer files: no code runs. Fine-tune it like any "
              "seqlearn model (`from_pretrained(..., lr=1e-4)`, then `Trainer.fit`)."]
    return "\n".join(lines) + "\n"


def save_best_model(trainer: Any, model: Any, folder: str | os.PathLike) -> Path:
    """After ``trainer.fit(model)``: write the best checkpoint's model (the monitored one, or
    the last one saved; ``model`` itself when none was) into ``folder`` as a model folder,
    its card with the data module's files and the metrics of that model.  This is
    ``seqlearn fit --save-pretrained FOLDER``."""
    callback = getattr(trainer, "checkpoint_callback", None)
    best = getattr(callback, "best_model_path", "") or ""
    card = {"data": _data_description(getattr(trainer, "datamodule", None))}
    if best and Path(best).is_file():
        monitored = getattr(callback, "monitor", None)
        score = getattr(callback, "best_model_score", None)
        # the last checkpoint is the Trainer's final state, whose metrics it logged last
        card["metrics"] = {monitored: float(score)} if monitored and score is not None else _logged_metrics(model)
        model = type(model).load_from_checkpoint(best, map_location="cpu")
    else:
        card["metrics"] = _logged_metrics(model)
    return model.save_pretrained(folder, model_card=card)
