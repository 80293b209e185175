"""Export: every exported graph, loaded back from its file (TorchScript or onnxruntime),
against the model's own eager outputs on batch sizes and lengths it was not traced on;
greedy decoding from the exported graphs against ``Seq2Seq.translate`` and
``LanguageModel.generate``; the exported Viterbi against ``CRF.decode``; served
classification against ``SequenceClassifier.predict``; the serving file run without
seqlearn; ``seqlearn export`` on checkpoints of each model; refusals."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from seqlearn import registry, search, serving
from seqlearn.batching import Padded, pad
from seqlearn.cells import Cell
from seqlearn.classifier import SequenceClassifier
from seqlearn.cli import main as cli_main
from seqlearn.crf import CRF
from seqlearn.errors import ConfigError, ExportError
from seqlearn.export import (
    EXAMPLE_LENGTHS, export, export_classifier, export_crf, export_language_model, export_seq2seq, export_tagger,
    exporter, inference_mode, search_graphs, trace_graph, write_export,
)
from seqlearn.export import dispatch
from seqlearn.language_model import LanguageModel
from seqlearn.protocols import SearchModel
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
                want_lp, want, want_attn = model.search_step(prev, want)
                got_lp, got, got_attn = served.search_step(prev, got)
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
    assert isinstance(served, SearchModel)
    got = search.beam_search(served.search_step, served.start(src.ids, src.lengths), bos_index=model.tgt_vocab.bos_index,
                             eos_index=model.tgt_vocab.eos_index, max_length=12, beam_size=3, n_best=2)
    assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps] for hyps in want]
    assert [h.score for hyps in got for h in hyps] == pytest.approx([h.score for hyps in want for h in hyps], abs=1e-5)
    # seqlearn 0.1.0 served the search step as `step`
    old = search.beam_search(served.step, served.start(src.ids, src.lengths), bos_index=model.tgt_vocab.bos_index,
                             eos_index=model.tgt_vocab.eos_index, max_length=12, beam_size=3, n_best=2)
    assert [[h.tokens for h in hyps] for hyps in old] == [[h.tokens for h in hyps] for hyps in got]


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
                    char_features=char_features, embedding_dim=8, char_dim=4, char_out_dim=6, hidden_size=8, dropout=0.0,
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


class _CustomCRF(CRF):
    """A subclass defined outside seqlearn: exported by the CRF's exporter."""


class _Unexportable(torch.nn.Module):
    pass


def test_dispatch_follows_the_class_not_its_module_name(tmp_path):
    export(_CustomCRF(3), tmp_path / "subclass")
    assert json.loads((tmp_path / "subclass" / "manifest.json").read_text())["model"] == "crf"
    # a class that only claims to be seqlearn's CRF by its name and module is refused, named
    impostor = type("CRF", (torch.nn.Module,), {"__module__": "seqlearn.crf", "__qualname__": "CRF"})
    with pytest.raises(ExportError, match=r"no exporter for CRF \(seqlearn\.crf\.CRF\);"):
        export(impostor(), tmp_path / "impostor")
    with pytest.raises(ExportError, match=r"no exporter for _Unexportable \(.*test_export\._Unexportable\); "
                                          r"exportable: .*CRF.*Seq2Seq.*; register one with "
                                          r"seqlearn\.export\.exporter\(_Unexportable\)"):
        export(_Unexportable(), tmp_path / "unknown")
    assert not (tmp_path / "unknown").exists()


@pytest.mark.parametrize("by", ["class", "path"])
def test_a_registered_exporter_exports_its_class_and_subclasses(by, tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "EXPORTERS", dict(dispatch.EXPORTERS))
    calls = []

    @exporter(_Unexportable if by == "class" else f"{__name__}:_Unexportable")
    def export_unexportable(model, directory, format="torchscript", *, check=True):
        calls.append((type(model), Path(directory), format, check))
        return Path(directory)

    sub = type("Sub", (_Unexportable,), {})
    assert export(sub(), tmp_path, "onnx", check=False) == tmp_path
    assert calls == [(sub, tmp_path, "onnx", False)]
    with pytest.raises(ConfigError, match="a model class or a 'module:Class' path"):
        exporter("no_colon")


