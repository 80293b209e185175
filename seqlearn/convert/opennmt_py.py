"""OpenNMT-py 3.x RNN checkpoints as :class:`~seqlearn.Seq2Seq` models.

::

    from seqlearn.convert import convert

    model = convert("opennmt-py", "model_step_1200.pt")     # or a released model_release.pt
    model.translate(["ein hund läuft ."], beam_size=5)    # as onmt_translate -beam_size 5

The checkpoint is read with ``torch.load(weights_only=True)`` and only ``argparse.Namespace``
(its ``opt``) allowed beyond what that loader accepts anyway: reading it runs no code.
Supported: ``rnn``/``brnn`` encoders, LSTM or GRU, ``global_attention`` dot, general or mlp,
``input_feed`` 0 or 1, the bridge, shared or separate embeddings, any number of layers.  The
network maps onto seqlearn's Luong decoder (``tests/fixtures/peers/FORMATS.md`` documents
OpenNMT-py's network):

* ``brnn`` states are ``[forward; backward]`` per layer, copied into the decoder layer of the
  same depth -- seqlearn's ``bridge=False``;
* OpenNMT-py's bridge (``relu(W x + b)`` over runs of ``layers`` state vectors of one
  direction each) is the decoder's ``bridge_layers="joint"``, ``bridge_activation="relu"``
  with ``W`` repeated on the diagonal once per direction;
* ``general``: ``h_s · W q`` is seqlearn's ``luong-general`` with ``W`` transposed onto the
  keys; ``mlp``: ``v · tanh(W_q q + b + W_c h_s)`` is ``luong-concat`` with the bias moved to
  the keys, and its output ``W_out [c; q] + b`` (no tanh) the decoder's ``combine_bias``
  and ``combine_activation="identity"``;
* no ``</s>`` on the source (``src_eos=False``), nothing masked in the output
  (``mask_specials="none"``), and ``onmt_translate``'s defaults as the model's
  ``search_defaults``: :data:`ONMT_TRANSLATE_DEFAULTS`.

Options OpenNMT-py models may use that seqlearn does not reproduce raise
:class:`~seqlearn.errors.CheckpointError` naming the option.
"""
from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..seq2seq import Seq2Seq
from ..vocab import BOS, EOS, PAD, UNK, Vocab

__all__ = ["convert", "load_checkpoint", "ONMT_TRANSLATE_DEFAULTS", "SAFE_GLOBALS"]

#: The only class an OpenNMT-py 3.x checkpoint pickles beyond what ``weights_only`` accepts.
SAFE_GLOBALS = [argparse.Namespace]

#: ``onmt_translate``'s decoding rules (3.5.1: ``translate/translator.py``, ``beam_search.py``)
#: in seqlearn's search settings: beam 5 (beam 1 is beam search too); ``-length_penalty avg
#: -alpha 1`` dividing by the length *plus one* (the start token counts); a sentence ends
#: when its best extension ends, a finished hypothesis spending its slot; at most
#: ``int(min(max_length, 1.25 * source length + 5))`` tokens (``-max_length`` 250), ``</s>``
#: included, per sentence (``onmt_translate -batch_size 1``); ``-min_length 0``.
ONMT_TRANSLATE_DEFAULTS: dict[str, Any] = {
    "beam_size": 5, "length_penalty": "average", "alpha": 1.0, "length_penalty_offset": 1, "stopping": "first",
    "beam_refill": False, "max_length": 250, "max_length_ratio": 1.25, "max_length_offset": 5.0,
    "max_length_ratio_limits": "always", "min_length": 0,
}

# OpenNMT-py's special tokens (constants.py:DefaultTokens) by seqlearn's names
_SPECIALS = {"<unk>": UNK, "<blank>": PAD, "<s>": BOS, "</s>": EOS}
_ATTENTIONS = {"dot": "luong-dot", "general": "luong-general", "mlp": "luong-concat"}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's dict, read with ``torch.load(weights_only=True)`` allowing
    :data:`SAFE_GLOBALS` only; anything else pickled in it is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such OpenNMT-py checkpoint file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: it pickles more than an OpenNMT-py 3.x checkpoint does (only argparse.Namespace is "
            f"allowed beyond tensors and plain containers; 2.x checkpoints pickle torchtext objects): {exc}"
        ) from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    missing = {"model", "generator", "vocab", "opt"} - set(ckpt) if isinstance(ckpt, dict) else {"a dict"}
    if missing or not isinstance(ckpt["opt"], argparse.Namespace):
        raise CheckpointError(f"{path}: not an OpenNMT-py 3.x checkpoint (missing {sorted(missing) or ['opt']})")
    return ckpt


