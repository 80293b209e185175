"""The tagger's command line: ``seqlearn fit`` for taggers (LightningCLI over
:class:`~seqlearn.tagger.Tagger` and :class:`~seqlearn.datamodules.TaggingDataModule`) and
``seqlearn tag`` (:func:`tag_lines`).

``seqlearn fit --config X`` trains a tagger when the config names the model class::

    model:
      class_path: seqlearn.Tagger
      init_args: {hidden_size: 200, head: crf}
    data: {train: train.txt, valid: dev.txt, scheme: BIO}

and a :class:`~seqlearn.seq2seq.Seq2Seq` otherwise (see :mod:`seqlearn.seq2seq_cli`).
The vocabularies, tag scheme and lowercasing come from the data module (built from its
training split), so a config never spells them out.
"""
from __future__ import annotations

from typing import Any, Iterable, TextIO

import yaml
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .tagging_data import TaggingDataModule
from .seq2seq_cli import RAISE_PARSE_ERRORS, config_errors, fit_arguments, resolve_configs
from .tagger import Tagger, datamodule_arguments

__all__ = ["TaggerCLI", "fit", "is_tagger_config", "tag_lines"]

# Tagger arguments that the data module determines
_LINKED = ("word_vocab", "tag_vocab", "char_vocab", "scheme", "data_scheme", "lowercase")


class TaggerCLI(LightningCLI):
    """LightningCLI for a Tagger (``model.class_path``) on a TaggingDataModule; the model
    gets the data module's vocabularies, tag scheme and lowercasing."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in _LINKED:
            parser.link_arguments("data", f"model.init_args.{key}", compute_fn=lambda d, key=key: datamodule_arguments(d)[key],
                                  apply_on="instantiate")  # fmt: skip


def _model_class_path(config: str) -> Any:
    """``model.class_path`` of a config file; None when it has none or cannot be read
    (LightningCLI then reports the problem in its own words)."""
    try:
        with open(config, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model.get("class_path") if isinstance(model, dict) else None


def is_tagger_config(args: list[str]) -> bool:
    """Whether a ``--config`` among ``args`` (a path or a bundled name) sets
    ``model.class_path`` to the Tagger (``seqlearn.Tagger`` or ``seqlearn.tagger.Tagger``)."""
    args = resolve_configs(args)
    configs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config", "-c")]
    return any(_model_class_path(c) in ("seqlearn.Tagger", "seqlearn.tagger.Tagger", "Tagger") for c in configs)


def fit(args: list[str]) -> LightningCLI:
    """``seqlearn fit ARGS`` for a tagger config: LightningCLI's ``fit`` with ``--config``
    (a path, or the name of a bundled config: ``conll2003_ner``, ``ud_ewt_upos``),
    ``--trainer.*``, ``--model.init_args.*``, ``--data.*``; returns the CLI."""
    args = fit_arguments(args)
    with config_errors(args):
        return TaggerCLI(Tagger, TaggingDataModule, subclass_mode_model=True, args=["fit", *args],
                         save_config_kwargs={"overwrite": True}, parser_kwargs=RAISE_PARSE_ERRORS)  # fmt: skip


def tag_lines(tagger: Tagger, lines: Iterable[str], out: TextIO, *, batch_size: int = 64, confidence: bool = False,
              scheme: str | None = None) -> int:  # fmt: skip
    """Tag one sentence per input line (split by the tagger's tokenizer) and write
    ``token<TAB>tag`` lines (``<TAB>confidence`` added with ``confidence``), a blank line
    after each sentence -- an empty input line gives just the blank line.  Tags are in
    ``scheme``, by default the training data's (see :meth:`Tagger.predict`).  Sentences are tagged
    ``batch_size`` at a time and written as soon as they are tagged.  Returns the number of
    sentences.  This is ``seqlearn tag``."""
    count = 0
    pending: list[str] = []

    def flush() -> None:
        for result in tagger.predict(pending, batch_size=batch_size, scheme=scheme):
            out.write(result.to_conll(confidence) + "\n\n" if result.tokens else "\n")
        out.flush()
        pending.clear()

    for line in lines:
        pending.append(line.rstrip("\r\n"))
        count += 1
        if len(pending) == batch_size:
            flush()
    flush()
    return count
