"""SequenceClassifier: TSV data and its errors, training on tasks that need word order,
metrics against a hand computation, the Jordan recurrence against a hand loop, streaming
against the batch forward, checkpoints."""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from seqlearn import registry
from seqlearn.classification_data import ClassificationDataModule, LabeledText, collate_classification, read_labeled_tsv
from seqlearn.checkpointing import AtomicCheckpointIO
from seqlearn.classifier import Classification, SequenceClassifier
from seqlearn.errors import ConfigError, DataError, UnknownComponentError
from seqlearn.jordan import JordanEncoder
from seqlearn.vocab import Vocab

torch.set_num_threads(1)

SMALL = dict(embedding_dim=16, hidden_size=24, dropout=0.0, lr=0.02)
MULTI_LABELS = ("after", "start_a", "two_b")


def _labels(tokens: list[str], multi: bool) -> list[str]:
    """'after': some x comes after some y (order matters, not just the bag of words);
    'start_a': the first token is a; 'two_b': b occurs at least twice."""
    after = any(t == "x" and "y" in tokens[:i] for i, t in enumerate(tokens))
    if not multi:
        return ["yes" if after else "no"]
    truth = (after, tokens[0] == "a", tokens.count("b") >= 2)
    return [label for label, holds in zip(MULTI_LABELS, truth) if holds]


def _task(n: int, seed: int, multi: bool) -> list[LabeledText]:
    rng = random.Random(seed)
    out = []
    for line in range(1, n + 1):
        tokens = [rng.choice("abcdxy") for _ in range(rng.randint(3, 10))]
        out.append(LabeledText(" ".join(tokens), tokens, _labels(tokens, multi), line))
    return out


def _vocab() -> Vocab:
    return Vocab(list("abcdxy"))


