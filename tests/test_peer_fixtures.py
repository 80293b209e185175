"""Integrity of the OpenNMT-py / JoeyNMT oracle fixtures in ``tests/fixtures/peers`` (issue 16).

Checks what can fail without a converter: the manifest's files are all there and unchanged;
the checkpoints load with ``torch.load(weights_only=True)`` and exactly the allowlist that
FORMATS.md documents (OpenNMT-py's fail without it); their options, parameter names and shapes
are what the manifest and FORMATS.md say; the recorded decoding settings are the tools'
defaults; and every recorded output has one well-formed line per source sentence.
"""
from __future__ import annotations

import argparse
import ast
import functools
import gzip
import hashlib
import json
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "peers"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
MODELS = MANIFEST["models"]
ONMT = sorted(n for n, m in MODELS.items() if m["tool"] == "opennmt-py")
JOEY = sorted(n for n, m in MODELS.items() if m["tool"] == "joeynmt")
RUNS = [(n, run) for n in sorted(MODELS) for run in MODELS[n]["outputs"]]
# The one global OpenNMT-py 3.x checkpoints pickle beyond what weights_only accepts (FORMATS.md).
ONMT_SAFE_GLOBALS = [argparse.Namespace]
N = MANIFEST["n_sentences"]
MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"
PEER_TOKEN = re.compile(r"\w+|[^\w\s]")


@functools.lru_cache
def derived(lang: str) -> str:
    """The fixtures' inputs: the first N lines of Multi30k test2016, lowercased and split as
    the peers' prep_multi30k.py does; derived from ../shared/data, never copied here."""
    with gzip.open(MULTI30K / f"test2016.{lang}.gz", "rt", encoding="utf-8") as f:
        return "".join(" ".join(PEER_TOKEN.findall(line.strip().lower())) + "\n" for _, line in zip(range(N), f))


@pytest.fixture
def sources(shared_data) -> list[str]:
    """The source sentences the tools translated (the test is skipped without ../shared/data)."""
    return derived("de").split("\n")


def lines(rel: str) -> list[str]:
    """A recorded file's lines; every line ends with a newline, even an empty translation's."""
    text = (FIXTURES / rel).read_text(encoding="utf-8")
    assert text.endswith("\n"), rel
    return text.split("\n")[:-1]


def settings(name: str, run: str) -> dict:
    return json.loads((FIXTURES / MODELS[name]["checkpoint"]).with_name("decode_settings.json").read_text())[run][
        "options"
    ]


def load_onmt(name: str) -> dict:
    with torch.serialization.safe_globals(ONMT_SAFE_GLOBALS):
        return torch.load(FIXTURES / MODELS[name]["checkpoint"], map_location="cpu", weights_only=True)


def test_every_listed_file_is_there_unchanged():
    for entry in [f for m in MODELS.values() for f in m["files"]]:
        data = (FIXTURES / entry["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"]), entry["path"]
    for m in MODELS.values():
        listed = {f["path"] for f in m["files"]}
        assert {m["checkpoint"], *(p for out in m["outputs"].values() for p in out.values())} <= listed


def test_the_derived_sources_are_the_ones_the_tools_translated(sources):
    for lang, entry in (("de", MANIFEST["source"]), ("en", MANIFEST["reference"])):
        data = derived(lang).encode("utf-8")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"]), lang
    assert len(sources) == N + 1 and sources[-1] == "" and all(sources[:-1])


def test_models_cover_every_option_value_of_issue_16():
    def values(names, key):
        return {MODELS[n]["options"][key] for n in names}

    assert values(ONMT, "enc") == {"rnn", "brnn"}
    assert values(ONMT, "cell") == {"LSTM", "GRU"}
    assert values(ONMT, "attn") == {"dot", "general", "mlp"}
    assert values(ONMT, "feed") == {0, 1}
    assert values(ONMT, "bridge") == {True, False}
    assert values(ONMT, "shared") == {True, False}
    assert values(ONMT, "layers") == {1, 2}
    assert values(JOEY, "attn") == {"bahdanau", "luong"}
    assert values(JOEY, "init") == {"bridge", "last", "zero"}
    assert values(JOEY, "feed") == {True, False}
    assert values(JOEY, "cell") == {"lstm", "gru"}
    assert values(JOEY, "layers") == {1, 2}
    for m in MODELS.values():
        assert set(m["outputs"]) == {"greedy", "beam5", "beam5_max10"}


