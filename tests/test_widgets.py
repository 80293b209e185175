"""Python side of the notebook widgets: what is sent, selection state, escaping, save(),
and gate activations against torch's own cells."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import comm
import numpy as np
import pytest
import torch
from torch import nn

from seqlearn import Seq2Seq, Vocab
from seqlearn.batching import pad
from seqlearn.cells import Cell, GRUCell, LSTMCell
from seqlearn.encoder import RNNEncoder
from seqlearn.errors import ConfigError, DataError
from seqlearn.search import Hypothesis
from seqlearn.widgets import (
    Alignment,
    AttentionView,
    HiddenStateView,
    alignment_from_hypothesis,
    cell_activations,
    encoder_activations,
    hypothesis_mimebundle,
    show_attention,
    show_hidden_states,
    show_model_attention,
)
from seqlearn.widgets.base import ESM_PATH
from seqlearn.widgets.colors import COLORMAPS, colors_for
from seqlearn.widgets.static import MAX_LABEL

SCRIPT = "<script>__xss=1</script>"
IMG = '"><img src=x onerror=__xss=2>'
SVG_NS = "{http://www.w3.org/2000/svg}"


def _attention(rows: int, cols: int, pad: int = 0, seed: int = 0) -> torch.Tensor:
    """Row-stochastic weights over ``cols`` real positions plus ``pad`` zero columns."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.softmax(3 * torch.randn(rows, cols, generator=g), -1)
    return torch.cat([weights, torch.zeros(rows, pad)], 1)


@pytest.fixture
def batch():
    """Two sentences as translate() returns them: two hypotheses, then one; padded columns."""
    src = [[SCRIPT, IMG, "on", "may"], ["in", "&amp;"]]
    hyps = [
        [Hypothesis(["am", "<b>"], -1.5, _attention(3, 5, seed=1)), Hypothesis(["im"], -2.5, _attention(2, 5, seed=2))],
        [Hypothesis(["im", "jahr", "x"], -0.7, _attention(4, 3, pad=2, seed=3))],
    ]
    return src, hyps


@pytest.fixture
def sent(monkeypatch):
    """Messages the widgets publish on their comms: (msg_type, data, buffers)."""
    messages = []
    monkeypatch.setattr(comm.DummyComm, "publish_msg",
                        lambda self, msg_type, data=None, metadata=None, buffers=None, **k:
                        messages.append((msg_type, data, buffers)))
    return messages


def _floats_in(value) -> list:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats_in(v)]
    return []


# --- what travels to the browser --------------------------------------------------------

def test_attention_weights_travel_as_one_float32_buffer(batch, sent):
    src, hyps = batch
    view = show_attention(hyps, src)
    (msg_type, data, buffers), = [m for m in sent if m[0] == "comm_open" and m[1]["state"].get("_kind") == "attention"]
    assert data["buffer_paths"] == [["weights"]]
    assert "weights" not in data["state"]
    # the only floats in the JSON part are the three scores
    assert sorted(_floats_in(data["state"])) == [-2.5, -1.5, -0.7]
    flat = np.frombuffer(bytes(buffers[0]), dtype="<f4")
    items = data["state"]["items"]
    assert flat.size == sum(it["rows"] * it["cols"] for it in items) == 3 * 5 + 2 * 5 + 4 * 3
    for item, hyp in zip(items, [hyps[0][0], hyps[0][1], hyps[1][0]]):
        block = flat[item["offset"]: item["offset"] + item["rows"] * item["cols"]].reshape(item["rows"], item["cols"])
        np.testing.assert_array_equal(block, hyp.attention[:, : item["cols"]].numpy().astype(np.float32))
    assert [(it["sentence"], it["rank"]) for it in items] == [(0, 0), (0, 1), (1, 0)]
    assert items[0]["source"] == [SCRIPT, IMG, "on", "may", "</s>"]
    assert items[2]["source"] == ["in", "&amp;", "</s>"]  # the two padding columns are dropped
    assert items[2]["target"] == ["im", "jahr", "x", "</s>"]


