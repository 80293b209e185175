"""Seq2Seq.translate against independent oracles: brute-force enumeration scored by the
model's own teacher-forced log-probabilities (``model.score``), greedy search, the same
sentence alone, and a fresh process loading the checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from itertools import product

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from seqlearn import ConfigError, Seq2Seq, Vocab, search
from seqlearn.batching import TranslationBatch, pad

SOURCES = [["a", "b"], ["c", "a", "d", "b"], ["d"]]


def tiny_model(tgt_words, seed=0, sharpness=4.0, **options) -> Seq2Seq:
    """A random model whose output layer is scaled up, so that its choices are clear-cut
    and ``</s>`` comes early for some inputs."""
    torch.manual_seed(seed)
    src = Vocab.build([["a", "b", "c", "d"]])
    tgt = Vocab.build([tgt_words])
    options = dict(embedding_dim=6, hidden_size=8, dropout=0.0) | options
    model = Seq2Seq(src, tgt, **options)
    with torch.no_grad():
        model.generator.weight.mul_(sharpness)
    return model.eval()


def log_prob(model, source, tokens, ended):
    """The model's own log-probability of ``tokens`` (then ``</s>`` when ``ended``)."""
    full = model.score([source], [tokens])[0].item()  # includes </s>
    if ended:
        return full
    tgt = model.tgt_vocab
    tgt_in = torch.tensor([[tgt.bos_index] + tgt.encode(tokens)])
    src = pad([model.src_vocab.encode(source, add_eos=True)], model.src_vocab.pad_index)
    with torch.no_grad():
        last = torch.log_softmax(model(src, tgt_in)[0, -1].float(), -1)
    return full - last[tgt.eos_index].item()


def divisor(name, length, alpha):
    return {None: 1.0, "gnmt": ((5 + length) / 6) ** alpha, "average": length ** alpha}[name]


def final_score(model, source, tokens, ended, penalty=None, alpha=1.0):
    return log_prob(model, source, tokens, ended) / divisor(penalty, len(tokens) + ended, alpha)


def ended(hyp):
    """A hypothesis ended with </s> when it has one attention row more than tokens."""
    return len(hyp.attention) == len(hyp.tokens) + 1


# ---------------------------------------------------------------- exhaustive search

TGT_WORDS, MAXLEN = ["x"], 4  # <pad> <unk> <s> </s> x: V = 5


@pytest.mark.parametrize("penalty,alpha", [(None, 1.0), ("gnmt", 1.0)])
def test_wide_beam_equals_brute_force_over_model_scores(penalty, alpha):
    model = tiny_model(TGT_WORDS, seed=1, sharpness=2.0)
    vocab = len(model.tgt_vocab)
    width = (vocab - 1) ** (MAXLEN - 1) * vocab  # every extension of every prefix fits in the beam
    result = model.translate(SOURCES, beam_size=width, n_best=5, max_length=MAXLEN, length_penalty=penalty,
                             alpha=alpha, return_attention=True)
    # <pad> cannot be scored (model.score takes it for padding); the model must never emit it
    words = [w for w in model.tgt_vocab.itos if w not in ("</s>", "<pad>")]
    space = [(list(s), True) for n in range(MAXLEN) for s in product(words, repeat=n)]
    space += [(list(s), False) for s in product(words, repeat=MAXLEN)]
    for source, hyps in zip(SOURCES, result):
        oracle = sorted(((final_score(model, source, toks, end, penalty, alpha), toks) for toks, end in space),
                        key=lambda x: -x[0])[:5]
        assert [h.tokens for h in hyps] == [toks for _, toks in oracle]
        assert [h.score for h in hyps] == pytest.approx([s for s, _ in oracle], abs=1e-5)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)


