"""JoeyNMT 2.x recurrent models as :class:`~seqlearn.Seq2Seq` models.

A JoeyNMT model is a folder: ``config.yaml`` (the architecture under ``model:``, the
special symbols under ``data:``), ``src_vocab.txt`` / ``trg_vocab.txt`` (line ``i`` is id
``i``) and ``N.ckpt`` checkpoints (``best.ckpt``, ``latest.ckpt``).  Reading it runs no
code: ``yaml.safe_load`` and ``torch.load(weights_only=True)`` (the checkpoint holds only
dicts, numbers and tensors)::

    model = convert_joeynmt("models/de-en")              # or ".../de-en/12000.ckpt"
    model.translate("ein hund läuft .", beam_size=5)[0][0].text

Covered: bidirectional GRU/LSTM encoders, ``luong`` and ``bahdanau`` attention,
``init_hidden`` ``bridge``, ``last`` or ``zero``, input feeding on or off, any number of
layers.  The network maps onto seqlearn's built-in components with these options:

* encoder: :class:`~seqlearn.encoder.RNNEncoder`, source ``</s>`` appended as JoeyNMT does;
* decoder ``luong`` (the current state queries the attention) with ``combine_bias``
  (``att_vector = tanh(W [q; c] + b)``, its columns reordered for seqlearn's ``[c; q]``) and
  ``initial_state="top"`` (every layer from the top encoder layer, an LSTM's cell state
  equal to its hidden state) or ``"zero"``;
* attention ``luong-general`` (``q · W k``) or ``bahdanau`` with ``key_bias=False``;
* output layer without bias, and ``mask_specials="after_softmax"``: JoeyNMT normalizes over
  the whole target vocabulary and only then forbids ``<pad>`` and ``<s>``.

The model's ``search_defaults`` hold JoeyNMT's decoding rules (see
:data:`JOEYNMT_SEARCH`), so ``model.translate(src, beam_size=5)`` decodes as ``joeynmt
translate`` with ``beam_size: 5`` does.  Inputs are JoeyNMT's tokens: the source line split
on spaces (a ``lowercase: true`` model expects lowercased input).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import CheckpointError, ConfigError
from ..seq2seq import Seq2Seq
from ..vocab import BOS, EOS, PAD, UNK, Vocab

__all__ = ["convert", "convert_joeynmt", "JOEYNMT_SEARCH"]

#: JoeyNMT 2.3.0's decoding defaults (``prediction.py``, ``search.py``) as search settings
#: (:data:`seqlearn.translation.SEARCH_SETTINGS`): no length penalty (``beam_alpha: -1``), no
#: ``</s>`` at the first step (``min_output_length: 1``), at most ``int(1.5 * n)`` steps for a
#: source of ``n`` tokens, its ``</s>`` counted, unless ``max_length`` is given
#: (``max_output_length: -1``; JoeyNMT takes the longest source of a batch, the rule here
#: each sentence's own, as JoeyNMT with batch size 1), and beam search that keeps finished
#: hypotheses in their beam slots until every slot has ended once (``stopping="slots"``).
JOEYNMT_SEARCH: dict[str, Any] = {
    "length_penalty": None,
    "min_length": 1,
    "stopping": "slots",
    "max_length_ratio": 1.5,
    "max_length_ratio_limits": "unset",
}

_SPECIALS = (("unk", UNK, 0), ("pad", PAD, 1), ("bos", BOS, 2), ("eos", EOS, 3))
_CELLS = {"gru": "gru", "lstm": "lstm"}
_ATTENTIONS = {"luong": "luong-general", "bahdanau": "bahdanau"}


def _fail(where: Path, message: str) -> CheckpointError:
    return CheckpointError(f"{where}: {message}")


def _folder_and_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """The model folder and the checkpoint to read: ``path`` itself when it is a file, else
    the folder's ``best.ckpt``, ``latest.ckpt`` or highest-numbered ``N.ckpt``."""
    path = Path(path)
    if path.is_file():
        return path.parent, path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such JoeyNMT model folder or checkpoint")
    for name in ("best.ckpt", "latest.ckpt"):
        if (path / name).is_file():
            return path, path / name
    numbered = [p for p in path.glob("*.ckpt") if re.fullmatch(r"\d+", p.stem)]
    if not numbered:
        raise CheckpointError(f"{path}: a JoeyNMT model folder holds a .ckpt checkpoint; found none")
    return path, max(numbered, key=lambda p: int(p.stem))


