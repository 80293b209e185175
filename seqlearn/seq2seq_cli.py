"""Command-line front ends of :class:`~seqlearn.seq2seq.Seq2Seq`: ``seqlearn fit`` and ``seqlearn translate``.

``seqlearn fit`` is Lightning's :class:`~pytorch_lightning.cli.LightningCLI` over
``Seq2Seq`` and ``TranslationDataModule``; the vocabularies and tokenizer names the data
module builds are handed to the model, so a config never spells out a vocabulary.
``seqlearn translate`` streams stdin through a checkpoint, a line in, a translation out.
"""
from __future__ import annotations

from argparse import ArgumentError
from contextlib import contextmanager
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .checkpoint_loading import load_checkpoint
from .datamodules import TranslationDataModule
from .errors import ConfigError, SeqlearnError
from .renamed import renaming_hint
from .seq2seq import Seq2Seq, tokenizer_hparams
from .vocab import Vocab

__all__ = ["Seq2SeqCLI", "fit", "bundled_configs", "resolve_configs", "fit_arguments", "config_errors", "translate_lines"]

#: LightningCLI keyword that makes a bad config raise (see :func:`config_errors`) instead of exiting
RAISE_PARSE_ERRORS = {"exit_on_error": False}


def bundled_configs() -> dict[str, Path]:
    """The example configs shipped in ``seqlearn/configs``, by name without ``.yaml``."""
    folder = resources.files("seqlearn") / "configs"
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def resolve_configs(args: list[str]) -> list[str]:
    """``args`` with ``--config NAME`` of a bundled config replaced by its path."""
    configs = bundled_configs()
    args = list(args)
    for i, arg in enumerate(args[:-1]):
        if arg in ("--config", "-c") and not Path(args[i + 1]).exists() and args[i + 1] in configs:
            args[i + 1] = str(configs[args[i + 1]])
    return args


def fit_arguments(args: list[str]) -> list[str]:
    """``args`` for LightningCLI's ``fit``: bundled configs resolved, and resuming made safe.
    A ``--ckpt_path`` file must read with ``torch.load(weights_only=True)`` (else a
    :class:`~seqlearn.errors.CheckpointError`, before anything starts), Lightning is told
    ``--weights_only true`` whatever the config or the environment say, and
    ``--weights_only false`` is a :class:`~seqlearn.errors.ConfigError`."""
    args = resolve_configs(args)
    for value in _option_values(args, "--weights_only"):
        if value.lower() != "true":
            raise ConfigError(f"--weights_only {value}: seqlearn resumes from checkpoints with weights_only=True only")
    for value in _option_values(args, "--ckpt_path"):
        if Path(value).is_file():
            load_checkpoint(value)
    return [*args, "--weights_only", "true"]


def _option_values(args: list[str], option: str) -> list[str]:
    """The values given to ``option`` as ``option VALUE`` or ``option=VALUE``."""
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == option]
    return values + [arg.split("=", 1)[1] for arg in args if arg.startswith(option + "=")]


@contextmanager
def config_errors(args: list[str]) -> Iterator[None]:
    """Turn LightningCLI's parse errors (a config with an unknown key, a value of the wrong
    type, a missing file), raised under :data:`RAISE_PARSE_ERRORS`, into a
    :class:`~seqlearn.errors.ConfigError` naming the config file(s), and bring out a seqlearn
    error that jsonargparse wrapped in a ValueError while building the model or data."""
    try:
        yield
    except ArgumentError as exc:
        configs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config", "-c")]
        raise ConfigError(f"{', '.join(configs) or 'command line'}: {exc}{renaming_hint(str(exc))}") from exc
    except SeqlearnError:
        raise
    except ValueError as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, SeqlearnError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause.with_traceback(cause.__traceback__) from None


def _vocabularies(data: TranslationDataModule) -> tuple[Vocab, Vocab]:
    # the data module builds its vocabularies from the training split on setup; Lightning
    # calling setup again later costs nothing
    data.setup("fit")
    return data.src_vocab, data.tgt_vocab


def _tokenizers(data: TranslationDataModule) -> tuple[str, str, dict[str, bytes] | None]:
    # after setup: with subwords, the tokenizers are the SentencePiece models trained there
    data.setup("fit")
    return tokenizer_hparams(data.src_tokenizer, data.tgt_tokenizer)


class Seq2SeqCLI(LightningCLI):
    """LightningCLI for Seq2Seq on a TranslationDataModule: the model gets the data
    module's vocabularies (built from its training split) and tokenizers (names, and the
    bytes of SentencePiece models it trained)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for i, target in enumerate(("src_vocab", "tgt_vocab")):
            parser.link_arguments("data", f"model.{target}", compute_fn=lambda d, i=i: _vocabularies(d)[i],
                                  apply_on="instantiate")
        for i, target in enumerate(("src_tokenizer", "tgt_tokenizer", "tokenizer_models")):
            parser.link_arguments("data", f"model.{target}", compute_fn=lambda d, i=i: _tokenizers(d)[i],
                                  apply_on="instantiate")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # LightningCLI saves the init arguments as given, here Vocab objects; checkpoints
        # keep plain dicts so that they load with torch.load(weights_only=True)
        self.model.hparams.update(src_vocab=self.model.src_vocab.to_dict(), tgt_vocab=self.model.tgt_vocab.to_dict())


def fit(args: list[str]) -> LightningCLI:
    """``seqlearn fit ARGS``: LightningCLI's ``fit`` with ``ARGS`` (``--config``, ``--trainer.*``,
    ``--model.*``, ``--data.*``).  ``--config NAME`` also accepts the name of a bundled config
    (``default_task``, ``multi30k_de_en``).  A config that does not parse, has unknown keys or
    values of the wrong type raises :class:`~seqlearn.errors.ConfigError` naming it; components
    are registry names, looked up and never imported (an unknown one is an
    :class:`~seqlearn.errors.UnknownComponentError`).  Resuming is safe: see :func:`fit_arguments`.
    Returns the CLI (its ``trainer`` and ``model``)."""
    args = fit_arguments(args)
    with config_errors(args):
        return Seq2SeqCLI(Seq2Seq, TranslationDataModule, args=["fit", *args],
                          save_config_kwargs={"overwrite": True}, parser_kwargs=RAISE_PARSE_ERRORS)


def translate_lines(model: Seq2Seq, lines: Iterable[str], out: TextIO, *, n_best: int = 1, detokenize: bool = True,
                    chunk: int = 1000, **options: Any) -> int:
    """Translate one sentence per line of ``lines`` and write to ``out``; returns the number of lines.

    ``n_best == 1``: one line per input line (an empty line for an empty input).
    ``n_best > 1``: Moses n-best lines ``index ||| translation ||| score`` (0-based index).
    Lines are read ``chunk`` at a time, so arbitrarily long inputs stream.  ``options``
    go to :meth:`Seq2Seq.translate` (``beam_size``, ``max_length``, ``length_penalty``...).
    """
    def join(h: Any) -> str:
        return h.text if detokenize else " ".join(h.tokens)

    lines = iter(lines)
    done = 0
    while block := [line.rstrip("\r\n") for line in islice(lines, chunk)]:
        for i, hyps in enumerate(model.translate(block, n_best=n_best, **options), start=done):
            if n_best == 1:
                out.write(join(hyps[0]) + "\n")
            else:
                out.writelines(f"{i} ||| {join(h)} ||| {h.score:.6f}\n" for h in hyps)
        done += len(block)
    out.flush()
    return done