def _check_options(opt: argparse.Namespace, vocab: dict[str, Any], where: Path) -> None:
    """Raise CheckpointError naming the first option seqlearn cannot reproduce."""
    def get(name: str, default: Any = None) -> Any:
        return getattr(opt, name, default)

    required = {"model_task": "seq2seq", "model_type": "text", "decoder_type": "rnn",
                "global_attention_function": "softmax"}
    allowed = {"encoder_type": ("rnn", "brnn"), "rnn_type": ("LSTM", "GRU"), "global_attention": tuple(_ATTENTIONS)}
    for name, value in required.items():
        if get(name, value) != value:
            raise CheckpointError(f"{where}: unsupported OpenNMT-py option {name}={get(name)!r} (only {value!r})")
    for name, values in allowed.items():
        if get(name) not in values:
            raise CheckpointError(f"{where}: unsupported OpenNMT-py option {name}={get(name)!r} "
                                  f"(supported: {', '.join(values)})")
    for name in ("copy_attn", "coverage_attn", "share_decoder_embeddings", "position_encoding", "context_gate"):
        if get(name):
            raise CheckpointError(f"{where}: unsupported OpenNMT-py option {name}={get(name)!r}")
    if vocab.get("src_feats"):
        raise CheckpointError(f"{where}: unsupported OpenNMT-py option: source features (vocab['src_feats'])")
    if vocab.get("decoder_start_token", BOS) != BOS:
        raise CheckpointError(f"{where}: unsupported decoder_start_token {vocab['decoder_start_token']!r} (only {BOS})")
    if get("enc_layers") != get("dec_layers") or get("enc_hid_size") != get("dec_hid_size"):
        raise CheckpointError(f"{where}: enc_layers/enc_hid_size differ from dec_layers/dec_hid_size "
                              f"({get('enc_layers')}/{get('enc_hid_size')} vs {get('dec_layers')}/{get('dec_hid_size')})")


def _vocab(tokens: list[str], side: str, where: Path) -> Vocab:
    """An OpenNMT-py vocabulary list (index = id) as a Vocab with the same ids."""
    renamed = [_SPECIALS.get(t, t) if i < len(_SPECIALS) else t for i, t in enumerate(tokens)]
    specials = renamed[: len(_SPECIALS)]
    if sorted(specials) != sorted(_SPECIALS.values()):
        raise CheckpointError(f"{where}: the {side} vocabulary does not begin with OpenNMT-py's specials "
                              f"{list(_SPECIALS)}: {tokens[:4]}")
    vocab = Vocab(renamed[len(specials):], specials)
    if vocab.itos != renamed:
        raise CheckpointError(f"{where}: the {side} vocabulary repeats a token or a special name")
    return vocab


def _rnn_weights(weights: dict[str, torch.Tensor], prefix: str, layers: int, suffixes: list[str],
                 fused: bool) -> dict[str, torch.Tensor]:
    """``layers.{k}.cells.{d}.*`` from ``nn.LSTM``/``nn.GRU`` (``fused``: ``weight_ih_l{k}{suffix}``)
    or from stacked cells (``layers.{k}.weight_ih``)."""
    out = {}
    for k in range(layers):
        for d, suffix in enumerate(suffixes):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                source = f"{prefix}.{name}_l{k}{suffix}" if fused else f"{prefix}.layers.{k}.{name}"
                out[f"layers.{k}.cells.{d}.{name}"] = weights[source]
    return out


