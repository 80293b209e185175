"""LanguageModel and stream batching: layout, truncated BPTT against a manual torch.nn loop,
weight tying, perplexity, generation."""
from __future__ import annotations

import gzip
import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from seqlearn.checkpointing import AtomicCheckpointIO
from seqlearn.errors import ConfigError, DataError
from seqlearn.language_model import LanguageModel
from seqlearn.batching import StreamBatch
from seqlearn.language_model_data import LanguageModelDataModule
from seqlearn.streams import StreamWindows, WindowLoader, batchify, encode_stream
from seqlearn.vocab import Vocab

WORDS = "the a dog cat runs sleeps on mat big small".split()


def corpus(n_sentences: int = 40, seed: int = 0) -> list[list[str]]:
    g = torch.Generator().manual_seed(seed)
    return [[WORDS[int(i)] for i in torch.randint(len(WORDS), (int(torch.randint(2, 7, (1,), generator=g)),),
                                                    generator=g)] for _ in range(n_sentences)]  # fmt: skip


def tiny_model(cell: str = "lstm", **kw) -> LanguageModel:
    options = {"embedding_dim": 12, "num_layers": 2, "dropout": 0.0, "input_dropout": 0.0, **kw}
    return LanguageModel(Vocab.build([WORDS]), cell=cell, **options)


def quiet_trainer(**kw) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", **kw)  # fmt: skip


# -- stream batching ----------------------------------------------------------------------------


def test_batchify_and_windows_by_hand():
    streams = batchify(torch.arange(14), streams=3)  # 14 // 3 = 4 per row; 12, 13 dropped
    assert streams.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    windows = StreamWindows(streams, bptt=2)
    assert len(windows) == 2  # 3 (input, target) positions per row: a window of 2, then 1
    first, last = windows[0], windows[1]
    assert first.input.tolist() == [[0, 1], [4, 5], [8, 9]] and first.target.tolist() == [[1, 2], [5, 6], [9, 10]]
    assert last.input.tolist() == [[2], [6], [10]] and last.target.tolist() == [[3], [7], [11]]
    assert (first.offset, last.offset) == (0, 2)
    with pytest.raises(IndexError):
        windows[2]


def test_window_loader_resumes_after_the_windows_delivered_and_then_starts_epochs_afresh():
    windows = StreamWindows(batchify(torch.arange(40), streams=2), bptt=3)
    offsets = [3 * k for k in range(len(windows))]  # 19 positions per stream: 7 windows
    loader = WindowLoader(windows)
    epoch = iter(loader)
    assert [next(epoch).offset for _ in range(3)] == offsets[:3]
    assert loader.state_dict() == {"start": 3}
    resumed = WindowLoader(windows)
    resumed.load_state_dict(loader.state_dict())
    assert len(resumed) == len(windows)  # Lightning counts the delivered windows itself
    assert [w.offset for w in resumed] == offsets[3:]
    assert [w.offset for w in resumed] == offsets  # the next epoch, whole
    at_the_end = WindowLoader(windows)
    at_the_end.load_state_dict({"start": len(windows)})  # saved after an epoch's last window
    assert [w.offset for w in at_the_end] == offsets


def test_stream_joins_sentences_with_eos_and_datamodule_serves_windows_in_order():
    vocab = Vocab.build([["a", "b", "c"]])
    a, b, c, eos = vocab["a"], vocab["b"], vocab["c"], vocab.eos_index
    assert encode_stream([["a", "b"], ["c"], ["b"]], vocab).tolist() == [a, b, eos, c, eos, b, eos]

    dm = LanguageModelDataModule(["a b", "c", "b a c", "a"], batch_size=2, bptt=2, vocab=vocab)
    dm.setup("fit")
    ids = [a, b, eos, c, eos, b, a, c, eos, a, eos]  # 11 tokens: rows of 5, the last token dropped
    batches = list(dm.train_dataloader())
    assert [w.input.tolist() for w in batches] == [[ids[0:2], ids[5:7]], [ids[2:4], ids[7:9]]]
    assert [w.target.tolist() for w in batches] == [[ids[1:3], ids[6:8]], [ids[3:5], ids[8:10]]]
    assert [w.offset for w in batches] == [0, 2]


