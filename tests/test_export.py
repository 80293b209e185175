"""Export: every exported graph, loaded back from its file (TorchScript or onnxruntime),
against the model's own eager outputs on batch sizes and lengths it was not traced on;
greedy decoding from the exported graphs against ``Seq2Seq.translate``; the exported
Viterbi against ``CRF.decode``; the serving file run without seqlearn; refusals."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlearn import registry, search, serving
from seqlearn.batching import Padded, pad
from seqlearn.cells import Cell
from seqlearn.crf import CRF
from seqlearn.errors import ExportError
from seqlearn.export import (
    EXAMPLE_LENGTHS, export, export_crf, export_seq2seq, export_tagger, inference_mode, search_graphs, trace_graph,
    write_export,
)
from seqlearn.seq2seq import Seq2Seq
from seqlearn.tagger import Tagger
from seqlearn.vocab import Vocab

torch.set_num_threads(1)

SRC_WORDS = [f"s{i}" for i in range(12)]
TGT_WORDS = [f"t{i}" for i in range(9)]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(params=["torchscript", "onnx"])
def backend(request) -> str:
    if request.param == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    return request.param


def tiny_seq2seq(seed: int = 0, sharpness: float = 3.0, eos_bias: float = 0.0, **options) -> Seq2Seq:
    """A random model with a scaled-up output layer (clear-cut choices) and ``eos_bias``
    added to the logit of ``</s>``."""
    torch.manual_seed(seed)
    options = dict(embedding_dim=6, hidden_size=8, dropout=0.0) | options
    model = Seq2Seq(Vocab(SRC_WORDS), Vocab(TGT_WORDS), **options)
    with torch.no_grad():
        model.generator.weight.mul_(sharpness)
        model.generator.bias[model.tgt_vocab.eos_index] += eos_bias
    return model.eval()


def random_batch(vocab: Vocab, lengths: list[int], seed: int) -> Padded:
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randint(4, len(vocab), (n - 1,), generator=gen).tolist() + [vocab.eos_index] for n in lengths]
    return pad(rows, vocab.pad_index)


# lengths never used in tracing: larger batches, longer sources, a single sentence
NEW_LENGTHS = ([9, 2, 6, 1, 4], [12])
assert not {tuple(x) for x in NEW_LENGTHS} & {tuple(x) for x in EXAMPLE_LENGTHS}

DECODERS = {
    "bahdanau-gru-2x2": dict(cell="gru", decoder="bahdanau", attention="bahdanau", encoder_layers=2, decoder_layers=2),
    "luong-lstm-feed": dict(cell="lstm", decoder="luong", attention="luong-dot"),
    "luong-gru-nofeed": dict(cell="gru", decoder="luong", attention="luong-concat",
                             decoder_options={"input_feeding": False}),
    "plain-rnn-tied": dict(cell="rnn", decoder="plain", bidirectional=False, decoder_layers=2, tie_embeddings=True),
}


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("config", DECODERS)
def test_seq2seq_graphs_reproduce_start_and_steps_on_new_shapes(config, backend, tmp_path):
    model = tiny_seq2seq(**DECODERS[config])
    model.train()  # the export runs in eval mode and leaves the model as it found it
    export_seq2seq(model, tmp_path, backend)
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    served = serving.load(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["backend"] == backend and manifest["model"] == "seq2seq"
    assert all((tmp_path / g["file"]).is_file() for g in manifest["graphs"].values())
    assert max(manifest["checked"]["max_abs_difference"].values()) <= 1e-5
    for k, lengths in enumerate(NEW_LENGTHS):
        src = random_batch(model.src_vocab, lengths, seed=k)
        with torch.no_grad():
            want = model.start(src)
            got = served.start(src.ids, src.lengths)
            assert list(got) == list(want)
            for name in want:
                assert_same(got[name], want[name])
            gen = torch.Generator().manual_seed(k)
            for _ in range(3):  # the exported state feeds the next exported step
                prev = torch.randint(0, len(model.tgt_vocab), (len(lengths),), generator=gen)
                want_lp, want, want_attn = model.step(prev, want)
                got_lp, got, got_attn = served.step(prev, got)
                assert_same(got_lp, want_lp)
                for name in want:
                    assert_same(got[name], want[name])
                assert (got_attn is None) == (want_attn is None)
                if want_attn is not None:
                    assert_same(got_attn, want_attn)


SENTENCES = [SRC_WORDS[4:6], SRC_WORDS[3:11], ["s7"], [], ["s5", "unknown", "s9", "s4"], SRC_WORDS[2:7]]


@pytest.fixture(scope="module")
def exported_translators(tmp_path_factory):
    """One tiny Seq2Seq exported to each format (ONNX only when onnxruntime is there)."""
    # a seed and </s> bias whose greedy outputs have lengths 0 to 46 on SENTENCES
    model = tiny_seq2seq(seed=7, eos_bias=0.5, cell="lstm", decoder="bahdanau", encoder_layers=2)
    out = {}
    for backend in ("torchscript", "onnx"):
        if backend == "onnx" and any(_missing(m) for m in ("onnx", "onnxruntime")):
            continue
        out[backend] = export(model, tmp_path_factory.mktemp(backend), backend)
    return model, out


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def test_greedy_decoding_from_exported_graphs_equals_translate(exported_translators, backend):
    model, folders = exported_translators
    want = [h[0].tokens for h in model.translate(SENTENCES, beam_size=1)]
    assert len({len(t) for t in want}) > 2 and want[3] == []  # outputs of several lengths, none for no input
    served = serving.load(folders[backend])
    assert served.translate(SENTENCES) == want
    assert served.translate([" ".join(s) for s in SENTENCES]) == want  # whitespace-tokenized strings
    assert served.translate(SENTENCES, max_length=2) == [h[0].tokens for h in model.translate(SENTENCES, max_length=2)]


def test_beam_search_runs_over_the_exported_step(exported_translators):
    model, folders = exported_translators
    served = serving.load(folders["torchscript"])
    src = model._source_batch(SENTENCES[:3] + SENTENCES[4:])
    want = model._search(src, search.beam_search, max_length=12, beam_size=3, n_best=2)
    got = search.beam_search(served.step, served.start(src.ids, src.lengths), bos_index=model.tgt_vocab.bos_index,
                             eos_index=model.tgt_vocab.eos_index, max_length=12, beam_size=3, n_best=2)
    assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps] for hyps in want]
    assert [h.score for hyps in got for h in hyps] == pytest.approx([h.score for hyps in want for h in hyps], abs=1e-5)


def test_serving_file_runs_alone_on_the_exported_folder(exported_translators, tmp_path):
    """serving.py copied next to the artifacts, run as a script: no seqlearn, no Lightning."""
    model, folders = exported_translators
    shutil.copy(serving.__file__, tmp_path / "serving.py")
    shutil.copytree(folders["torchscript"], tmp_path / "model")
    probe = ("import runpy, sys; sys.argv = ['serving.py', 'model']\n"
             "try:\n    runpy.run_path('serving.py', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "roots = ('seqlearn', 'pytorch_lightning', 'lightning')\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
             "print('LOADED', loaded)\n")
    lines = "\n".join(" ".join(s) for s in SENTENCES) + "\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", probe], input=lines, capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    *outputs, loaded = result.stdout.splitlines()
    assert loaded == "LOADED []"
    assert [o.split() for o in outputs] == [h[0].tokens for h in model.translate(SENTENCES)]


class _ZeroStartModel(torch.nn.Module):
    """The search protocol as a language model has it: the state starts at zeros and the
    context is read through ``step``."""

    def __init__(self, vocab_size: int = 7, hidden: int = 5):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab_size, 3)
        self.cell = torch.nn.LSTMCell(3, hidden)
        self.output = torch.nn.Linear(hidden, vocab_size)

    def start(self, context: Padded) -> dict[str, torch.Tensor]:
        zeros = torch.zeros(context.ids.size(0), self.cell.hidden_size)
        return {"h": zeros, "c": zeros.clone()}

    def step(self, prev: torch.Tensor, state: dict[str, torch.Tensor]):
        h, c = self.cell(self.embedding(prev), (state["h"], state["c"]))
        return torch.log_softmax(self.output(h), -1), {"h": h, "c": c}, None


def test_step_only_export_for_a_model_that_starts_from_zeros(backend, tmp_path):
    torch.manual_seed(6)
    model = _ZeroStartModel()
    with inference_mode(model):
        sources = [(torch.zeros(len(lens), max(lens), dtype=torch.long), torch.tensor(lens)) for lens in EXAMPLE_LENGTHS]
        graphs, state = search_graphs(model, model.start, model.step, sources, 7, "toy model", encoder=False)
        write_export(tmp_path, backend, graphs, {}, {"model": "toy", "state": state})
    assert [g.name for g in graphs] == ["step"] and state["zeros"] == {"h": [5], "c": [5]}
    manifest = serving.read_manifest(tmp_path)
    step = serving.Graph(tmp_path / manifest["graphs"]["step"]["file"], backend, manifest["graphs"]["step"]["inputs"],
                         manifest["graphs"]["step"]["outputs"])
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, 0, 1], [6, 5, 4, 3, 2, 1, 0, 6]])  # two streams of 8 tokens
    want = model.start(Padded(tokens, torch.tensor([8, 8])))
    got = {name: torch.zeros(2, *size) for name, size in state["zeros"].items()}
    for prev in tokens.t():
        with torch.no_grad():
            want_lp, want, _ = model.step(prev, want)
        out = step(prev_tokens=prev, **got)
        got = {name: out[f"next.{name}"] for name in state["carried"]}
        assert_same(out["log_probs"], want_lp)


# -- tagger and CRF ------------------------------------------------------------------------------


def tiny_tagger(char_features: str | None, head: str, seed: int = 0) -> Tagger:
    torch.manual_seed(seed)
    words = Vocab([f"w{i}" for i in range(20)])
    chars = Vocab("w0123456789") if char_features else None
    tagger = Tagger(words, Vocab(TAGS, specials=("<pad>",)), chars, scheme="BIO", head=head,
                    char_features=char_features, word_dim=8, char_dim=4, char_out_dim=6, hidden_size=8, dropout=0.0,
                    lowercase=True)
    with torch.no_grad():  # large scores, so that the CRF's constraints matter
        tagger.emission.weight.mul_(10)
    return tagger.eval()


# words longer than any the export traced on, unknown words, upper case (the tagger lowercases)
TAG_SENTENCES = [["w1", "w22", "W3"], ["w5"], ["w7", "w8", "w9", "w10", "w11", "w123456789012", "w2"], ["w4"] * 9, []]


@pytest.mark.parametrize("char_features,head", [("cnn", "crf"), ("bilstm", "crf"), (None, "softmax")])
def test_tagger_graphs_reproduce_emissions_and_predictions(char_features, head, backend, tmp_path):
    tagger = tiny_tagger(char_features, head)
    export_tagger(tagger, tmp_path, backend)
    served = serving.load(tmp_path)
    assert set(served.graphs) == ({"emissions", "viterbi"} if head == "crf" else {"emissions"})
    filled = [s for s in TAG_SENTENCES if s]
    words, chars = tagger.encode(filled)
    tensors = served.inputs(filled)
    assert torch.equal(tensors["word_ids"], words.ids)
    if chars is not None:
        assert torch.equal(tensors["char_ids"], chars.ids)
    with torch.no_grad():
        want = tagger(words, chars)
    assert_same(served.graphs["emissions"](**tensors)["emissions"], want)
    predicted = [r.tags for r in tagger.predict(TAG_SENTENCES)]
    assert len({tuple(t) for t in predicted}) > 2
    assert served.tag(TAG_SENTENCES) == predicted


@pytest.mark.parametrize("scheme", [None, "BIO"])
def test_exported_viterbi_equals_crf_decode(scheme, backend, tmp_path):
    torch.manual_seed(4)
    crf = CRF(len(TAGS), scheme=scheme, tag_names=TAGS if scheme else None)
    export_crf(crf, tmp_path, backend)
    served = serving.load(tmp_path)
    gen = torch.Generator().manual_seed(5)
    for lengths in ([6, 1, 13, 2], [1], [8]):
        emissions = torch.randn(len(lengths), max(lengths), len(TAGS), generator=gen) * 4
        mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
        assert served.decode(emissions, mask) == crf.decode(emissions, mask)
        result = served.graphs["viterbi"](emissions=emissions, mask=mask)
        want = crf.viterbi(emissions, mask)
        assert torch.equal(result["tags"], want.tags[:, 0])
        assert_same(result["scores"], want.scores[:, 0])


# -- what does not export ------------------------------------------------------------------------


@registry.cells.register("test-export-elman")
class _ElmanCell(Cell):
    """``h = tanh(W [x; h])`` registered like a plugin cell: no fused kernel."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.linear = torch.nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(self.linear(torch.cat([x, h], -1)))
        return h, h