def test_hidden_values_travel_as_float32_buffer(sent):
    torch.manual_seed(0)
    series = {"hidden": torch.randn(3, 4), "update gate": torch.rand(3, 4)}
    HiddenStateView(["a", "b", "c"], series)
    (_, data, buffers), = [m for m in sent if m[0] == "comm_open" and m[1]["state"].get("_kind") == "hidden"]
    assert data["buffer_paths"] == [["values"]]
    values = np.frombuffer(bytes(buffers[0]), dtype="<f4").reshape(2, 3, 4)
    np.testing.assert_array_equal(values[1], series["update gate"].numpy())
    assert data["state"]["hidden_size"] == 4
    assert [s["name"] for s in data["state"]["series"]] == ["hidden", "update gate"]
    assert data["state"]["series"][1] | {} == {"name": "update gate", "cmap": "sequential", "vmin": 0.0,
                                                "vmax": 1.0, "rank": "value"}


def test_front_end_is_bundled_and_offline():
    source = re.sub(r"^\s*//.*$", "", ESM_PATH.read_text(encoding="utf-8"), flags=re.M)  # code, not comments
    assert "export default" in source
    assert not re.search(r"^\s*import\s", source, re.M)  # one module, nothing to fetch
    assert not re.search(r"https?://", source)
    assert "innerHTML" not in source and "insertAdjacentHTML" not in source and "outerHTML" not in source


# --- selection state --------------------------------------------------------------------

def test_selection_round_trips_from_the_front_end(batch, sent):
    src, hyps = batch
    view = show_attention(hyps, src)
    view.set_state({"sentence": 0, "hypothesis": 1, "step": 1})  # what a front-end update does
    assert view.current.target == ("im", "</s>")
    assert view.heatmap().rows_shown == 1
    view.set_state({"sentence": 1})  # sentence 1 has one hypothesis: back to its best
    assert (view.sentence, view.hypothesis) == (1, 0)
    assert view.current.source == ("in", "&amp;", "</s>")
    updates = [m[1]["state"] for m in sent if m[0] == "comm_msg" and m[1].get("method") == "update"]
    assert {"hypothesis": 0} in updates  # the reset is sent back to the browser


def test_invalid_selection_is_refused(batch):
    src, hyps = batch
    view = show_attention(hyps, src)
    with pytest.raises(ConfigError, match="no sentence 2"):
        view.sentence = 2
    view.sentence = 1
    with pytest.raises(ConfigError, match="has no hypothesis 1"):
        view.hypothesis = 1
    with pytest.raises(ConfigError, match="step"):
        view.step = -1
    with pytest.raises(ConfigError, match="ranks"):
        AttentionView([Alignment(("a",), ("b",), np.ones((1, 1)), rank=1)])


def test_show_attention_accepts_one_hypothesis_or_one_nbest_list(batch):
    src, hyps = batch
    single = show_attention(hyps[1][0], src[1])
    assert [it["target"] for it in single.items] == [["im", "jahr", "x", "</s>"]]
    nbest = show_attention(hyps[0], " ".join(src[0][2:]))  # a string is split by the tokenizer
    assert [(it["sentence"], it["rank"]) for it in nbest.items] == [(0, 0), (0, 1)]
    assert nbest.items[0]["source"] == ["on", "may", "</s>"]  # columns past the source are padding
    unlabeled = show_attention(hyps[0])
    assert unlabeled.items[0]["source"] == ["1", "2", "3", "4", "5"]
    with pytest.raises(ConfigError, match="2 inputs' hypotheses but 1 sources"):
        show_attention(hyps, [src[0]])