@pytest.mark.parametrize("name", ONMT)
def test_onmt_checkpoint_loads_weights_only_with_exactly_the_namespace_allowlist(name):
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(FIXTURES / MODELS[name]["checkpoint"], map_location="cpu", weights_only=True)
    ckpt = load_onmt(name)
    assert set(ckpt) == {"model", "generator", "vocab", "opt", "optim"}
    if MODELS[name]["onmt_release_model"]:
        assert ckpt["optim"] is None
    else:
        assert set(ckpt["optim"]) == {"training_step", "decay_step", "optimizer"}
    o, opt, vocab = MODELS[name]["options"], ckpt["opt"], ckpt["vocab"]
    assert (opt.encoder_type, opt.rnn_type, opt.global_attention, opt.input_feed, opt.bridge) == (
        o["enc"], o["cell"], o["attn"], o["feed"], o["bridge"])
    assert (opt.share_embeddings, opt.enc_layers, opt.dec_layers) == (o["shared"], o["layers"], o["layers"])
    assert vocab["data_task"] == "seq2seq" and vocab["decoder_start_token"] == "<s>"
    for side in ("src", "tgt"):
        assert vocab[side][:4] == ["<unk>", "<blank>", "<s>", "</s>"] and len(vocab[side]) % 8 == 0
    if o["shared"]:
        assert vocab["src"] == vocab["tgt"]


@pytest.mark.parametrize("name", ONMT)
def test_onmt_parameter_names_and_shapes_are_as_documented(name):
    ckpt = load_onmt(name)
    o, opt, p = MODELS[name]["options"], ckpt["opt"], ckpt["model"]
    v_s, v_t = len(ckpt["vocab"]["src"]), len(ckpt["vocab"]["tgt"])
    e_s, e_t, hid, layers = opt.src_word_vec_size, opt.tgt_word_vec_size, opt.dec_hid_size, o["layers"]
    dirs = 2 if o["enc"] == "brnn" else 1
    h, g = opt.enc_hid_size // dirs, 4 if o["cell"] == "LSTM" else 3
    expected = {
        "encoder.embeddings.make_embedding.emb_luts.0.weight": (v_s, e_s),
        "decoder.embeddings.make_embedding.emb_luts.0.weight": (v_t, e_t),
        "decoder.attn.linear_out.weight": (hid, 2 * hid),
    }
    for k in range(layers):
        for suffix in ([""] if dirs == 1 else ["", "_reverse"]):
            expected[f"encoder.rnn.weight_ih_l{k}{suffix}"] = (g * h, e_s if k == 0 else dirs * h)
            expected[f"encoder.rnn.weight_hh_l{k}{suffix}"] = (g * h, h)
            expected[f"encoder.rnn.bias_ih_l{k}{suffix}"] = expected[f"encoder.rnn.bias_hh_l{k}{suffix}"] = (g * h,)
        if o["feed"]:
            pre, post = f"decoder.rnn.layers.{k}.", ""
        else:
            pre, post = "decoder.rnn.", f"_l{k}"
        expected[f"{pre}weight_ih{post}"] = (g * hid, (e_t + hid if o["feed"] else e_t) if k == 0 else hid)
        expected[f"{pre}weight_hh{post}"] = (g * hid, hid)
        expected[f"{pre}bias_ih{post}"] = expected[f"{pre}bias_hh{post}"] = (g * hid,)
    if o["bridge"]:
        for i in range(2 if o["cell"] == "LSTM" else 1):
            expected[f"encoder.bridge.{i}.weight"] = (layers * h, layers * h)
            expected[f"encoder.bridge.{i}.bias"] = (layers * h,)
    if o["attn"] == "general":
        expected["decoder.attn.linear_in.weight"] = (hid, hid)
    if o["attn"] == "mlp":
        expected.update({
            "decoder.attn.linear_context.weight": (hid, hid), "decoder.attn.linear_query.weight": (hid, hid),
            "decoder.attn.linear_query.bias": (hid,), "decoder.attn.v.weight": (1, hid),
            "decoder.attn.linear_out.bias": (hid,)})
    assert {k: tuple(t.shape) for k, t in p.items()} == expected
    assert {k: tuple(t.shape) for k, t in ckpt["generator"].items()} == {"weight": (v_t, hid), "bias": (v_t,)}
    if o["shared"]:
        assert torch.equal(p["encoder.embeddings.make_embedding.emb_luts.0.weight"],
                           p["decoder.embeddings.make_embedding.emb_luts.0.weight"])