def test_encoder_of_a_plugin_cell_is_refused_by_name(tmp_path):
    model = tiny_seq2seq(cell="test-export-elman")
    with pytest.raises(ExportError, match=r"Seq2Seq encoder: cell 'test-export-elman' \(_ElmanCell\)"):
        export_seq2seq(model, tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def test_check_rejects_graphs_that_fix_a_shape_or_a_branch(backend, tmp_path):
    """A graph that only works for the traced shape, or follows the branch the traced input
    took, is caught when loaded back and run on the other examples."""
    examples = [(torch.arange(6.0).view(2, 3), torch.tensor([3, 1])),
                (-torch.arange(20.0).view(4, 5), torch.tensor([5, 2, 1, 4]))]
    trimmed = trace_graph("trim", lambda x, n: x[:, : int(n.max()) - 1], torch.nn.Module(), ["x", "n"], ["y"],
                          examples, "trimming function")
    with pytest.raises(ExportError, match=r"trimming function: .*output 'y'.*shape|trimming function: .*fails"):
        write_export(tmp_path, backend, [trimmed], {}, {"model": "test"})
    branching = trace_graph("branch", lambda x, n: x * 2 if float(x.sum()) > 0 else x * 3, torch.nn.Module(),
                            ["x", "n"], ["y"], examples, "branching function")
    with pytest.raises(ExportError, match="branching function: .*output 'y'.*difference"):
        write_export(tmp_path, backend, [branching], {}, {"model": "test"})


def test_export_dispatches_on_the_model_class_and_refuses_others(tmp_path):
    with pytest.raises(ExportError, match="no exporter for Linear"):
        export(torch.nn.Linear(2, 2), tmp_path)
    crf = CRF(3)
    export(crf, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["model"] == "crf"
    assert isinstance(serving.load(tmp_path), serving.ExportedCRF)


def test_vocabularies_are_saved_as_seqlearn_json(exported_translators):
    model, folders = exported_translators
    folder = Path(folders["torchscript"])
    assert Vocab.load(folder / "src_vocab.json") == model.src_vocab
    assert Vocab.load(folder / "tgt_vocab.json") == model.tgt_vocab
