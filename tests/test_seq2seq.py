"""Seq2Seq: losses, teacher forcing and scheduled sampling, batch invariance, fine-tuning,
training to reproduce a few pairs, and checkpoints that restore everything."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import sacrebleu
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from seqlearn.batching import TranslationBatch, pad
from seqlearn.datamodules import TranslationDataModule
from seqlearn.errors import ConfigError
from seqlearn.seq2seq import Seq2Seq, TeacherForcing, label_smoothed_nll
from seqlearn.vocab import Vocab

torch.set_num_threads(1)

PAIRS = [
    ("a b c", "z y x"),
    ("b c d e", "w v z y"),
    ("e a", "x v"),
    ("d d a", "x w w"),
    ("c e b a d", "w x y v z"),
    ("a", "x"),
]
SMALL = dict(embedding_dim=16, hidden_size=32, dropout=0.0)


def _vocabs():
    return (Vocab.build(s.split() for s, _ in PAIRS), Vocab.build(t.split() for _, t in PAIRS))


def _batch(model, pairs):
    src = pad([model.src_vocab.encode(s.split(), add_eos=True) for s, _ in pairs], model.src_vocab.pad_index)
    tgt = pad(
        [model.tgt_vocab.encode(t.split(), add_bos=True, add_eos=True) for _, t in pairs], model.tgt_vocab.pad_index
    )
    return TranslationBatch(src, tgt, torch.arange(len(pairs)))


def _model(**kw):
    torch.manual_seed(0)
    return Seq2Seq(*_vocabs(), **{**SMALL, **kw})


def _trainer(**kw):
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kw,
    )


# -- scheduled sampling ------------------------------------------------------------------


def test_schedules_give_the_documented_probabilities():
    assert TeacherForcing()(12345) == 1.0
    assert TeacherForcing(ratio=0.7)(10) == 0.7
    linear = TeacherForcing("linear", k=1.0, c=0.01, minimum=0.1)
    assert [linear(s) for s in (0, 50)] == pytest.approx([1.0, 0.5])
    assert linear(200) == 0.1
    assert TeacherForcing("exponential", k=0.99)(100) == pytest.approx(0.99**100)
    sigmoid = TeacherForcing("inverse_sigmoid", k=10)
    assert sigmoid(0) == pytest.approx(10 / 11)
    assert sigmoid(10 * math.log(10)) == pytest.approx(0.5)
    assert sigmoid(10**9) == pytest.approx(0.0, abs=1e-12)  # no overflow
    with pytest.raises(ConfigError):
        TeacherForcing("exponential", k=1.5)
    with pytest.raises(ConfigError, match="inverse_sigmoid"):
        TeacherForcing("sigmoid")


def _record_decoder_inputs(model):
    fed, logits = [], []
    model.tgt_embedding.register_forward_hook(lambda m, args, out: fed.append(args[0].clone()))
    model.generator.register_forward_hook(lambda m, args, out: logits.append(out.detach().clone()))
    return fed, logits


def test_gold_probability_zero_feeds_the_models_own_predictions():
    model = _model(teacher_forcing=0.0).train()
    assert model.gold_probability() == 0.0
    batch = _batch(model, PAIRS)
    fed, logits = _record_decoder_inputs(model)
    model.batch_loss(batch, model.gold_probability())
    steps = batch.tgt.ids.size(1) - 1
    assert len(fed) == steps and all(f.shape == (len(PAIRS),) for f in fed)
    assert torch.all(fed[0] == model.tgt_vocab.bos_index)
    gold = batch.tgt.ids[:, 1:]
    differs = False
    for t in range(1, steps):
        assert torch.equal(fed[t], logits[t - 1].argmax(-1))
        differs |= bool((fed[t] != gold[:, t - 1]).any())
    assert differs  # predictions, not the gold tokens


def test_teacher_forcing_is_decided_per_token():
    torch.manual_seed(0)
    model = _model(teacher_forcing=0.5).train()
    pairs = PAIRS * 8
    batch = _batch(model, pairs)
    fed, logits = _record_decoder_inputs(model)
    model.batch_loss(batch, 0.5)
    fed = torch.stack(fed[1:], 1)
    predicted = torch.stack([lg.argmax(-1) for lg in logits[:-1]], 1)
    gold = batch.tgt.ids[:, 1:-1]
    from_gold = (fed == gold) & (predicted != gold)
    from_model = (fed == predicted) & (predicted != gold)
    assert torch.all((fed == gold) | (fed == predicted))
    # both kinds of input within the same sentence
    assert bool((from_gold.any(1) & from_model.any(1)).any())
    share = from_gold.sum() / (from_gold.sum() + from_model.sum())
    assert 0.3 < float(share) < 0.7


def test_validation_never_samples():
    model = _model(scheduled_sampling="linear", sampling_c=1.0, val_bleu=False)
    assert model.train().gold_probability() == 1.0  # step 0
    model.teacher_forcing = TeacherForcing(ratio=0.0)
    assert model.eval().gold_probability() == 1.0
    batch = _batch(model, PAIRS)
    fed, _ = _record_decoder_inputs(model)
    _trainer().validate(model, DataLoader([batch], batch_size=None), verbose=False)
    assert len(fed) == 1 and torch.equal(fed[0], batch.tgt.ids[:, :-1])


# -- loss -----------------------------------------------------------------------------------


def test_label_smoothing_against_a_hand_computation():
    torch.manual_seed(0)
    logits, gold, eps = torch.randn(5, 7, dtype=torch.double), torch.tensor([0, 3, 6, 2, 2]), 0.1
    loss, nll = label_smoothed_nll(logits, gold, eps)
    expected_loss = expected_nll = 0.0
    for row, y in zip(logits.tolist(), gold.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        expected_nll += -log_p[y]
        expected_loss += -(1 - eps) * log_p[y] - eps / 7 * sum(log_p)
    assert float(loss) == pytest.approx(expected_loss, abs=1e-6)
    assert float(nll) == pytest.approx(expected_nll, abs=1e-6)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, gold, label_smoothing=eps, reduction="sum")))


def test_batch_loss_averages_over_real_target_tokens_only():
    model = _model(label_smoothing=0.2).eval()
    batch = _batch(model, PAIRS)
    with torch.no_grad():
        loss, nll, n = model.batch_loss(batch)
    assert int(n) == sum(len(t.split()) + 1 for _, t in PAIRS)
    expected_loss = expected_nll = 0.0
    for s, t in PAIRS:
        one = _batch(model, [(s, t)])
        logits = model(one.src, one.tgt.ids[:, :-1])[0].double()
        log_p = torch.log_softmax(logits, -1)
        gold = one.tgt.ids[0, 1:]
        expected_nll -= log_p.gather(1, gold[:, None]).sum().item()
        # smoothing spreads over the tokens that can come next: all but <pad> and <s>
        possible = [i for i in range(len(model.tgt_vocab)) if i not in (model.tgt_vocab.pad_index, model.tgt_vocab.bos_index)]
        expected_loss -= (0.8 * log_p.gather(1, gold[:, None]).sum() + 0.2 * log_p[:, possible].mean(1).sum()).item()
    assert float(nll) == pytest.approx(expected_nll, abs=1e-4)
    assert float(loss) == pytest.approx(expected_loss / int(n), abs=1e-5)


# -- batch invariance and the search protocol ----------------------------------------------------


@pytest.mark.parametrize("decoder,attention", [("bahdanau", "bahdanau"), ("luong", "luong-general"), ("plain", "bahdanau")])
def test_a_sentence_alone_and_in_a_padded_batch_scores_the_same(decoder, attention):
    model = _model(decoder=decoder, attention=attention, cell="lstm", encoder_layers=2, decoder_layers=2)
    alone = model.score(["a"], ["x"])
    batched = model.score(["c e b a d", "a", "b c d e"], ["w x y v z", "x", "w v z y"])
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=0)
    hyp_alone = model.translate(["e a"], beam_size=3, max_length=12)[0][0]
    hyp_batched = model.translate(["c e b a d", "e a", "b c d e a"], beam_size=3, max_length=12)[1][0]
    assert hyp_alone.tokens == hyp_batched.tokens
    assert hyp_alone.score == pytest.approx(hyp_batched.score, abs=1e-5)


@pytest.mark.parametrize(
    "decoder,options", [("bahdanau", None), ("luong", {"input_feeding": False}), ("luong", None), ("plain", None)]
)
def test_step_function_agrees_with_teacher_forced_scores(decoder, options):
    model = _model(decoder=decoder, attention="luong-dot" if decoder == "luong" else "bahdanau", decoder_options=options)
    model.eval()
    sources, targets = ["c e b a d", "a", "b c"], ["w x y v z", "x y", "q"]
    batch = _batch(model, list(zip(sources, targets)))
    with torch.no_grad():
        state = model.start(batch.src)
        total = torch.zeros(3)
        ids = batch.tgt.ids
        for t in range(ids.size(1) - 1):
            log_probs, state, attn = model.step(ids[:, t], state)
            gold = ids[:, t + 1]
            total += log_probs.gather(1, gold[:, None]).squeeze(1).masked_fill(gold == 0, 0.0)
            if attn is not None:
                torch.testing.assert_close(attn.sum(-1), torch.ones(3))
                assert torch.all(attn[~batch.src.mask] == 0)
    torch.testing.assert_close(model.score(sources, targets), total, atol=1e-5, rtol=0)


def test_translate_inputs_strings_token_lists_unknowns_and_empty():
    model = _model()
    out = model.translate(["a b", ["a", "b"], "a zzz", ""], beam_size=2, n_best=2, return_attention=True)
    assert len(out) == 4
    assert [h.tokens for h in out[0]] == [h.tokens for h in out[1]]
    assert out[2][0].tokens == model.translate([["a", "<unk>"]], beam_size=2)[0][0].tokens
    assert out[3] == [out[3][0]] and out[3][0].tokens == [] and out[3][0].score == 0.0
    assert all(isinstance(tok, str) for h in out[0] for tok in h.tokens)
    assert out[0][0].score >= out[0][1].score
    attn = out[0][0].attention
    assert attn.shape[1] == 3  # "a", "b", "</s>"
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.size(0)))


def test_tied_embeddings_share_one_matrix():
    model = _model(tie_embeddings=True)
    assert model.generator.weight is model.tgt_embedding.weight
    assert model.decoder.output_size == SMALL["embedding_dim"]


@pytest.mark.parametrize(
    "optimizer,scheduler,expected",
    [("adam", "none", None), ("sgd", "step", "StepLR"), ("rmsprop", "plateau", "ReduceLROnPlateau"),
     ("adam", "exponential", "ExponentialLR"), ("adam", "cosine", "CosineAnnealingLR")],
)
def test_optimizers_and_schedulers(optimizer, scheduler, expected):
    model = _model(optimizer=optimizer, lr_scheduler=scheduler, lr=0.05, freeze=["encoder"])
    config = model.configure_optimizers()
    opt = config if expected is None else config["optimizer"]
    assert type(opt).__name__ == {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}[optimizer]
    assert opt.param_groups[0]["lr"] == 0.05
    trainable = {id(p) for p in opt.param_groups[0]["params"]}
    assert not any(id(p) in trainable for p in model.encoder.parameters())
    if expected is not None:
        sched = config["lr_scheduler"]
        sched = sched["scheduler"] if isinstance(sched, dict) else sched
        assert type(sched).__name__ == expected


@pytest.mark.parametrize("precision, fused", [("32-true", True), ("bf16-mixed", False)])
def test_clipped_training_steps_at_any_precision(precision, fused):
    # mixed precision clips after unscaling, which a fused optimizer does not allow
    model = _model()
    data = DataLoader([_batch(model, PAIRS)], batch_size=None)
    trainer = _trainer(max_steps=2, precision=precision, gradient_clip_val=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, data)
    assert bool(trainer.optimizers[0].defaults["fused"]) is fused
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


# -- fine-tuning ---------------------------------------------------------------------------------


VOCAB_ROWS = ("src_embedding.weight", "tgt_embedding.weight", "generator.weight", "generator.bias")


def _assert_rows_kept(old_model, new_model):
    old, new = old_model.state_dict(), new_model.state_dict()
    for key, value in old.items():
        if key not in VOCAB_ROWS:
            assert torch.equal(new[key], value), key
    for key in VOCAB_ROWS:
        old_vocab = old_model.src_vocab if key.startswith("src") else old_model.tgt_vocab
        new_vocab = new_model.src_vocab if key.startswith("src") else new_model.tgt_vocab
        for token, i in old_vocab.stoi.items():
            if token in new_vocab.stoi:
                assert torch.equal(new[key][new_vocab.stoi[token]], old[key][i]), (key, token)


def test_from_pretrained_extends_vocabularies_by_token_string():
    old = _model()
    reordered_tgt = Vocab(["y", "neu", "x"])  # another order, a new token, old ones dropped
    new = Seq2Seq.from_pretrained(old, tgt_vocab=reordered_tgt, extend_src=["f", "a"], lr=0.5)
    assert new.src_vocab.itos == old.src_vocab.itos + ["f"]
    assert new.tgt_vocab.itos == ["<pad>", "<unk>", "<s>", "</s>", "y", "neu", "x"]
    assert new.hparams.lr == 0.5
    _assert_rows_kept(old, new)
    fresh_row = new.src_embedding.weight[new.src_vocab.stoi["f"]]
    assert fresh_row.abs().sum() > 0
    assert not any(torch.equal(fresh_row, row) for row in old.src_embedding.weight)


def test_extend_vocab_in_place_keeps_rows_and_translates_the_same():
    model = _model(tie_embeddings=True)
    before = model.translate(["a b c", "e a"])
    copy = _model(tie_embeddings=True)
    added = model.extend_vocab(src_tokens=["g", "a"], tgt_tokens=["neu"])
    assert added == (["g"], ["neu"])
    assert model.generator.weight is model.tgt_embedding.weight and len(model.tgt_vocab) == len(copy.tgt_vocab) + 1
    _assert_rows_kept(copy, model)
    assert model.hparams.src_vocab["itos"][-1] == "g"
    # only the new output row can change a decision; a fresh row rarely wins, so tokens agree
    # unless "neu" is chosen
    after = model.translate(["a b c", "e a"])
    for b, a in zip(before, after):
        if "neu" not in a[0].tokens:
            assert a[0].tokens == b[0].tokens


def test_from_pretrained_freezes_parts():
    new = Seq2Seq.from_pretrained(_model(), freeze=("encoder", "embeddings"))
    assert not any(p.requires_grad for p in new.encoder.parameters())
    assert not new.src_embedding.weight.requires_grad and not new.tgt_embedding.weight.requires_grad
    assert all(p.requires_grad for p in new.decoder.parameters())
    assert new.hparams.freeze == ["encoder", "embeddings"]
    with pytest.raises(ConfigError, match="freeze"):
        _model(freeze=["everything"])


# -- training, checkpoints ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = Seq2Seq(*_vocabs(), embedding_dim=32, hidden_size=64, dropout=0.0, lr=1e-2, val_bleu=True)
    batch = _batch(model, PAIRS)
    trainer = _trainer(max_steps=250, num_sanity_val_steps=0, check_val_every_n_epoch=50, gradient_clip_val=5.0)
    trainer.fit(model, DataLoader([batch], batch_size=None), DataLoader([batch], batch_size=None))
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    trainer.save_checkpoint(path)
    return model, trainer, path


def test_a_tiny_model_learns_a_handful_of_pairs(trained):
    model, trainer, _ = trained
    sources = [s for s, _ in PAIRS]
    assert [h[0].tokens for h in model.translate(sources)] == [t.split() for _, t in PAIRS]
    assert [h[0].tokens for h in model.translate(sources, beam_size=3)] == [t.split() for _, t in PAIRS]
    metrics = trainer.callback_metrics
    assert metrics["val_bleu"] == pytest.approx(100.0)
    assert float(metrics["val_ppl"]) < 1.1 and "train_ppl" in metrics


def test_checkpoint_loads_weights_only_and_in_a_fresh_process(trained):
    model, _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["src_vocab"]["itos"] == model.src_vocab.itos
    assert checkpoint["seqlearn"]["provenance"]["cell"]["name"] == "gru"
    assert checkpoint["seqlearn"]["provenance"]["attention"]["distribution"] == "seqlearn"
    sources = [s for s, _ in PAIRS] + ["a b c d e"]
    expected = [[h.tokens, h.score] for h in (hyps[0] for hyps in model.translate(sources, beam_size=2))]
    code = (
        "import json, sys, torch\n"
        "from seqlearn.seq2seq import Seq2Seq\n"
        "torch.set_num_threads(1)\n"
        f"m = Seq2Seq.load_from_checkpoint({str(path)!r})\n"
        f"out = [[h[0].tokens, h[0].score] for h in m.translate({sources!r}, beam_size=2)]\n"
        "print(json.dumps({'out': out, 'prov': m.checkpoint_provenance['decoder']['name'],\n"
        "                  'tok': type(m.src_tokenizer).__name__}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert [o[0] for o in loaded["out"]] == [e[0] for e in expected]
    assert [o[1] for o in loaded["out"]] == pytest.approx([e[1] for e in expected], abs=1e-6)
    assert loaded["prov"] == "bahdanau" and loaded["tok"] == "WhitespaceTokenizer"


def test_fine_tuning_from_a_checkpoint_file_keeps_old_rows(trained):
    model, _, path = trained
    new = Seq2Seq.from_pretrained(path, extend_src=["neu"], extend_tgt=["new"])
    _assert_rows_kept(model, new)
    assert [h[0].tokens for h in new.translate([s for s, _ in PAIRS])] == [t.split() for _, t in PAIRS]


def test_validation_bleu_scores_against_the_raw_references(tmp_path):
    # validation targets made of words the target vocabulary lacks: their ids decode to <unk>
    (tmp_path / "train.tsv").write_text("a b\tx y\nb a\ty x\n")
    (tmp_path / "valid.tsv").write_text("a b\tfoo bar\nb a\tbaz qux\n")
    data = TranslationDataModule(tmp_path / "train.tsv", tmp_path / "valid.tsv", max_sentences=2, shuffle=False)
    data.setup("fit")
    torch.manual_seed(0)
    model = Seq2Seq(data.src_vocab, data.tgt_vocab, embedding_dim=8, hidden_size=16, val_bleu=True)
    with torch.no_grad():  # a model that says <unk>, which must not match the references' unknown words
        model.generator.bias[data.tgt_vocab.unk_index] = 50.0
    metrics = _trainer().validate(model, data, verbose=False)[0]
    hyps = [" ".join(h[0].tokens) for h in model.translate(["a b", "b a"])]
    assert all("<unk>" in h for h in hyps)
    assert metrics["val_bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [["foo bar", "baz qux"]]).score) == 0.0
    assert metrics["val_bleu_tok"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [["foo bar", "baz qux"]], tokenize="none").score) == 0.0
    assert sacrebleu.corpus_bleu(hyps, [["<unk> <unk>", "<unk> <unk>"]]).score > 0  # what decoded ids would give