def test_vocabularies_are_saved_as_seqlearn_json(exported_translators):
    model, folders = exported_translators
    folder = Path(folders["torchscript"])
    assert Vocab.load(folder / "src_vocab.json") == model.src_vocab
    assert Vocab.load(folder / "tgt_vocab.json") == model.tgt_vocab



# -- language model --------------------------------------------------------------------------------

LM_WORDS = [f"w{i}" for i in range(14)]
LM_MODELS = {
    "lstm-2x-tied": dict(cell="lstm", num_layers=2),
    "gru-projected": dict(cell="gru", hidden_size=10),  # tied through a projection to the embedding width
    "plugin-cell-untied": dict(cell="test-export-elman", num_layers=1, tie_embeddings=False),  # no loop over time
}


def tiny_lm(seed: int = 0, sharpness: float = 1.0, **options) -> LanguageModel:
    """A random language model (lowercasing its input) with its embeddings (tied: and output
    layer) scaled up by ``sharpness``, for clear-cut choices."""
    torch.manual_seed(seed)
    options = dict(embedding_dim=6, hidden_size=8, dropout=0.0, input_dropout=0.0) | options
    lm = LanguageModel(Vocab(LM_WORDS), lowercase=True, **options)
    with torch.no_grad():
        lm.embedding.weight.mul_(sharpness)
    return lm.eval()


def generating_lm() -> LanguageModel:
    """A seed and sharpness whose greedy continuations of PROMPTS have lengths 4 to 24."""
    return tiny_lm(seed=3, sharpness=5.0, cell="lstm", num_layers=2)


@pytest.mark.parametrize("config", LM_MODELS)
def test_language_model_step_graph_reproduces_streaming_and_start(config, backend, tmp_path):
    lm = tiny_lm(**LM_MODELS[config])
    export_language_model(lm, tmp_path, backend)
    served = serving.load(tmp_path)
    assert isinstance(served, serving.ExportedLanguageModel) and set(served.graphs) == {"step"}
    gen = torch.Generator().manual_seed(3)
    streams = torch.randint(0, len(lm.vocab), (4, 10), generator=gen)  # 4 streams of 10 tokens, specials too
    want, got = lm.init_state(4), served.init_state(4)
    for tokens in streams.t():  # the exported state feeds the next exported step
        want_lp, want = lm.step(tokens, want)
        got_lp, got, attention = served.search_step(tokens, got)
        assert attention is None and list(got) == list(want)
        assert_same(got_lp, want_lp)
        for name in want:
            assert_same(got[name], want[name])
    # the prompt read step by step from zeros = LanguageModel.start over packed sequences
    lengths = torch.tensor([10, 0, 3, 7])
    with torch.no_grad():
        want = lm.start(Padded(streams, lengths))
    got = served.start(streams, lengths)
    for name in want:
        assert_same(got[name], want[name])


PROMPTS = ["", "w5", "W7 w3 W9", ["w4", "unknown", "w11"], "w12 w12 w12 w12 w12 w12", "w6 w8"]


def test_served_greedy_generation_equals_generate(backend, tmp_path):
    lm = generating_lm()
    want = [h[0].tokens for h in lm.generate(PROMPTS, beam_size=1, max_length=40)]
    assert len({len(t) for t in want}) > 3
    export(lm, tmp_path, backend)
    served = serving.load(tmp_path)
    assert served.generate(PROMPTS, max_length=40) == want
    assert served.generate("W7 w3", max_length=3) == [h[0].tokens for h in lm.generate("w7 w3", max_length=3)]