def test_datamodule_reads_plain_and_gzip_files_alike(tmp_path):
    text = "A dog runs .\n\nthe cat sleeps\n"
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "train.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    plain = LanguageModelDataModule("train.txt", data_dir=tmp_path, lowercase=True, batch_size=1)
    packed = LanguageModelDataModule(tmp_path / "train.txt.gz", lowercase=True, batch_size=1)
    assert plain.split("train") == packed.split("train") == [["a", "dog", "runs", "."], ["the", "cat", "sleeps"]]
    assert torch.equal(plain.stream("train"), packed.stream("train"))
    assert plain.stream("train").numel() == 9  # 7 words and 2 </s>; the blank line is skipped


def test_datamodule_bad_input_raises_data_errors_naming_the_file(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="blank.txt.*no text"):
        LanguageModelDataModule(blank).setup("fit")
    empty = tmp_path / "empty.txt.gz"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt.gz:1: file is empty"):
        LanguageModelDataModule(empty).setup("fit")
    short = tmp_path / "short.txt"
    short.write_text("a b\n", encoding="utf-8")
    with pytest.raises(DataError, match="short.txt: 3 tokens cannot fill 20 streams"):
        LanguageModelDataModule(short, batch_size=20).train_dataloader()
    with pytest.raises(DataError, match="train sentences"):
        LanguageModelDataModule(["", " "]).setup("fit")
    with pytest.raises(ConfigError, match="bptt"):
        LanguageModelDataModule(["a"], bptt=0)


# -- truncated BPTT against torch.nn ---------------------------------------------------------------