@pytest.mark.parametrize("decoder,attention", [("bahdanau", "bahdanau"), ("luong", "luong-general")])
def test_beam_one_equals_greedy(decoder, attention):
    model = tiny_model(["x", "y", "z", "w"], seed=3, decoder=decoder, attention=attention)
    greedy = model.translate(SOURCES, max_length=12, return_attention=True)
    # an "average" length penalty with alpha 0 divides by 1: plain beam search, not the greedy shortcut
    beam = model.translate(SOURCES, beam_size=1, max_length=12, length_penalty="average", alpha=0.0,
                           return_attention=True)
    for g, b in zip(greedy, beam):
        assert g[0].tokens == b[0].tokens
        assert g[0].score == pytest.approx(b[0].score, abs=1e-5)
        torch.testing.assert_close(g[0].attention, b[0].attention)
    assert any(ended(g[0]) for g in greedy)


@pytest.mark.parametrize("penalty,alpha", [(None, 1.0), ("gnmt", 0.6), ("average", 1.0)])
def test_scores_are_model_scores(penalty, alpha):
    model = tiny_model(["x", "y", "z", "w", "v", "u", "t"], seed=5, sharpness=2.0)
    result = model.translate(SOURCES, beam_size=4, n_best=3, max_length=10, length_penalty=penalty, alpha=alpha,
                             return_attention=True)
    for source, hyps in zip(SOURCES, result):
        assert len(hyps) == 3
        for h in hyps:
            assert "</s>" not in h.tokens
            expected = final_score(model, source, h.tokens, ended(h), penalty, alpha)
            assert h.score == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- batching and attention


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batch_invariance_and_attention(beam_size):
    model = tiny_model(["x", "y", "z", "w"], seed=7, sharpness=2.0)
    short = ["b", "a"]
    longer = [["c", "a", "d", "b", "a", "c"], ["d", "d", "a", "b", "c"]]
    options = dict(beam_size=beam_size, n_best=beam_size, max_length=9, return_attention=True)
    alone = model.translate([short], **options)[0]
    batched = model.translate([longer[0], short, longer[1]], **options)[1]
    assert [h.tokens for h in alone] == [h.tokens for h in batched]
    assert [h.score for h in alone] == pytest.approx([h.score for h in batched], abs=1e-5)
    for a, b in zip(alone, batched):
        assert a.attention.shape == b.attention.shape == (len(a.tokens) + ended(a), len(short) + 1)
        torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.attention.sum(1), torch.ones(len(b.attention)), atol=1e-5, rtol=0)

    # the untrimmed search output: padding columns get exactly zero weight
    src = pad([model.src_vocab.encode(s, add_eos=True) for s in [short, *longer]], model.src_vocab.pad_index)
    with torch.no_grad():
        hyps = search.beam_search(model.search_step, model.start(src), bos_index=model.tgt_vocab.bos_index,
                                  eos_index=model.tgt_vocab.eos_index, beam_size=beam_size, max_length=9)
    assert hyps[0][0].attention.shape[1] == src.ids.size(1)
    assert torch.all(hyps[0][0].attention[:, len(short) + 1:] == 0)


def test_heuristic_stopping_takes_fewer_steps_and_still_scores_exactly(monkeypatch):
    model = tiny_model(["x", "y", "z", "w", "v", "u", "t"], seed=5, sharpness=2.0)
    step, calls = model.search_step, {"rows": 0}

    def counting(prev, state):
        calls["rows"] += prev.numel()
        return step(prev, state)

    monkeypatch.setattr(model, "search_step", counting)
    options = dict(beam_size=4, n_best=2, max_length=12, length_penalty="gnmt", alpha=1.0)
    rows = {}
    results = {}
    for stopping in ("exact", "heuristic"):
        calls["rows"] = 0
        results[stopping] = model.translate(SOURCES, stopping=stopping, return_attention=True, **options)
        rows[stopping] = calls["rows"]
    assert rows["heuristic"] < rows["exact"]
    for source, hyps in zip(SOURCES, results["heuristic"]):
        for h in hyps:
            assert h.score == pytest.approx(final_score(model, source, h.tokens, ended(h), "gnmt", 1.0), abs=1e-5)
    # without a length penalty the bound is the same, and so is every result
    plain = {s: model.translate(SOURCES, beam_size=4, n_best=2, max_length=12, stopping=s) for s in ("exact", "heuristic")}
    assert [[(h.tokens, h.score) for h in hs] for hs in plain["exact"]] == \
        [[(h.tokens, h.score) for h in hs] for hs in plain["heuristic"]]
    with pytest.raises(ConfigError, match="stopping"):
        model.translate(SOURCES, beam_size=2, stopping="never")