def test_alignment_shapes_are_checked():
    hyp = Hypothesis(["a", "b"], -1.0, _attention(3, 4))
    assert alignment_from_hypothesis(hyp, ["x", "y", "z"]).target == ("a", "b", "</s>")
    cut = Hypothesis(["a", "b", "c"], -1.0, _attention(3, 4))  # cut at max_length: no </s> row
    assert alignment_from_hypothesis(cut, ["x", "y", "z"]).target == ("a", "b", "c")
    with pytest.raises(DataError, match="2 tokens but 4 attention rows"):
        alignment_from_hypothesis(Hypothesis(["a", "b"], -1.0, _attention(4, 4)), ["x", "y", "z"])
    with pytest.raises(DataError, match="5 source tokens but the attention has only 4 columns"):
        alignment_from_hypothesis(hyp, ["v", "w", "x", "y", "z"])
    with pytest.raises(ConfigError, match="return_attention=True"):
        alignment_from_hypothesis(Hypothesis(["a"], -1.0, None), ["x"])


# --- static fallback, escaping, save() --------------------------------------------------

def _svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    assert not [e for e in root.iter() if e.tag.split("}")[-1] in ("script", "img", "foreignObject", "image")]
    return [e.text for e in root.iter(SVG_NS + "text")]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_svg_escapes_tokens_and_draws_the_weights(batch):
    src, hyps = batch
    view = show_attention(hyps, src)
    svg = view.to_svg()
    texts = _svg_texts(svg)  # parses: the tokens did not break the XML
    assert SCRIPT in texts and IMG in texts and "<b>" in texts
    weights = view.current.weights
    i, j = np.unravel_index(weights.argmax(), weights.shape)
    colour = colors_for(weights[i, j], "sequential", 0.0, 1.0)
    assert f'fill="{colour}"' in svg


def test_mimebundle_has_the_widget_and_an_escaped_html_fallback(batch):
    src, hyps = batch
    data, _ = show_attention(hyps, src)._repr_mimebundle_()
    assert {"text/plain", "application/vnd.jupyter.widget-view+json", "text/html"} <= set(data)
    parser = _Tags()
    parser.feed(data["text/html"])
    assert "script" not in parser.tags and "img" not in parser.tags
    assert SCRIPT in parser.text and IMG in parser.text


def test_step_hides_later_rows_in_the_static_rendering():
    weights = np.eye(3)
    view = AttentionView([Alignment(("a", "b", "c"), ("x", "y", "z"), weights)], step=1)
    svg = view.to_svg()
    dark = colors_for(1.0, "sequential", 0.0, 1.0)
    assert svg.count(f'fill="{dark}"') == 1 + 1  # the revealed diagonal cell and the legend's top band
    view.step = None
    assert view.to_svg().count(f'fill="{dark}"') == 3 + 1


def test_long_tokens_are_cut_in_static_renderings():
    token = "x" * (MAX_LABEL + 10)
    view = AttentionView([Alignment((token,), ("y",), np.ones((1, 1)))])
    assert "x" * (MAX_LABEL - 1) + "…" in _svg_texts(view.to_svg())


def test_save_svg_png_html(batch, tmp_path):
    src, hyps = batch
    view = show_attention(hyps, src)
    svg = view.save(tmp_path / "alignment.svg")
    assert SCRIPT in _svg_texts(svg.read_text(encoding="utf-8"))

    png = view.save(tmp_path / "alignment.png")
    from matplotlib.image import imread

    image = imread(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 100 and image.shape[1] > 100

    page = view.save(tmp_path / "alignment.html").read_text(encoding="utf-8")
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]  # only the SVG namespace
    assert page.count("</script>") == 2  # our two script elements; no token closes one
    payload = re.search(r'<script type="application/json" id="seqlearn-state">(.*?)</script>', page, re.S).group(1)
    state = json.loads(payload)
    assert state["esm"] == ESM_PATH.read_text(encoding="utf-8")
    assert state["state"]["items"][0]["source"][0] == SCRIPT
    np.testing.assert_array_equal(
        np.frombuffer(__import__("base64").b64decode(state["buffers"]["weights"]), dtype="<f4"),
        np.frombuffer(view.weights, dtype="<f4"),
    )
    with pytest.raises(ConfigError, match="use .svg, .png or .html"):
        view.save(tmp_path / "alignment.pdf")