@pytest.mark.parametrize("name", JOEY)
def test_joey_model_folder_loads_weights_only_without_an_allowlist(name):
    m, o = MODELS[name], MODELS[name]["options"]
    ckpt = torch.load(FIXTURES / m["checkpoint"], map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model_state", "optimizer_state", "scaler_state", "scheduler_state", "train_iter_state",
                         "stats_state"}
    cfg = yaml.safe_load((FIXTURES / m["config"]).read_text())["model"]
    enc, dec = cfg["encoder"], cfg["decoder"]
    assert (dec["rnn_type"], dec["attention"], dec["init_hidden"], dec["input_feeding"], dec["num_layers"]) == (
        o["cell"], o["attn"], o["init"], o["feed"], o["layers"])
    src_vocab, trg_vocab = (lines(m["vocab"][side]) for side in ("src", "trg"))
    for vocab in (src_vocab, trg_vocab):
        assert vocab[:4] == ["<unk>", "<pad>", "<s>", "</s>"] and len(set(vocab)) == len(vocab)
    v_s, v_t = len(src_vocab), len(trg_vocab)
    e_s, e_t = enc["embeddings"]["embedding_dim"], dec["embeddings"]["embedding_dim"]
    h, hid, g = enc["hidden_size"], dec["hidden_size"], 4 if o["cell"] == "lstm" else 3
    expected = {"src_embed.lut.weight": (v_s, e_s), "trg_embed.lut.weight": (v_t, e_t),
                "decoder.attention.key_layer.weight": (hid, 2 * h),
                "decoder.att_vector_layer.weight": (hid, hid + 2 * h), "decoder.att_vector_layer.bias": (hid,),
                "decoder.output_layer.weight": (v_t, hid)}
    for k in range(o["layers"]):
        for suffix in ("", "_reverse"):
            expected[f"encoder.rnn.weight_ih_l{k}{suffix}"] = (g * h, e_s if k == 0 else 2 * h)
            expected[f"encoder.rnn.weight_hh_l{k}{suffix}"] = (g * h, h)
            expected[f"encoder.rnn.bias_ih_l{k}{suffix}"] = expected[f"encoder.rnn.bias_hh_l{k}{suffix}"] = (g * h,)
        expected[f"decoder.rnn.weight_ih_l{k}"] = (g * hid, (e_t + hid if o["feed"] else e_t) if k == 0 else hid)
        expected[f"decoder.rnn.weight_hh_l{k}"] = (g * hid, hid)
        expected[f"decoder.rnn.bias_ih_l{k}"] = expected[f"decoder.rnn.bias_hh_l{k}"] = (g * hid,)
    if o["attn"] == "bahdanau":
        expected["decoder.attention.query_layer.weight"] = (hid, hid)
        expected["decoder.attention.energy_layer.weight"] = (1, hid)
    if o["init"] == "bridge":
        expected["decoder.bridge_layer.weight"], expected["decoder.bridge_layer.bias"] = (hid, 2 * h), (hid,)
    assert {k: tuple(t.shape) for k, t in ckpt["model_state"].items()} == expected
    assert ckpt["stats_state"]["steps"] == m["train_steps"]