@pytest.mark.parametrize("beam_size", [1, 3])
def test_bfloat16_search_keeps_float32_scores(beam_size):
    model = tiny_model(["x", "y", "z", "w", "v"], seed=3, sharpness=8.0)
    options = dict(beam_size=beam_size, n_best=beam_size, max_length=8, length_penalty="gnmt" if beam_size > 1 else None)
    full = model.translate(SOURCES, **options)
    half = model.translate(SOURCES, precision="bf16", **options)
    for f_hyps, h_hyps in zip(full, half):
        # clear-cut choices survive bfloat16 rounding; the scores are float32 sums of bf16-rounded logits
        assert [h.tokens for h in h_hyps] == [h.tokens for h in f_hyps]
        for f, h in zip(f_hyps, h_hyps):
            assert isinstance(h.score, float) and h.score != f.score
            assert h.score == pytest.approx(f.score, rel=0.05, abs=0.05)
    with pytest.raises(ConfigError, match="precision must be one of"):
        model.translate(SOURCES, precision="64")


def test_bfloat16_search_casts_each_weight_once_per_batch():
    """Autocast caches its bf16 copy of a weight only outside inference mode; inside it,
    every step would cast the output layer again."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = tiny_model(["x", "y", "z", "w", "v"], seed=3)
    shape = tuple(model.generator.weight.shape)

    class CountCasts(TorchDispatchMode):
        casts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten._to_copy and tuple(args[0].shape) == shape:
                CountCasts.casts += 1
            return func(*args, **(kwargs or {}))

    with CountCasts():
        hyps = model.translate([SOURCES[1]], beam_size=2, max_length=8, precision="bf16")
    assert len(hyps[0][0].tokens) >= 2  # several steps ran ...
    assert CountCasts.casts == 1  # ... on one cast of the output layer


# ---------------------------------------------------------------- checkpoints

FRESH_PROCESS = """
import json, sys
from seqlearn import Seq2Seq
model = Seq2Seq.load_from_checkpoint(sys.argv[1], map_location="cpu")
out = [[(h.tokens, h.score) for h in hyps] for hyps in model.translate(json.loads(sys.argv[2]), beam_size=3, n_best=2, max_length=8)]
print(json.dumps(out))
"""


def test_checkpoint_round_trip_in_a_fresh_process(tmp_path):
    model = tiny_model(["x", "y", "z", "w"], seed=9, sharpness=1.0).train()
    pairs = [(["a", "b"], ["x", "y"]), (["c", "d", "a"], ["z", "w", "x"]), (["b"], ["y"])]
    batch = TranslationBatch(
        pad([model.src_vocab.encode(s, add_eos=True) for s, _ in pairs], model.src_vocab.pad_index),
        pad([model.tgt_vocab.encode(t, add_bos=True, add_eos=True) for _, t in pairs], model.tgt_vocab.pad_index),
        torch.arange(len(pairs)),
    )
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader([batch], batch_size=None))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    sources = [s for s, _ in pairs]
    here = [[(h.tokens, h.score) for h in hyps] for hyps in model.translate(sources, beam_size=3, n_best=2, max_length=8)]
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(path), json.dumps(sources)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    there = json.loads(run.stdout)
    assert [[tokens for tokens, _ in hyps] for hyps in there] == [[tokens for tokens, _ in hyps] for hyps in here]
    assert [s for hyps in there for _, s in hyps] == pytest.approx([s for hyps in here for _, s in hyps], abs=1e-6)