def test_png_takes_dollar_signs_literally(tmp_path):
    # "$x$" would be mathtext (and "$" alone a parse error) if passed through unescaped
    view = AttentionView([Alignment(("$x$", "$"), ("a$b",), np.array([[0.5, 0.5]]))])
    assert view.save(tmp_path / "d.png").stat().st_size > 0


def test_colour_scale_endpoints_are_the_stops():
    for name, stops in COLORMAPS.items():
        assert list(colors_for(np.array([-1.0, 0.0, 1.0, 2.0]), name, 0.0, 1.0)) == [stops[0], stops[0], stops[-1],
                                                                                       stops[-1]]
    assert colors_for(0.5, "diverging", 0.0, 1.0) == COLORMAPS["diverging"][2]


# --- gate activations against torch's own cells ------------------------------------------

BIG = 50.0  # drives a sigmoid to exactly 0 or 1 (and tanh to 1) in float32


def _run(cell, xs, state):
    out = []
    for x in xs:
        state = cell(x[None], state)
        out.append(state)
    return out


@torch.no_grad()
def test_lstm_gates_match_torch_lstmcell():
    torch.manual_seed(0)
    cell = nn.LSTMCell(5, 4)
    xs = torch.randn(7, 5)
    acts = cell_activations(cell, xs)
    states = _run(cell, xs, None)
    h = torch.cat([s[0] for s in states])
    c = torch.cat([s[1] for s in states])
    torch.testing.assert_close(acts["hidden"], h)
    torch.testing.assert_close(acts["cell"], c)
    prev = [(torch.zeros(1, 4), torch.zeros(1, 4))] + states[:-1]

    def probe(gate_bias: dict[int, float], zero_weights: tuple[int, ...]) -> nn.LSTMCell:
        """A copy of the cell with some gate blocks forced, exposing the others."""
        p = nn.LSTMCell(5, 4)
        p.load_state_dict(cell.state_dict())
        for block in zero_weights:
            p.weight_ih[block * 4:(block + 1) * 4] = 0
            p.weight_hh[block * 4:(block + 1) * 4] = 0
        for block, value in gate_bias.items():
            p.bias_ih[block * 4:(block + 1) * 4] = value
            p.bias_hh[block * 4:(block + 1) * 4] = 0
        return p

    # i, f, g, o are blocks 0..3.  f = 0 and g = 1: c = i.  i = 0: c = f * c_prev.
    only_i = probe({1: -BIG, 2: BIG}, (1, 2))
    only_f = probe({0: -BIG}, (0,))
    for t, (x, (h0, c0)) in enumerate(zip(xs, prev)):
        torch.testing.assert_close(acts["input gate"][t], only_i(x[None], (h0, c0))[1][0])
        torch.testing.assert_close(acts["forget gate"][t] * c0[0], only_f(x[None], (h0, c0))[1][0])
    torch.testing.assert_close(acts["output gate"], h / torch.tanh(c))
    torch.testing.assert_close(acts["forget gate"] * torch.cat([s[1] for s in prev]) +
                               acts["input gate"] * acts["candidate"], c)


@torch.no_grad()
def test_gru_gates_match_torch_grucell():
    torch.manual_seed(1)
    cell = nn.GRUCell(5, 4)
    xs = torch.randn(6, 5)
    acts = cell_activations(cell, xs)
    states = _run(cell, xs, None)
    torch.testing.assert_close(acts["hidden"], torch.cat(states))
    prev = [torch.zeros(1, 4)] + states[:-1]
    # r, z, n are blocks 0..2.  n forced to 1: h = (1 - z) + z h_prev, so z = (1 - h) / (1 - h_prev).
    force_n = nn.GRUCell(5, 4)
    force_n.load_state_dict(cell.state_dict())
    force_n.weight_ih[8:] = 0
    force_n.weight_hh[8:] = 0
    force_n.bias_ih[8:] = BIG
    force_n.bias_hh[8:] = 0
    # z forced to 0 and the input part of n removed: h = tanh(r * (W_hn h_prev + b_hn)).
    force_z = nn.GRUCell(5, 4)
    force_z.load_state_dict(cell.state_dict())
    force_z.weight_ih[4:] = 0
    force_z.weight_hh[4:8] = 0
    force_z.bias_ih[4:8] = -BIG
    force_z.bias_hh[4:8] = 0
    force_z.bias_ih[8:] = 0
    for t, (x, h0) in enumerate(zip(xs, prev)):
        z = (1 - force_n(x[None], h0)[0]) / (1 - h0[0])
        torch.testing.assert_close(acts["update gate"][t], z, atol=1e-5, rtol=1e-4)
        pre = h0[0] @ cell.weight_hh[8:].t() + cell.bias_hh[8:]
        r = torch.atanh(force_z(x[None], h0)[0]) / pre
        torch.testing.assert_close(acts["reset gate"][t], r, atol=1e-4, rtol=1e-3)