@pytest.mark.parametrize("name", ONMT)
def test_onmt_runs_used_the_tool_defaults_but_batch_size_and_max_length(name):
    for run, beam, max_len in (("greedy", 1, 250), ("beam5", 5, 250), ("beam5_max10", 5, 10)):
        s = settings(name, run)
        assert (s["beam_size"], s["max_length"], s["n_best"], s["batch_size"]) == (beam, max_len, 1, 1)
        assert (s["length_penalty"], s["alpha"], s["coverage_penalty"], s["max_length_ratio"], s["ratio"]) == (
            "avg", 1.0, "none", 1.25, 0.0)
        assert (s["min_length"], s["random_sampling_topk"], s["random_sampling_topp"]) == (0, 0, 0.0)
        assert not (s["ban_unk_token"] or s["replace_unk"] or s["block_ngram_repeat"] or s["transforms"])


@pytest.mark.parametrize("name", JOEY)
def test_joey_runs_used_the_tool_defaults_but_batch_size_and_max_length(name):
    for run, beam, max_len in (("greedy", 1, -1), ("beam5", 5, -1), ("beam5_max10", 5, 10)):
        s = settings(name, run)
        assert (s["beam_size"], s["max_output_length"], s["n_best"], s["batch_size"]) == (beam, max_len, 1, 1)
        assert (s["beam_alpha"], s["min_output_length"], s["generate_unk"], s["return_prob"]) == (-1, 1, True, "hyp")
        assert s["repetition_penalty"] == -1 and s["no_repeat_ngram_size"] == -1


@pytest.mark.parametrize("name,run", [r for r in RUNS if r[0] in ONMT])
def test_onmt_outputs_have_one_line_per_source_within_the_length_cap(name, run, sources):
    out, s = MODELS[name]["outputs"][run], settings(name, run)
    hyps, scores = lines(out["tokens"]), [float(x) for x in lines(out["scores"])]
    assert len(hyps) == len(scores) == N
    for src, hyp, score in zip(sources, hyps, scores):
        cap = int(min(s["max_length"], len(src.split(" ")) * s["max_length_ratio"] + 5))
        assert len(hyp.split()) <= cap and hyp == hyp.strip()
        assert math.isfinite(score) and score <= 0
    if run == "beam5_max10":  # the explicit cap binds: it exercises the max-length rule
        assert sum(len(h.split()) == 10 for h in hyps) >= N // 4


@pytest.mark.parametrize("name,run", [r for r in RUNS if r[0] in JOEY])
def test_joey_outputs_have_one_line_per_source_within_the_length_cap(name, run, sources):
    out, s = MODELS[name]["outputs"][run], settings(name, run)
    hyps, tokens, scores = (lines(out[k]) for k in ("hyp", "tokens", "scores"))
    assert len(hyps) == len(tokens) == len(scores) == N
    at_cap = 0
    for src, hyp, toks, score in zip(sources, hyps, map(ast.literal_eval, tokens), map(ast.literal_eval, scores)):
        cap = s["max_output_length"] if s["max_output_length"] > 0 else int((len(src.split(" ")) + 1) * 1.5)
        assert toks.count("</s>") <= 1 and (toks[-1] == "</s>" or len(toks) == cap) and len(toks) <= cap
        at_cap += toks[-1] != "</s>"
        words = [t for t in toks if t not in ("<s>", "<pad>", "</s>")]
        assert hyp == (" ".join(words) or "<unk>")
        assert len(score) == (len(toks) if s["beam_size"] == 1 else 1)
        assert all(math.isfinite(x) and x <= 0 for x in score)
    if run == "beam5_max10":
        assert at_cap >= N // 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_beam_search_changes_some_translations(name):
    """Greedy and beam-5 outputs differ often enough to exercise each tool's beam search."""
    out = MODELS[name]["outputs"]
    key = "tokens" if MODELS[name]["tool"] == "opennmt-py" else "hyp"
    greedy, beam = lines(out["greedy"][key]), lines(out["beam5"][key])
    assert sum(g != b for g, b in zip(greedy, beam)) >= N // 10