def oracle_from(model: LanguageModel, cell: str) -> tuple[nn.Embedding, nn.RNNBase, nn.Linear]:
    """torch.nn modules holding copies of the model's weights."""
    rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
    h = model.hparams
    rnn = rnn_class(h.embedding_dim, h.hidden_size, num_layers=h.num_layers, batch_first=True)
    with torch.no_grad():
        for i, layer in enumerate(model.encoder.layers):
            for name, p in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), layer.cells[0].flat_weights()):
                getattr(rnn, f"{name}_l{i}").copy_(p)
    embedding = nn.Embedding.from_pretrained(model.embedding.weight.detach().clone(), freeze=False)
    output = nn.Linear(h.embedding_dim, len(model.vocab))
    with torch.no_grad():
        output.weight.copy_(model.output.weight)
        output.bias.copy_(model.output.bias)
    return embedding, rnn, output


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("fused", [True, False])
def test_tbptt_with_carried_state_equals_manual_window_loop(cell, fused):
    torch.manual_seed(0)
    model = tiny_model(cell, tie_embeddings=False)
    model.encoder.use_fused = fused
    embedding, rnn, output = oracle_from(model, cell)
    vocab = model.vocab
    windows = StreamWindows(batchify(encode_stream(corpus(), vocab), streams=3), bptt=7)
    assert len(windows) >= 4 and windows[len(windows) - 1].input.size(1) < 7  # a short last window too
    never = [vocab.pad_index, vocab.bos_index]

    hidden = None
    for window in windows:
        # the oracle: torch.nn over this window from the previous window's final state, detached
        out, hidden = rnn(embedding(window.input), hidden)
        logits = output(out).index_fill(-1, torch.tensor(never), float("-inf"))
        expected = F.cross_entropy(logits.flatten(0, 1), window.target.flatten())
        expected_grads = torch.autograd.grad(expected, [embedding.weight, output.weight, *rnn.parameters()])
        hidden = tuple(t.detach() for t in hidden) if isinstance(hidden, tuple) else hidden.detach()

        loss = model.window_nll(window, "train")  # what training_step computes
        grads = torch.autograd.grad(loss, [model.embedding.weight, model.output.weight, *(
            p for layer in model.encoder.layers for p in layer.cells[0].flat_weights())])  # fmt: skip
        torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class _Losses(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_trainer_carries_state_within_an_epoch_and_resets_it_at_epoch_start():
    torch.manual_seed(1)
    vocab = Vocab.build([WORDS])
    dm = LanguageModelDataModule(corpus(30), batch_size=2, bptt=5, vocab=vocab)
    n = len(dm.windows("train"))

    def epoch_losses(carry: bool) -> list[float]:
        torch.manual_seed(2)
        model = tiny_model(carry_state=carry, optimizer="sgd", lr=0.0)  # the weights stay as they are
        record = _Losses()
        quiet_trainer(max_epochs=2, callbacks=[record]).fit(model, dm)
        return record.losses

    carried, independent = epoch_losses(True), epoch_losses(False)
    assert len(carried) == 2 * n
    assert carried[:n] == carried[n:]  # the second epoch starts from zeros again
    assert carried[0] == independent[0]  # the first window starts from zeros either way
    assert all(abs(c - i) > 1e-6 for c, i in zip(carried[1:n], independent[1:n]))  # later ones do not


# -- weight tying ----------------------------------------------------------------------------------


def test_weight_tying_shares_one_parameter_whose_gradient_sums_both_uses():
    torch.manual_seed(3)
    tied, untied = tiny_model(tie_embeddings=True), tiny_model(tie_embeddings=False)
    assert tied.output.weight is tied.embedding.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == (
        untied.output.weight.numel())  # fmt: skip
    untied.load_state_dict(tied.state_dict())
    ids = encode_stream(corpus(5), tied.vocab)[None, :-1]
    gold = encode_stream(corpus(5), tied.vocab)[None, 1:]
    for model in (tied, untied):
        logits, _ = model(ids)
        F.cross_entropy(logits.flatten(0, 1), gold.flatten()).backward()
    torch.testing.assert_close(tied.embedding.weight.grad, untied.embedding.weight.grad + untied.output.weight.grad)

    reloaded = tiny_model(tie_embeddings=True)
    reloaded.load_state_dict(tied.state_dict())
    assert reloaded.output.weight is reloaded.embedding.weight
    wide = tiny_model(tie_embeddings=True, hidden_size=20)  # a projection maps 20 units to the 12 of the embeddings
    assert wide.output.weight is wide.embedding.weight and wide.projection.in_features == 20


# -- perplexity ------------------------------------------------------------------------------------


def test_validation_perplexity_is_exp_of_the_mean_token_nll_of_the_whole_streams():
    torch.manual_seed(4)
    vocab = Vocab.build([WORDS])
    dm = LanguageModelDataModule(corpus(30), corpus(12, seed=9), vocab=vocab, batch_size=3, eval_batch_size=2, bptt=4)
    streams = batchify(dm.stream("valid"), 2)
    assert (streams.size(1) - 1) % 4 != 0  # the last window is shorter: token-weighted, not window-averaged
    model = tiny_model(dropout=0.3, input_dropout=0.2).eval()
    with torch.no_grad():  # one pass over each full stream: what carrying the state across windows must give
        logits, _ = model(streams[:, :-1])
    expected = math.exp(F.cross_entropy(logits.flatten(0, 1), streams[:, 1:].flatten()).item())

    metrics = quiet_trainer().validate(model, dm, verbose=False)[0]
    assert metrics["val_ppl"] == pytest.approx(expected, rel=1e-5)
    assert model.perplexity(dm.windows("valid")) == pytest.approx(expected, rel=1e-5)
    assert model.perplexity(dm.windows("valid"), carry_state=False) != pytest.approx(expected, rel=1e-5)


# -- generation ------------------------------------------------------------------------------------


def manual_greedy(model: LanguageModel, prompt: list[str], max_length: int) -> tuple[list[str], float]:
    """Greedy continuation by feeding </s> + the prompt through step() one token at a time."""
    state = model.init_state()
    for token in [model.vocab.itos[model.vocab.eos_index], *prompt]:
        log_probs, state = model.step(token, state)
    out, score = [], 0.0
    for _ in range(max_length):
        best = int(log_probs.argmax())
        score += float(log_probs[best])
        if best == model.vocab.eos_index:
            break
        out.append(model.vocab.itos[best])
        log_probs, state = model.step(best, state)
    return out, score


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_greedy_beam1_and_top1_sampling_agree_with_a_manual_greedy_loop(cell):
    torch.manual_seed(5)
    model = tiny_model(cell, dropout=0.5)
    vocab = model.vocab
    dm = LanguageModelDataModule(corpus(60), vocab=vocab, batch_size=4, bptt=6)
    quiet_trainer(max_epochs=3).fit(model, dm)  # a model with preferences
    model.train()  # dropout on: generation must switch it off (and back)
    prompts = ["", "the big dog", ["a"], "cat runs on the mat"]  # different lengths in one batch
    greedy = model.generate(prompts, max_length=12)
    beam1 = model.generate(prompts, beam_size=1, length_penalty="average", alpha=0.0, max_length=12)  # beam search
    top1 = model.sample(prompts, top_k=1, temperature=0.7, max_length=12, generator=torch.Generator().manual_seed(0))
    for prompt, g, b, s in zip(prompts, greedy, beam1, top1):
        tokens = prompt.split() if isinstance(prompt, str) else prompt
        expected_tokens, expected_score = manual_greedy(model, tokens, 12)
        assert g[0].source == tokens
        for hyp in (g[0], b[0], s[0]):
            assert hyp.tokens == expected_tokens
            assert hyp.score == pytest.approx(expected_score, abs=1e-4)
    assert model.training  # generation restores the mode


def test_beam_search_finds_at_least_the_greedy_score_and_sampling_is_reproducible():
    torch.manual_seed(6)
    model = tiny_model("gru").eval()
    greedy = model.generate("the", max_length=6)[0][0]
    beams = model.generate("the", beam_size=4, n_best=3, max_length=6)[0]
    assert len(beams) == 3 and beams[0].score >= greedy.score - 1e-5
    assert [h.score for h in beams] == sorted((h.score for h in beams), reverse=True)
    draw = [model.sample(["a dog"], num_samples=3, top_p=0.9, generator=torch.Generator().manual_seed(7))[0]
            for _ in range(2)]  # fmt: skip
    assert [h.tokens for h in draw[0]] == [h.tokens for h in draw[1]]
    assert all("<pad>" not in h.tokens and "<s>" not in h.tokens for h in draw[0])


def test_checkpoint_restores_vocabulary_tokenizer_and_weights(tmp_path):
    torch.manual_seed(8)
    dm = LanguageModelDataModule(corpus(20), batch_size=2, bptt=5, tokenizer="whitespace", lowercase=True)
    model = LanguageModel.from_datamodule(dm, cell="gru", embedding_dim=8, num_layers=1)
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "lm.ckpt")
    assert torch.load(tmp_path / "lm.ckpt", weights_only=True)["hyper_parameters"]["lowercase"] is True
    loaded = LanguageModel.load_from_checkpoint(tmp_path / "lm.ckpt").eval()
    assert loaded.vocab == dm.vocab and loaded.output.weight is loaded.embedding.weight
    model.eval()
    assert loaded.generate("The Dog")[0][0].tokens == model.generate("the dog")[0][0].tokens
    torch.testing.assert_close(loaded.step("THE", loaded.init_state())[0], model.step("the", model.init_state())[0])