def _trainer(root: Path, epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, default_root_dir=root, accelerator="cpu")  # fmt: skip


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """A forward GRU with last pooling (streamable) trained on 'x after y'."""
    torch.manual_seed(0)
    dm = ClassificationDataModule(_task(300, 1, False), _task(200, 2, False), max_sentences=32)
    model = SequenceClassifier.from_datamodule(dm, bidirectional=False, pooling="last", **SMALL)
    trainer = _trainer(tmp_path_factory.mktemp("single"), epochs=6)
    trainer.fit(model, dm)
    return model, trainer, dm


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A BiGRU with max pooling trained on three labels."""
    torch.manual_seed(0)
    dm = ClassificationDataModule(_task(400, 1, True), _task(200, 2, True), multi_label=True, max_sentences=32)
    model = SequenceClassifier.from_datamodule(dm, bidirectional=True, pooling="max", **SMALL)
    trainer = _trainer(tmp_path_factory.mktemp("multi"), epochs=10)
    trainer.fit(model, dm)
    return model, trainer, dm


# -- data ---------------------------------------------------------------------------------


def test_tsv_reader_single_and_multi_label(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("pos\tA lovely film\n\nneg,ish\tdull\tand long\nsports, politics ,sports\tvote  on  it\n\tno labels here today\n")
    single = read_labeled_tsv(path, lowercase=True, limit=3)
    assert [(ex.labels, ex.tokens, ex.line) for ex in single] == [
        (["pos"], ["a", "lovely", "film"], 1),
        (["neg,ish"], ["dull", "and", "long"], 3),  # single-label: commas belong to the label
        (["sports, politics ,sports"], ["vote", "on", "it"], 4),
    ]
    multi = read_labeled_tsv(path, multi_label=True)
    assert [ex.labels for ex in multi] == [["pos"], ["neg", "ish"], ["sports", "politics"], []]
    assert read_labeled_tsv(path, multi_label=True, label_separator=";")[1].labels == ["neg,ish"]
    assert multi[1].text == "dull\tand long"  # the text is everything after the first tab
    assert [ex.line for ex in read_labeled_tsv(path, multi_label=True, max_length=3)] == [1, 3, 4]


@pytest.mark.parametrize(
    "content, multi_label, line, message",
    [
        ("pos\tgood\nno tab here\n", False, 2, "no tab"),
        ("pos\tgood\n\tgood\n", False, 2, "empty label"),
        ("pos\tgood\npos\t   \n", False, 2, "empty text"),
        ("a\tgood\n\nb,,c\tgood\n", True, 3, "empty label in the label list"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, content, multi_label, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_labeled_tsv(path, multi_label=multi_label)
    assert (err.value.path, err.value.line) == (str(path), line)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_text_without_tokens_and_unknown_labels_name_file_and_line(tmp_path):
    train, valid = tmp_path / "train.tsv", tmp_path / "valid.tsv"
    train.write_text("pos\tgood film\nneg\tbad film\n")
    valid.write_text("pos\tfine\nneutral\tso so\n")
    dm = ClassificationDataModule(train, valid, max_sentences=4)
    with pytest.raises(DataError, match="'neutral' does not occur in the training data") as err:
        dm.setup("fit")
    assert (err.value.path, err.value.line) == (str(valid), 2)
    empty = LabeledText("", [], ["pos"], 7)
    with pytest.raises(DataError, match="no tokens") as err:
        ClassificationDataModule([empty, *_task(3, 0, False)], max_sentences=4).setup("fit")
    assert err.value.line == 7


def test_batches_carry_class_indices_or_multi_hot_rows():
    dm = ClassificationDataModule(_task(20, 0, True), multi_label=True, max_sentences=8, shuffle=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.labels.shape == (len(batch), len(dm.label_vocab)) and batch.labels.dtype == torch.float32
    for row, i in zip(batch.labels, batch.index.tolist()):
        example = dm.examples["train"][i]
        assert {dm.label_vocab.itos[j] for j in row.nonzero().flatten().tolist()} == set(example.labels)
        assert dm.vocab.decode(batch.tokens.ids[batch.index.tolist().index(i)]) == example.tokens
    dm = ClassificationDataModule(_task(20, 0, False), max_sentences=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.labels.shape == (len(batch),) and batch.labels.dtype == torch.long


# -- training and metrics ---------------------------------------------------------------------


def test_single_label_learns_word_order(single):
    model, trainer, dm = single
    assert trainer.callback_metrics["val_acc"] >= 0.97
    assert trainer.callback_metrics["val_f1"] >= 0.97
    assert "train_acc" in trainer.callback_metrics and "train_f1" in trainer.callback_metrics
    # the same words in another order flip the label
    yes, no = model.predict(["a y b x c", "a x b y c"])
    assert (yes.label, no.label) == ("yes", "no")
    assert yes.probabilities["yes"] > 0.9 and abs(sum(yes.probabilities.values()) - 1) < 1e-6


def test_multi_label_learns_each_label(multi):
    model, trainer, dm = multi
    assert trainer.callback_metrics["val_acc"] >= 0.97
    assert trainer.callback_metrics["val_exact_match"] >= 0.9
    texts = ["a b y x b", "c y d", "x y b"]
    assert [set(p.labels) for p in model.predict(texts)] == [set(_labels(t.split(), True)) for t in texts]


def _hand_metrics(gold: list[set[str]], predicted: list[set[str]], labels: list[str], multi: bool) -> dict[str, float]:
    """The documented metrics, counted from label sets."""
    counts = {}
    for label in labels:
        tp = sum(label in g and label in p for g, p in zip(gold, predicted))
        fp = sum(label not in g and label in p for g, p in zip(gold, predicted))
        fn = sum(label in g and label not in p for g, p in zip(gold, predicted))
        counts[label] = (tp, fp, fn)

    def f1(tp: int, fp: int, fn: int) -> float:
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

    if not multi:  # macro over the classes that occur in gold or predictions
        present = [c for c in counts.values() if sum(c)]
        return {"acc": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
                "f1": sum(f1(*c) for c in present) / len(present)}  # fmt: skip
    decisions = len(gold) * len(labels)
    wrong = sum(len(g ^ p) for g, p in zip(gold, predicted))
    return {
        "acc": 1 - wrong / decisions,
        "exact_match": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
        "f1": sum(f1(*c) for c in counts.values()) / len(labels),
        "micro_f1": f1(*(sum(c[i] for c in counts.values()) for i in range(3))),
    }


@pytest.mark.parametrize("multi_label", [False, True])
def test_logged_metrics_equal_a_hand_computation(multi_label, tmp_path):
    """An untrained model, so that the metrics are far from 0 and 1."""
    torch.manual_seed(3)
    dm = ClassificationDataModule(_task(50, 1, multi_label), _task(97, 2, multi_label), multi_label=multi_label,
                                  max_sentences=16)  # fmt: skip
    model = SequenceClassifier.from_datamodule(dm, **SMALL)
    logged = _trainer(tmp_path, 1).validate(model, dm, verbose=False)[0]
    valid = dm.examples["valid"]
    predicted = model.predict([ex.tokens for ex in valid])
    expected = _hand_metrics([set(ex.labels) for ex in valid], [set(p.labels) for p in predicted], model.labels,
                             multi_label)  # fmt: skip
    assert 0.05 < expected["f1"] < 0.95
    assert set(logged) == {"val_loss", *(f"val_{k}" for k in expected)}
    for key, value in expected.items():
        assert logged[f"val_{key}"] == pytest.approx(value, abs=1e-6), key


# -- Jordan network -------------------------------------------------------------------------


def test_jordan_recurrence_matches_a_hand_loop():
    """s_t = decay s_{t-1} + y_{t-1}; h_t = tanh(W_ih [x_t; s_t] + b_ih + W_hh h_{t-1} + b_hh);
    y_t = softmax(W_y h_t + b_y), per unpadded sequence, against the batched encoder."""
    torch.manual_seed(0)
    inp, hid, k, decay = 3, 5, 4, 0.5
    encoder = JordanEncoder(inp, hid, k, cell="rnn", decay=decay).double()
    readout = torch.nn.Linear(hid, k).double()
    fed_back = lambda h: readout(h).softmax(-1)  # noqa: E731
    lengths = torch.tensor([4, 1, 3])
    x = torch.randn(3, 4, inp, dtype=torch.float64)
    outputs, final = encoder(x, lengths, fed_back)
    cell = encoder.cells[0]
    for b, n in enumerate(lengths.tolist()):
        h, s = torch.zeros(hid, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        for t in range(n):
            u = torch.cat([x[b, t], s])
            h = torch.tanh(cell.weight_ih @ u + cell.bias_ih + cell.weight_hh @ h + cell.bias_hh)
            y = torch.softmax(readout.weight @ h + readout.bias, -1)
            s = decay * s + y
            torch.testing.assert_close(outputs[b, t], h)
        assert torch.equal(outputs[b, n:], torch.zeros(4 - n, hid, dtype=torch.float64))
        torch.testing.assert_close(final.layers[0][b], h)
        torch.testing.assert_close(final.context[b], s)
    # the feedback matters: another readout gives other states from step 2 on
    other, _ = encoder(x, lengths, lambda h: torch.zeros(h.size(0), k, dtype=h.dtype))
    torch.testing.assert_close(other[:, 0], outputs[:, 0])
    assert not torch.allclose(other[0, 1], outputs[0, 1])


def test_jordan_classifier_feeds_back_its_own_output_distribution():
    torch.manual_seed(0)
    model = SequenceClassifier(_vocab(), ["p", "q", "r"], jordan=True, bidirectional=False, cell="rnn",
                               **SMALL).double().eval()  # fmt: skip
    seen = []
    model.encoder.register_forward_hook(lambda mod, args, out: seen.append(args[2]))
    tokens = ["a", "x", "b"]
    probs = model.predict([tokens])[0].probabilities
    assert seen[0] == model._fed_back
    # the hand loop with the classifier's own output layer
    cell, h, s = model.encoder.cells[0], torch.zeros(24, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for token in tokens:
        u = torch.cat([model.embedding.weight[model.vocab[token]], s])
        h = torch.tanh(cell.weight_ih @ u + cell.bias_ih + cell.weight_hh @ h + cell.bias_hh)
        s = torch.softmax(model.output.weight @ h + model.output.bias, -1)
    assert list(probs.values()) == pytest.approx(s.tolist(), abs=1e-6)  # predict() reports float32
    with pytest.raises(ConfigError, match="bidirectional=False"):
        SequenceClassifier(_vocab(), ["p", "q"], jordan=True)


def test_jordan_classifier_trains(tmp_path):
    torch.manual_seed(0)
    dm = ClassificationDataModule(_task(300, 1, False), _task(100, 2, False), max_sentences=32)
    model = SequenceClassifier.from_datamodule(dm, jordan=True, bidirectional=False, **SMALL)
    trainer = _trainer(tmp_path, epochs=6)
    trainer.fit(model, dm)
    assert trainer.callback_metrics["val_acc"] >= 0.95


# -- streaming --------------------------------------------------------------------------------


def _assert_streaming_matches_prefixes(model: SequenceClassifier, tokens: list[str]) -> None:
    batch = [p.probabilities for p in model.predict([tokens[: n + 1] for n in range(len(tokens))])]
    state = model.init_state()
    sizes = _sizes(state)
    for n, token in enumerate(tokens):
        probs, state = model.step(token, state)
        torch.testing.assert_close(probs, torch.tensor(list(batch[n].values())), atol=1e-5, rtol=0)
    assert _sizes(state) == sizes  # constant memory: the state never grows


def _sizes(state: object) -> list[int]:
    """Element counts of the tensors of a (nested) streaming state."""
    if isinstance(state, torch.Tensor):
        return [state.numel()]
    return [n for part in state for n in _sizes(part)]


def test_streaming_equals_batch_forward_on_every_prefix(single):
    model = single[0]
    _assert_streaming_matches_prefixes(model, "a y b x c d y y x a b".split())


@pytest.mark.parametrize("jordan", [False, True])
def test_streaming_stacked_lstm_multi_label(jordan):
    torch.manual_seed(0)
    model = SequenceClassifier(_vocab(), list(MULTI_LABELS), multi_label=True, bidirectional=False, cell="lstm",
                               num_layers=2, jordan=jordan, jordan_decay=0.3, **{**SMALL, "dropout": 0.3})  # fmt: skip
    model.train()  # step() is inference whatever the mode: no dropout
    _assert_streaming_matches_prefixes(model, "b a z x y b x".split())  # 'z' is unknown: <unk>
    assert model.training


def test_parallel_streams_equal_single_streams(single):
    model = single[0]
    streams = ["a y b x".split(), "x x y c".split()]
    ids = torch.tensor([[model.vocab[t] for t in s] for s in streams])
    state, singles = model.init_state(2), [model.init_state(), model.init_state()]
    for t in range(4):
        probs, state = model.step(ids[:, t], state)
        for b in range(2):
            p, singles[b] = model.step(streams[b][t], singles[b])
            torch.testing.assert_close(probs[b], p)


def test_streaming_needs_a_forward_encoder_with_last_pooling(multi):
    with pytest.raises(ConfigError, match="streaming needs a forward encoder"):
        multi[0].init_state()
    model = SequenceClassifier(_vocab(), ["p", "q"], bidirectional=False, pooling="mean")
    with pytest.raises(ConfigError, match="pooling='mean'"):
        model.step("a", [])


# -- checkpoints, components, errors ----------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_predictions(multi, tmp_path):
    model, trainer, dm = multi
    path = tmp_path / "multi.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    provenance = ckpt["seqlearn"]["provenance"]
    assert {role: (r["kind"], r["name"], r["distribution"]) for role, r in provenance.items()} == {
        "cell": ("cells", "gru", "seqlearn"), "pooling": ("poolings", "max", "seqlearn"),
        "tokenizer": ("tokenizers", "whitespace", "seqlearn")}
    # the random state for exact resume, written by the atomic writer
    assert isinstance(ckpt["callbacks"]["TrainingState"]["rng"]["torch"], torch.Tensor)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    loaded = SequenceClassifier.load_from_checkpoint(path)
    assert loaded.checkpoint_provenance == provenance
    assert loaded.vocab == model.vocab and loaded.label_vocab == model.label_vocab and loaded.multi_label
    texts = [ex.text for ex in dm.examples["valid"][:40]]
    assert loaded.predict(texts) == model.predict(texts)


def test_plugin_pooling_and_unknown_names():
    @registry.poolings.register("test-sum")
    class SumPooling(registry.poolings.get("mean")):
        def forward(self, states, mask):
            return torch.where(mask.unsqueeze(-1), states, 0.0).sum(1)

    model = SequenceClassifier(_vocab(), ["p", "q"], pooling="test-sum", **SMALL)
    assert isinstance(model.pooling, SumPooling)
    with pytest.raises(UnknownComponentError, match="Did you mean 'attention'"):
        SequenceClassifier(_vocab(), ["p", "q"], pooling="atention")
    with pytest.raises(ConfigError, match="at least 2 labels"):
        SequenceClassifier(_vocab(), ["p"])
    assert model.predict(["a b", "   "])[1] == Classification([], [], {})  # see test_inference_inputs


class _OneOfTwoProcesses:
    """The DDP strategy as one of two processes sees it, its partner's batch holding
    ``other`` texts: sums add the partner's count."""

    def __init__(self, other: int):
        self.other = other

    def reduce(self, value: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        return value + self.other

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


@pytest.mark.parametrize("multi_label", [False, True])
def test_under_ddp_the_training_loss_is_rescaled_to_the_mean_over_the_global_batch(multi_label, monkeypatch):
    """DDP averages gradients over processes: each process's loss must be its sum over texts
    divided by the texts of *all* processes, times the number of processes."""
    torch.manual_seed(0)
    model = SequenceClassifier(_vocab(), ["p", "q"], multi_label=multi_label, **SMALL)
    vocab = model.vocab
    items = [(i, vocab.encode(text.split()), [i % 2]) for i, text in enumerate(["a x y", "b", "c d x"])]
    batch = collate_classification(items, vocab.pad_index, 2, multi_label)
    local_mean = model.loss(model(batch.tokens), batch.labels)
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    monkeypatch.setattr(model, "log_dict", lambda *args, **kwargs: None)
    model._trainer = SimpleNamespace(world_size=2, strategy=_OneOfTwoProcesses(other=5))
    loss = model.training_step(batch, 0)
    torch.testing.assert_close(loss, local_mean * 3 / (3 + 5) * 2)