def _state_dict(ckpt: dict[str, Any], opt: argparse.Namespace, directions: int) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under seqlearn's names (see the module docstring)."""
    w, layers = ckpt["model"], opt.enc_layers
    emb = "embeddings.make_embedding.emb_luts.0.weight"
    out = {"src_embedding.weight": w[f"encoder.{emb}"], "tgt_embedding.weight": w[f"decoder.{emb}"],
           "generator.weight": ckpt["generator"]["weight"], "generator.bias": ckpt["generator"]["bias"],
           "decoder.combine.weight": w["decoder.attn.linear_out.weight"]}
    suffixes = ["", "_reverse"][:directions]
    out |= {f"encoder.{k}": v for k, v in _rnn_weights(w, "encoder.rnn", layers, suffixes, True).items()}
    out |= {f"decoder.{k}": v for k, v in _rnn_weights(w, "decoder.rnn", layers, [""], not opt.input_feed).items()}
    if opt.global_attention == "general":  # h_s · (W q) = q · (W^T h_s): W^T projects the keys
        out["decoder.attention.key_layer.weight"] = w["decoder.attn.linear_in.weight"].t().contiguous()
    elif opt.global_attention == "mlp":  # the query's bias moves to the keys: the sum is the same
        out |= {"decoder.attention.query_layer.weight": w["decoder.attn.linear_query.weight"],
                "decoder.attention.key_layer.weight": w["decoder.attn.linear_context.weight"],
                "decoder.attention.key_layer.bias": w["decoder.attn.linear_query.bias"],
                "decoder.attention.energy": w["decoder.attn.v.weight"][0],
                "decoder.combine.bias": w["decoder.attn.linear_out.bias"]}
    if opt.bridge:  # each direction's run of layer states through W: W on the diagonal once per direction
        for i in range(2 if opt.rnn_type == "LSTM" else 1):
            weight, bias = w[f"encoder.bridge.{i}.weight"], w[f"encoder.bridge.{i}.bias"]
            out[f"decoder.bridge.{i}.weight"] = torch.block_diag(*[weight] * directions)
            out[f"decoder.bridge.{i}.bias"] = bias.repeat(directions)
    return out


def convert(path: str | os.PathLike, **hyperparameters: Any) -> Seq2Seq:
    """The OpenNMT-py 3.x RNN checkpoint at ``path`` as a Seq2Seq in eval mode; ``hyperparameters``
    (training ones: ``lr``, ``dropout``, ``freeze``...) go to :class:`~seqlearn.Seq2Seq`."""
    where = Path(path)
    ckpt = load_checkpoint(where)
    opt, vocab = ckpt["opt"], ckpt["vocab"]
    _check_options(opt, vocab, where)
    directions = 2 if opt.encoder_type == "brnn" else 1
    weights = ckpt["model"]
    src_dim = weights["encoder.embeddings.make_embedding.emb_luts.0.weight"].size(1)
    tgt_dim = weights["decoder.embeddings.make_embedding.emb_luts.0.weight"].size(1)
    mlp = opt.global_attention == "mlp"
    dropout = opt.dropout[0] if isinstance(opt.dropout, (list, tuple)) else opt.dropout
    options = dict(
        cell=opt.rnn_type.lower(), attention=_ATTENTIONS[opt.global_attention], decoder="luong",
        embedding_dim=src_dim, tgt_embedding_dim=None if tgt_dim == src_dim else tgt_dim,
        hidden_size=opt.dec_hid_size, encoder_hidden_size=opt.enc_hid_size // directions,
        encoder_layers=opt.enc_layers, decoder_layers=opt.dec_layers, bidirectional=directions == 2,
        bridge=bool(opt.bridge), dropout=float(dropout),
        decoder_options={"input_feeding": bool(opt.input_feed), "combine_bias": mlp,
                         "combine_activation": "identity" if mlp else "tanh",
                         "bridge_activation": "relu", "bridge_layers": "joint"},
        src_eos=False, mask_specials="none", search_defaults=dict(ONMT_TRANSLATE_DEFAULTS),
    ) | hyperparameters
    model = Seq2Seq(_vocab(vocab["src"], "src", where), _vocab(vocab["tgt"], "tgt", where), **options)
    try:
        model.load_state_dict(_state_dict(ckpt, opt, directions))
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: its weights do not have the names and shapes its options describe "
                              f"({type(exc).__name__}: {exc})") from exc
    return model.eval()