def test_beam_search_runs_over_the_served_language_model_step(tmp_path):
    lm = generating_lm()
    served = serving.load(export(lm, tmp_path))
    prompts = [["w5"], ["w7", "w3", "w9"]]
    eos = lm.vocab.eos_index
    rows = pad([[eos, *lm.vocab.encode(p)] for p in prompts], lm.vocab.pad_index)
    ids, lengths = rows.ids, rows.lengths
    first = ids.gather(1, (lengths - 1)[:, None]).squeeze(1)
    assert isinstance(served, SearchModel)
    got = search.beam_search(served.search_step, served.start(ids, lengths - 1), bos_index=first, eos_index=eos,
                             max_length=12, beam_size=3, n_best=2)
    want = lm.generate(prompts, beam_size=3, n_best=2, max_length=12)
    assert [[[lm.vocab.itos[i] for i in h.tokens] for h in hyps] for hyps in got] == [[h.tokens for h in hyps]
                                                                                      for hyps in want]
    assert [h.score for hyps in got for h in hyps] == pytest.approx([h.score for hyps in want for h in hyps], abs=1e-5)


# -- sequence classifier ---------------------------------------------------------------------------

CLF_WORDS = [f"w{i}" for i in range(16)]
CLASSIFIERS = {
    "bigru-last": dict(pooling="last"),  # the pooling gathers: no advanced indexing for ONNX
    "lstm-forward-2x-last-multilabel": dict(cell="lstm", bidirectional=False, num_layers=2, multi_label=True),
    "bigru-mean": dict(pooling="mean"),
    "rnn-max": dict(cell="rnn", pooling="max"),
    "bilstm-attention": dict(cell="lstm", pooling="attention"),
}
TEXTS = ["w1 w2 W3", "w5", "w7 w8 w9 w10 w11 w12 w13 w14 w15 w2 w4", ["w4"] * 9, "w3 unknown w6", "w9 w0", "w13 w2"]


def tiny_classifier(seed: int = 0, **options) -> SequenceClassifier:
    torch.manual_seed(seed)
    options = dict(embedding_dim=6, hidden_size=8, dropout=0.0) | options
    model = SequenceClassifier(Vocab(CLF_WORDS), ["neg", "neu", "pos"], lowercase=True, **options)
    with torch.no_grad():  # clear-cut decisions, and probabilities on both sides of the threshold
        model.output.weight.mul_(6)
    return model.eval()


@pytest.mark.parametrize("config", CLASSIFIERS)
def test_classifier_graph_reproduces_probabilities_and_predict(config, backend, tmp_path):
    model = tiny_classifier(**CLASSIFIERS[config])
    export_classifier(model, tmp_path, backend)
    served = serving.load(tmp_path)
    assert isinstance(served, serving.ExportedClassifier)
    for k, lengths in enumerate(NEW_LENGTHS):
        batch = random_batch(model.vocab, lengths, seed=k)
        with torch.no_grad():
            want = model.probabilities(model(batch))
        got = served.graphs["probabilities"](word_ids=batch.ids, lengths=batch.lengths)["probabilities"]
        assert_same(got, want)
    want = model.predict(TEXTS)
    got = served.classify(TEXTS, batch_size=3)
    assert len({tuple(c.labels) for c in want}) > 1  # not one answer for every text
    assert [(g.tokens, g.labels) for g in got] == [(w.tokens, w.labels) for w in want]
    for g, w in zip(got, want):
        assert list(g.probabilities) == list(w.probabilities)
        assert list(g.probabilities.values()) == pytest.approx(list(w.probabilities.values()), abs=1e-5)


def test_jordan_and_plugin_cell_classifiers_are_refused_by_name(tmp_path):
    jordan = tiny_classifier(jordan=True, bidirectional=False, cell="gru")
    with pytest.raises(ExportError, match=r"SequenceClassifier Jordan encoder \(cell 'gru' \(GRUCell\)\): .*loop"):
        export(jordan, tmp_path)
    assert not (tmp_path / "manifest.json").exists()
    # the refusal is not overcautious: traced anyway, the graph fails the check on other lengths
    with inference_mode(jordan):
        examples = [(b.ids, b.lengths) for b in (random_batch(jordan.vocab, lens, seed=0) for lens in EXAMPLE_LENGTHS)]
        graph = trace_graph("probabilities", lambda ids, n: jordan.probabilities(jordan(Padded(ids, n))), jordan,
                            ["word_ids", "lengths"], ["probabilities"], examples, "traced Jordan classifier")
        with pytest.raises(ExportError, match="traced Jordan classifier: the exported torchscript graph fails"):
            write_export(tmp_path, "torchscript", [graph], {}, {"model": "classifier"})
    plugin = tiny_classifier(cell="test-export-elman")
    with pytest.raises(ExportError, match=r"SequenceClassifier encoder: cell 'test-export-elman' \(_ElmanCell\)"):
        export(plugin, tmp_path)