@torch.no_grad()
def test_builtin_cells_give_the_same_activations_as_torch_cells():
    torch.manual_seed(2)
    xs = torch.randn(5, 3)
    for ours, theirs in ((LSTMCell(3, 4), nn.LSTMCell(3, 4)), (GRUCell(3, 4), nn.GRUCell(3, 4))):
        theirs.load_state_dict({k: v for k, v in ours.state_dict().items()})
        a, b = cell_activations(ours, xs), cell_activations(theirs, xs)
        assert list(a) == list(b)
        for name in a:
            torch.testing.assert_close(a[name], b[name])


@torch.no_grad()
def test_encoder_activations_match_the_fused_encoder():
    torch.manual_seed(3)
    for cell in ("lstm", "gru", "rnn"):
        encoder = RNNEncoder(6, 5, cell=cell, num_layers=2, bidirectional=True).eval()
        xs = torch.randn(7, 6)
        out, _ = encoder(xs[None], torch.tensor([7]))
        acts = encoder_activations(encoder, xs)
        torch.testing.assert_close(acts["layer 2 → hidden"], out[0, :, :5])
        torch.testing.assert_close(acts["layer 2 ← hidden"], out[0, :, 5:])
        assert all(v.shape == (7, 5) for v in acts.values())
    assert [n for n in acts if n.startswith("layer 1 →")] == ["layer 1 → hidden"]


class _DecayCell(Cell):
    """A plugin cell with no fused layout: h = 0.5 h + tanh(W x)."""

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.w = nn.Linear(input_size, hidden_size)

    def forward(self, x, h):
        h = 0.5 * h + torch.tanh(self.w(x))
        return h, h


@torch.no_grad()
def test_plugin_cells_contribute_their_outputs():
    torch.manual_seed(4)
    cell = _DecayCell(3, 2)
    xs = torch.randn(4, 3)
    acts = cell_activations(cell, xs)
    h, expected = torch.zeros(1, 2), []
    for x in xs:
        h, _ = cell(x[None], h)
        expected.append(h)
    assert list(acts) == ["hidden"]
    torch.testing.assert_close(acts["hidden"], torch.cat(expected))


# --- hidden-state view -------------------------------------------------------------------

def test_most_active_units_against_brute_force():
    torch.manual_seed(5)
    hidden = torch.randn(4, 9)
    gate = torch.rand(4, 9)
    view = HiddenStateView(["a", "b", "c", "d"], {"hidden": hidden, "input gate": gate}, top_k=3)
    for t in range(4):
        by_magnitude = sorted(range(9), key=lambda u: (-abs(float(hidden[t, u])), u))[:3]
        assert [u for u, _ in view.most_active(t)] == by_magnitude
    view.series_index = 1
    view.token = 2
    assert [u for u, _ in view.most_active()] == sorted(range(9), key=lambda u: (-float(gate[2, u]), u))[:3]
    assert view.most_active(k=1)[0][1] == pytest.approx(float(gate[2].max()))
    with pytest.raises(ConfigError, match="unit must be in"):
        view.unit = 9
    with pytest.raises(DataError, match="shape \\(4, 9\\); expected \\(2, hidden_size\\)"):
        HiddenStateView(["a", "b"], {"hidden": hidden})