def _vocab(folder: Path, side: str, symbols: dict[str, Any]) -> Vocab:
    """``{side}_vocab.txt`` with JoeyNMT's special symbols renamed to seqlearn's, at their ids."""
    file = folder / f"{side}_vocab.txt"
    if not file.is_file():
        raise _fail(folder, f"{file.name} is missing (JoeyNMT's checkpoints hold no vocabulary)")
    itos = file.read_text(encoding="utf-8").split("\n")
    if itos and itos[-1] == "":
        itos.pop()
    renamed = {}
    for key, ours, default_id in _SPECIALS:
        i = symbols.get(f"{key}_id", default_id)
        if not (isinstance(i, int) and 0 <= i < len(itos)) or itos[i] != symbols.get(f"{key}_token", ours):
            raise _fail(file, f"line {i} should be the {key} symbol {symbols.get(f'{key}_token', ours)!r} "
                              "of config.yaml's data.special_symbols")
        renamed[i] = ours
    if sorted(renamed) != list(range(len(_SPECIALS))):
        raise _fail(file, "the special symbols must be its first lines (ids 0-3)")
    itos = [renamed.get(i, tok) for i, tok in enumerate(itos)]
    if len(set(itos)) != len(itos):
        raise _fail(file, "it lists a token twice")
    return Vocab(itos[len(_SPECIALS):], itos[: len(_SPECIALS)])


def _architecture(cfg: dict[str, Any], where: Path) -> dict[str, Any]:
    """Seq2Seq hyperparameters for config.yaml's ``model`` section; CheckpointError naming
    the option for what seqlearn cannot represent."""
    model = cfg.get("model") or {}
    enc, dec = model.get("encoder") or {}, model.get("decoder") or {}

    def refuse(option: str, value: Any, why: str = "") -> CheckpointError:
        return _fail(where, f"model.{option}: {value!r} is not supported by the JoeyNMT converter{why}")

    for option in ("tied_embeddings", "tied_softmax"):
        if model.get(option, False):
            raise refuse(option, True)
    for part, sub in (("encoder", enc), ("decoder", dec)):
        if sub.get("type", "recurrent") != "recurrent":
            raise refuse(f"{part}.type", sub.get("type"), " (only recurrent models)")
        if (sub.get("embeddings") or {}).get("scale", False):
            raise refuse(f"{part}.embeddings.scale", True)
    if not enc.get("bidirectional", True):
        raise refuse("encoder.bidirectional", False, " (JoeyNMT 2.3.0 itself fails on unidirectional encoders)")
    cell = str(dec.get("rnn_type", "gru")).lower()
    if cell not in _CELLS or str(enc.get("rnn_type", "gru")).lower() != cell:
        raise refuse("decoder.rnn_type", dec.get("rnn_type"), " (gru or lstm, the same as the encoder's)")
    attention = dec.get("attention", "bahdanau")
    if attention not in _ATTENTIONS:
        raise refuse("decoder.attention", attention, " (bahdanau or luong)")
    init_hidden = dec.get("init_hidden", "bridge")
    if init_hidden not in ("bridge", "last", "zero"):
        raise refuse("decoder.init_hidden", init_hidden, " (bridge, last or zero)")
    if dec.get("activation", "tanh") != "tanh":
        raise refuse("decoder.activation", dec.get("activation"), " (tanh only)")
    return {
        "cell": _CELLS[cell],
        "attention": _ATTENTIONS[attention],
        "decoder": "luong",
        "embedding_dim": enc["embeddings"]["embedding_dim"],
        "tgt_embedding_dim": dec["embeddings"]["embedding_dim"],
        "hidden_size": dec["hidden_size"],
        "encoder_hidden_size": enc["hidden_size"],
        "encoder_layers": enc.get("num_layers", 1),
        "decoder_layers": dec.get("num_layers", 1),
        "bidirectional": True,
        "dropout": float(dec.get("dropout", 0.0)),
        "bridge": init_hidden == "bridge",
        "decoder_options": {"input_feeding": bool(dec.get("input_feeding", True)), "combine_bias": True,
                            "initial_state": "zero" if init_hidden == "zero" else "top"},
        "attention_options": {"key_bias": False} if attention == "bahdanau" else None,
        "output_bias": False,
        "mask_specials": "after_softmax",
    }


