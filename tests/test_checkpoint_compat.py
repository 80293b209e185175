"""Checkpoints written by seqlearn 0.1.0 load and give the outputs 0.1.0 gave.

The fixtures were made by ``tests/fixtures/v0_1_0/make_fixtures.py`` with 0.1.0 itself; the
outputs recorded then are the oracle, so a renamed hyperparameter, a moved module or a
changed buffer that breaks an old checkpoint fails here.  Where CUDA is available each test
also runs there (cuDNN, TF32 as PyTorch sets it by default: floats within 1e-3).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqlearn import LanguageModel, Seq2Seq, SequenceClassifier, Tagger

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"
RECORDED = json.loads((FIXTURES / "outputs.json").read_text())
SOURCES = ["on march 3 , 1 9 9 8", "2 1", "1 9 4 5", "on june 1 7", "3 0 4", "on may 2 , 2 0 0 1"]
WORDS = [["w0", "w3", "w20", "w7"], ["w29", "w0", "w0", "w14", "w15"], ["w2"], ["w40", "w1"]]
#: floats within this of the recorded ones, per device
ATOL = {"cpu": 1e-5, "cuda": 1e-3}
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def hyps(results: list) -> list:
    return [[{"tokens": h.tokens, "score": h.score} for h in nbest] for nbest in results]


def assert_same(got, want, where: str = "", atol: float = ATOL["cpu"]) -> None:
    """Exact for strings and structure, within ``atol`` for floats."""
    if isinstance(want, float):
        assert got == pytest.approx(want, abs=atol), where
    elif isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}", atol)
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]", atol)
    else:
        assert got == want, where


def load(cls, name: str, device: str):
    return cls.load_from_checkpoint(FIXTURES / f"{name}.ckpt", map_location=device).eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["seq2seq_bahdanau_gru", "seq2seq_luong_lstm"])
def test_seq2seq_checkpoint_from_0_1_0(name, device):
    model, want, atol = load(Seq2Seq, name, device), RECORDED[name], ATOL[device]
    assert_same(hyps(model.translate(SOURCES)), want["greedy"], "greedy", atol)
    assert_same(hyps(model.translate(SOURCES, beam_size=3, n_best=2)), want["beam"], "beam", atol)
    assert_same([float(s) for s in model.score(SOURCES, want["score_targets"])], want["score"], "score", atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["tagger_crf_chars", "tagger_softmax"])
def test_tagger_checkpoint_from_0_1_0(name, device):
    got = [{"tags": t.tags, "confidence": t.confidence} for t in load(Tagger, name, device).predict(WORDS)]
    assert_same(got, RECORDED[name]["predict"], "predict", ATOL[device])


@pytest.mark.parametrize("device", DEVICES)
def test_language_model_checkpoint_from_0_1_0(device):
    model, atol = load(LanguageModel, "language_model_tied", device), ATOL[device]
    want = RECORDED["language_model_tied"]
    prompts = [" ".join(w) for w in WORDS]
    assert_same(hyps(model.generate(prompts, max_length=8)), want["greedy"], "greedy", atol)
    assert_same(hyps(model.generate(prompts, beam_size=3, n_best=2, max_length=8)), want["beam"], "beam", atol)
    with torch.no_grad():
        logits, _ = model(model.token_ids(WORDS[0]).unsqueeze(0).to(device))
    assert_same(logits.tolist(), want["logits"], "logits", atol)


@pytest.mark.parametrize("device", DEVICES)
def test_classifier_checkpoint_from_0_1_0(device):
    got = [{"labels": c.labels, "probabilities": c.probabilities}
           for c in load(SequenceClassifier, "classifier_attention", device).predict(WORDS)]
    assert_same(got, RECORDED["classifier_attention"]["predict"], "predict", ATOL[device])