def test_hidden_static_rendering_keeps_the_selected_unit(tmp_path):
    torch.manual_seed(6)
    values = torch.randn(3, 100) * 0.01
    values[:, 7] = 0.9  # the most active unit
    view = HiddenStateView([SCRIPT, "b", "c"], {"hidden": values}, unit=42)
    h = view.heatmap()
    assert len(h.row_labels) == 48 and "unit 7" in h.row_labels and "unit 42" in h.row_labels
    assert SCRIPT in _svg_texts(view.save(tmp_path / "h.svg").read_text(encoding="utf-8"))


# --- a real (tiny, untrained) model ----------------------------------------------------

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(7)
    pairs = [("on the 3 of may".split(), "am dritten mai".split()), ("in 1 9 9 8".split(), "im jahr".split())]
    src = Vocab.build([s for s, _ in pairs])
    tgt = Vocab.build([t for _, t in pairs])
    return Seq2Seq(src, tgt, cell="gru", embedding_dim=8, hidden_size=12, dropout=0.0, val_bleu=False).eval()


def test_show_model_attention_labels_what_translate_returns(model):
    view = show_model_attention(model, ["on the 3 of may", ["in", SCRIPT]], beam_size=3, n_best=2, max_length=5)
    expected = model.translate(["on the 3 of may", ["in", SCRIPT]], beam_size=3, n_best=2, max_length=5,
                               return_attention=True)
    assert len(view.items) == sum(len(hs) for hs in expected)
    for item, alignment in zip(view.items, view.alignments):
        hyp = expected[item["sentence"]][item["rank"]]
        assert item["target"][: len(hyp.tokens)] == hyp.tokens
        np.testing.assert_allclose(alignment.weights, hyp.attention.numpy(), atol=1e-6)
        np.testing.assert_allclose(alignment.weights.sum(1), 1.0, atol=1e-5)
    assert view.items[0]["source"] == ["on", "the", "3", "of", "may", "</s>"]
    assert [it["source"] for it in view.items if it["sentence"] == 1][0] == ["in", SCRIPT, "</s>"]


def test_show_hidden_states_of_a_model(model):
    view = show_hidden_states(model, "on the 3 of may")
    assert view.tokens == ["on", "the", "3", "of", "may", "</s>"]
    names = [s["name"] for s in view.series]
    assert names == [f"{d} {n}" for d in "→←" for n in ("hidden", "reset gate", "update gate", "candidate")]
    src = pad([model.src_vocab.encode("on the 3 of may".split(), add_eos=True)], model.src_vocab.pad_index)
    with torch.no_grad():
        memory, _, _ = model.encode(src)
    size = view.hidden_size
    np.testing.assert_allclose(view._arrays[0], memory[0, :, :size].numpy(), atol=1e-6)
    np.testing.assert_allclose(view._arrays[4], memory[0, :, size:].numpy(), atol=1e-6)


def test_hypothesis_display_hook():
    hyp = Hypothesis(["a"], -0.5, _attention(2, 3))
    data, _ = hypothesis_mimebundle(hyp)
    assert "application/vnd.jupyter.widget-view+json" in data and "<svg" in data["text/html"]
    assert data["text/plain"] == repr(hyp)
    assert hypothesis_mimebundle(Hypothesis(["a"], -0.5, None)) == {"text/plain": repr(Hypothesis(["a"], -0.5, None))}


def test_a_hypothesis_displays_as_its_alignment_labelled_with_its_source():
    from seqlearn.search import Hypothesis

    weights = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]])
    hyp = Hypothesis(["ein", "und"], -1.5, weights, source=["one", "<b>&"])
    data, _ = hyp._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"] == repr(hyp)
    svg = data["text/html"]
    assert ">one<" in svg and "&lt;b&gt;&amp;" in svg and "<b>&" not in svg
    # without attention there is nothing to draw: plain text only
    assert Hypothesis(["ein"], -0.5)._repr_mimebundle_() == {"text/plain": repr(Hypothesis(["ein"], -0.5))}