# -- seqlearn export ---------------------------------------------------------------------------------


def save_checkpoint(model: pl.LightningModule, path: Path) -> Path:
    """A Lightning checkpoint of ``model`` as ``Trainer.save_checkpoint`` writes it after fitting."""
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


def test_cli_exports_a_language_model_checkpoint(tmp_path):
    """``seqlearn export`` in a subprocess, as a user runs it."""
    lm = generating_lm()
    ckpt = save_checkpoint(lm, tmp_path / "lm.ckpt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "seqlearn.cli", "export", "--ckpt", str(ckpt), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "language_model exported as torchscript: step" in done.stdout
    served = serving.load(tmp_path / "out")
    assert served.generate(PROMPTS) == [h[0].tokens for h in lm.generate(PROMPTS, beam_size=1)]


@pytest.fixture
def checkpoints(tmp_path) -> dict[str, tuple[pl.LightningModule, Path]]:
    models = {
        "seq2seq": tiny_seq2seq(eos_bias=0.5), "tagger": tiny_tagger("cnn", "crf"),
        "classifier": tiny_classifier(multi_label=True), "language_model": generating_lm(),
    }
    return {kind: (model, save_checkpoint(model, tmp_path / f"{kind}.ckpt")) for kind, model in models.items()}


def test_cli_export_loads_each_kind_of_checkpoint(checkpoints, backend, tmp_path, capsys, monkeypatch):
    for kind, (model, ckpt) in checkpoints.items():
        out = tmp_path / f"{kind}-out"
        assert cli_main(["export", "--ckpt", str(ckpt), "--out", str(out), "--format", backend]) == 0
        assert f"{kind} exported as {backend}" in capsys.readouterr().out
        served = serving.load(out)
        assert served.manifest["model"] == kind and served.manifest["backend"] == backend
        if kind == "seq2seq":
            assert served.translate(SENTENCES) == [h[0].tokens for h in model.translate(SENTENCES, beam_size=1)]
        elif kind == "tagger":
            assert served.tag(TAG_SENTENCES) == [r.tags for r in model.predict(TAG_SENTENCES)]
        elif kind == "classifier":
            want = [c.labels for c in model.predict(TEXTS)]
            assert [c.labels for c in served.classify(TEXTS)] == want
            lines = [t if isinstance(t, str) else " ".join(t) for t in TEXTS]
            assert serve_lines(out, lines, monkeypatch, capsys) == ["\t".join(labels) for labels in want]
        else:
            want = [h[0].tokens for h in model.generate(PROMPTS)]
            assert served.generate(PROMPTS) == want
            lines = [p if isinstance(p, str) else " ".join(p) for p in PROMPTS]
            assert serve_lines(out, lines, monkeypatch, capsys) == [" ".join(tokens) for tokens in want]


def serve_lines(folder: Path, lines: list[str], monkeypatch, capsys) -> list[str]:
    """What ``python serving.py FOLDER`` prints for ``lines`` on stdin."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    assert serving.main([str(folder)]) == 0
    return capsys.readouterr().out.split("\n")[:-1]


def test_cli_export_of_a_missing_or_unsupported_checkpoint_fails_cleanly(tmp_path, capsys):
    assert cli_main(["export", "--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "a")]) == 2
    assert "seqlearn export: " in (err := capsys.readouterr().err) and "missing.ckpt: no such checkpoint file" in err
    # a Lightning checkpoint, but of a model that has no exporter
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"in_features": 3}, "pytorch-lightning_version": pl.__version__},
               other)
    assert cli_main(["export", "--ckpt", str(other), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "other.ckpt: not a checkpoint of an exportable model (" in err and "LanguageModel" in err
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    assert cli_main(["export", "--ckpt", str(text), "--out", str(tmp_path / "c")]) == 2
    assert "notes.ckpt: not a PyTorch checkpoint" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abc")