def _weights(joey: dict[str, torch.Tensor], arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """JoeyNMT's ``model_state`` under seqlearn's parameter names."""
    g = {"src_embedding.weight": joey["src_embed.lut.weight"], "tgt_embedding.weight": joey["trg_embed.lut.weight"],
         "generator.weight": joey["decoder.output_layer.weight"]}
    params = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    for k in range(arch["encoder_layers"]):
        for d, suffix in enumerate(("", "_reverse")):
            for p in params:
                g[f"encoder.layers.{k}.cells.{d}.{p}"] = joey[f"encoder.rnn.{p}_l{k}{suffix}"]
    for k in range(arch["decoder_layers"]):
        for p in params:
            g[f"decoder.layers.{k}.cells.0.{p}"] = joey[f"decoder.rnn.{p}_l{k}"]
    hidden = arch["hidden_size"]
    w = joey["decoder.att_vector_layer.weight"]  # (H, H + 2h) reading [q; c]; seqlearn's combine reads [c; q]
    g["decoder.combine.weight"] = torch.cat([w[:, hidden:], w[:, :hidden]], 1)
    g["decoder.combine.bias"] = joey["decoder.att_vector_layer.bias"]
    g["decoder.attention.key_layer.weight"] = joey["decoder.attention.key_layer.weight"]
    if arch["attention"] == "bahdanau":
        g["decoder.attention.query_layer.weight"] = joey["decoder.attention.query_layer.weight"]
        g["decoder.attention.energy"] = joey["decoder.attention.energy_layer.weight"].reshape(-1)
    if arch["bridge"]:
        g["decoder.bridge.0.weight"] = joey["decoder.bridge_layer.weight"]
        g["decoder.bridge.0.bias"] = joey["decoder.bridge_layer.bias"]
    return g


def convert_joeynmt(path: str | os.PathLike, **hyperparameters: Any) -> Seq2Seq:
    """The JoeyNMT 2.x recurrent model in folder ``path`` (or its checkpoint ``path``) as a
    :class:`~seqlearn.Seq2Seq` in eval mode that scores and decodes as JoeyNMT does (see the
    module docstring); ``hyperparameters`` (training ones: ``lr``, ``dropout``, ``freeze``...)
    go to the Seq2Seq.  Raises :class:`~seqlearn.errors.CheckpointError` naming the file and
    the option for anything it cannot read or represent."""
    folder, ckpt_path = _folder_and_checkpoint(path)
    config = folder / "config.yaml"
    if not config.is_file():
        raise _fail(folder, "config.yaml is missing (JoeyNMT's checkpoints hold no configuration)")
    try:
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise _fail(config, f"not a readable YAML file ({exc})") from exc
    if not isinstance(cfg, dict):
        raise _fail(config, "not a JoeyNMT configuration (a YAML mapping)")
    arch = _architecture(cfg, config)
    data = cfg.get("data") or {}
    symbols = data.get("special_symbols") or {}
    if symbols.get("sep_token") or symbols.get("lang_tags"):
        raise _fail(config, "data.special_symbols: sep_token and lang_tags are not supported by the JoeyNMT converter")
    src_vocab, tgt_vocab = _vocab(folder, "src", symbols), _vocab(folder, "trg", symbols)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a weights-only checkpoint
        raise _fail(ckpt_path, f"not a JoeyNMT checkpoint readable with weights_only=True ({exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state"), dict):
        raise _fail(ckpt_path, "not a JoeyNMT checkpoint (no model_state)")
    testing = cfg.get("testing") or {}
    search = dict(JOEYNMT_SEARCH, min_length=int(testing.get("min_output_length", 1)))
    alpha = float(testing.get("beam_alpha", -1))
    if alpha > 0:  # JoeyNMT's penalty is GNMT's ((5 + |y|) / 6) ** alpha, |y| counting </s>
        search.update(length_penalty="gnmt", alpha=alpha)
    if int(testing.get("max_output_length", -1)) > 0:
        search["max_length"] = int(testing["max_output_length"])
    try:
        model = Seq2Seq(src_vocab, tgt_vocab, **({"val_bleu": False, "search_defaults": search, **arch}
                                                 | hyperparameters))
    except ConfigError as exc:  # e.g. init_hidden "last" with a decoder that is not 2h or h wide
        raise _fail(config, f"model: {exc}") from exc
    try:
        model.load_state_dict(_weights(ckpt["model_state"], arch))
    except (KeyError, RuntimeError) as exc:
        raise _fail(ckpt_path, f"its parameters do not match config.yaml's model ({type(exc).__name__}: {exc})") from exc
    return model.eval()


#: the name :func:`seqlearn.convert.convert` calls
convert = convert_joeynmt