def test_checkpoints_carry_provenance_and_random_state_and_are_written_atomically(tmp_path):
    torch.manual_seed(9)
    dm = LanguageModelDataModule(corpus(20), batch_size=2, bptt=5)
    model = LanguageModel.from_datamodule(dm, cell="gru", embedding_dim=8, num_layers=1)
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(model, dm)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    model.hparams["_class_path"] = "evil.module.Class"  # as LightningCLI would add: never saved
    trainer.save_checkpoint(tmp_path / "lm.ckpt")
    ckpt = torch.load(tmp_path / "lm.ckpt", weights_only=True)
    assert "_class_path" not in ckpt["hyper_parameters"]
    provenance = ckpt["seqlearn"]["provenance"]
    assert {role: (r["kind"], r["name"], r["distribution"]) for role, r in provenance.items()} == {
        "cell": ("cells", "gru", "seqlearn"), "tokenizer": ("tokenizers", "whitespace", "seqlearn")}
    torch.testing.assert_close(ckpt["callbacks"]["TrainingState"]["rng"]["torch"], torch.get_rng_state())
    loaded = LanguageModel.load_from_checkpoint(tmp_path / "lm.ckpt")
    assert loaded.checkpoint_provenance == provenance


def test_ddp_is_refused_by_name_before_training(monkeypatch):
    """Windows of contiguous streams cannot be sharded over processes; no real DDP run needed
    to show that a Trainer of two processes is refused."""
    dm = LanguageModelDataModule(corpus(20), batch_size=2, bptt=5)
    model = LanguageModel.from_datamodule(dm, cell="gru", embedding_dim=8, num_layers=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda self: 2))
    with pytest.raises(ConfigError, match=r"LanguageModel runs in one process, not 2: .*Trainer\(devices=1\)"):
        quiet_trainer(max_steps=2).fit(model, dm)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    monkeypatch.undo()
    quiet_trainer(max_steps=1).fit(model, dm)  # one process is fine
    assert not all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_0_1_0_import_path_of_the_data_module_still_works_with_a_deprecation_warning():
    import seqlearn
    import seqlearn.streams as streams

    with pytest.warns(DeprecationWarning, match="seqlearn.language_model_data.LanguageModelDataModule"):
        old = streams.LanguageModelDataModule
    assert old is LanguageModelDataModule is seqlearn.LanguageModelDataModule
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        streams.Nothing
