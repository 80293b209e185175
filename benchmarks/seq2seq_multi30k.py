"""Seq2seq on Multi30k de->en, set up like the peer benchmarks in ../shared/bench.

Same model as JoeyNMT/OpenNMT-py there: word vocabularies (min_freq 2) over text lowercased
and split with ``re.findall(r"\\w+|[^\\w\\s]")`` (as prep_multi30k.py does), embeddings 256,
1-layer biGRU encoder 256 per direction, 1-layer GRU decoder 512 started from the encoder's
final states (no bridge), Bahdanau attention, dropout 0.2, 64 sentences per batch, Adam 1e-3,
gradient clipping 5.  Prints one JSON line.

    python benchmarks/seq2seq_multi30k.py train-speed [--variant bahdanau|luong-fused]
    python benchmarks/seq2seq_multi30k.py decode-speed      # 1 epoch, then beam-5 test2016
    python benchmarks/seq2seq_multi30k.py decode-speed --ckpt best.ckpt  # beam-5 with trained weights
    python benchmarks/seq2seq_multi30k.py timed-bleu --minutes 25
    python benchmarks/seq2seq_multi30k.py timed-bleu --minutes 25 --subwords bpe --vocab-size 8000 --select val_bleu

train-speed: target tokens (EOS included, padding not) per second over updates 51-250.
decode-speed: beam 5, max length 50, GNMT length penalty alpha 1, batches of 64, test2016;
generation time only, in float32 and again with bfloat16 matrix products (``*_bf16``), each
with exact, heuristic and first stopping (``*_heuristic``, ``*_first``; first is OpenNMT-py's rule);
then the float32 ceilings: the matrix products' GFLOP and the sentences/s if they ran at this
machine's measured float32 product speed and nothing else took time (``matmul_*``,
``decode_sents_per_s_ceiling*``).
timed-bleu: train for --minutes of wall-clock time from process start (data loading
included), validating each epoch; the epoch with the best validation loss (or, with
--select val_bleu, greedy validation BLEU) translates test2016 (beam 5 as above).
The headline ``bleu_detok`` is standard sacreBLEU (13a, cased) of the detokenized output
against the raw references (``bleu_detok_lc``, lowercased, for a lowercased model);
``bleu_tok`` beside it is sacreBLEU with tokenize="none" on the lowercased text split the
peers' way (their metric).  ``--subwords bpe|unigram --vocab-size N`` trains a joint
SentencePiece model on the cased training text instead of the word vocabularies (the
output is then detokenized by SentencePiece, and split the peers' way for ``bleu_tok``);
``unk_outputs`` counts ``<unk>`` in the test translations.  Peak RSS is the process's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import tempfile
import time
from pathlib import Path

START = time.time()  # the timed-bleu budget counts from process start, as the peers' does

import pytorch_lightning as pl  # noqa: E402
import sacrebleu  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from seqlearn import Seq2Seq  # noqa: E402
from seqlearn.datamodules import TranslationDataModule  # noqa: E402
from seqlearn.tokenizers import get_tokenizer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"
TOKEN = re.compile(r"\w+|[^\w\s]")


class PeerTokenizer:
    """The peers' preprocessing: lowercase, then words and single punctuation marks
    (``cased=True`` keeps the case, for a model scored by standard cased sacreBLEU)."""

    def __init__(self, cased: bool = False):
        self.cased = cased

    def tokenize(self, text: str) -> list[str]:
        text = text.strip()
        return TOKEN.findall(text if self.cased else text.lower())

    def tokenize_batch(self, texts):
        return [self.tokenize(t) for t in texts]

    def detokenize(self, tokens):
        return " ".join(tokens)

    def cache_identity(self) -> str:
        """What the corpus cache keys this tokenizer by (see seqlearn.corpus_cache)."""
        return f"{TOKEN.pattern} cased={self.cased}"


VARIANTS = {
    "bahdanau": {"decoder": "bahdanau", "attention": "bahdanau"},
    "luong-fused": {"decoder": "luong", "attention": "luong-general", "decoder_options": {"input_feeding": False}},
}


def data_module(data: Path, seed: int = 0, cased: bool = False, subwords: str | None = None,
                vocab_size: int = 8000) -> TranslationDataModule:
    splits = [(data / f"{split}.de.gz", data / f"{split}.en.gz") for split in ("train", "val", "test2016")]
    if subwords:  # SentencePiece on the raw (cased) text, one joint model
        vocabulary = dict(subwords=subwords, vocab_size=vocab_size, joint=True)
    else:
        tok = PeerTokenizer(cased)
        vocabulary = dict(src_tokenizer=tok, tgt_tokenizer=tok, min_freq=2)
    dm = TranslationDataModule(*splits, max_tokens=None, max_sentences=64, seed=seed, **vocabulary)
    dm.setup("fit")
    return dm


def build_model(dm: TranslationDataModule, variant: str, **overrides) -> Seq2Seq:
    options = dict(
        cell="gru", embedding_dim=256, hidden_size=512, encoder_hidden_size=256, bidirectional=True,
        encoder_layers=1, dropout=0.2, bridge=False, optimizer="adam", lr=1e-3, val_bleu=False,
    )  # fmt: skip
    options.update(VARIANTS[variant])
    if not isinstance(dm.src_tokenizer, PeerTokenizer):  # subwords: the model reads and writes text with them
        options.update(src_tokenizer=dm.src_tokenizer, tgt_tokenizer=dm.tgt_tokenizer)
    options.update(overrides)
    return Seq2Seq(dm.src_vocab, dm.tgt_vocab, **options)


class StepClock(pl.Callback):
    """Wall-clock time and target tokens of every training update."""

    def __init__(self):
        self.times: list[float] = []
        self.tokens: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter())
        self.tokens.append(int((batch.tgt.lengths - 1).sum()))

    def throughput(self, lo: int, hi: int) -> float:
        """Target tokens per second over updates (lo, hi]."""
        return sum(self.tokens[lo:hi]) / (self.times[hi - 1] - self.times[lo - 1])


def trainer(**kw) -> pl.Trainer:
    options = dict(
        accelerator="auto", devices=1, gradient_clip_val=5.0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    return pl.Trainer(**{**options, **kw})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: the peers' decoding setup (max length 50 words, then </s>)
SEARCH = dict(beam_size=5, max_length=51, length_penalty="gnmt", alpha=1.0, batch_size=64)


def test_figures(model: Seq2Seq, dm: TranslationDataModule, precision: str = "32",
             stopping: str = "exact") -> dict[str, float]:
    """Beam-5 translations of test2016: BLEU on lowercased tokens (the peers' metric),
    standard sacreBLEU (13a) of the detokenized output against the raw references
    (``bleu_detok``; ``bleu_detok_lc``, lowercased, for a lowercased model), sentences/s of
    generation and mean length."""
    test = dm.split("test")
    model.eval()
    t0 = time.perf_counter()
    hyps = model.translate([ex.src for ex in test], precision=precision, stopping=stopping, **SEARCH)
    seconds = time.perf_counter() - t0
    if isinstance(dm.tgt_tokenizer, PeerTokenizer):
        cased = dm.tgt_tokenizer.cased
        texts = [get_tokenizer("nltk:treebank").detokenize(h[0].tokens) for h in hyps]
        outputs = [" ".join(h[0].tokens).lower() for h in hyps]
        refs = [" ".join(ex.tgt).lower() for ex in test]
    else:  # subword pieces: SentencePiece's text, split the peers' way for their metric
        cased, peers = True, PeerTokenizer()
        texts = [h[0].text for h in hyps]
        outputs = [" ".join(peers.tokenize(t)) for t in texts]
        refs = [" ".join(peers.tokenize(ex.tgt_text)) for ex in test]
    return {
        "bleu_detok" if cased else "bleu_detok_lc": sacrebleu.corpus_bleu(
            texts, [[ex.tgt_text for ex in test]], lowercase=not cased).score,
        "bleu_tok": sacrebleu.corpus_bleu(outputs, [refs], tokenize="none").score,
        "unk_outputs": sum(h[0].tokens.count("<unk>") for h in hyps),
        "decode_sents_per_s": len(test) / seconds,
        "mean_hyp_len": sum(len(h[0].tokens) for h in hyps) / len(hyps),
    }


def decode_figures(model: Seq2Seq, dm: TranslationDataModule) -> dict[str, float]:
    """:func:`test_figures` in float32, then with bfloat16 matrix products (``*_bf16``:
    ``translate(precision="bf16")``), each with exact, heuristic and first stopping
    (``*_heuristic``, ``*_first``; see :func:`seqlearn.search.beam_search`)."""
    out = {}
    for precision in ("32", "bf16"):
        for stopping in ("exact", "heuristic", "first"):
            suffix = ("" if precision == "32" else "_bf16") + ("" if stopping == "exact" else f"_{stopping}")
            figures = test_figures(model, dm, precision=precision, stopping=stopping)
            out.update({k + suffix: round(v, 2) for k, v in figures.items()})
    return out


def matmul_floor(model: Seq2Seq, dm: TranslationDataModule) -> dict[str, float]:
    """How fast float32 beam search could be at best: the floating-point operations of its
    matrix products (counted by ``FlopCounterMode`` over one decoding of test2016, with
    exact and with first stopping), and the sentences/s if they ran at this machine's
    float32 speed for a product of the generator's shape (beam 5 x 64 sentences), measured
    here, and nothing else (attention energies, softmax, top-k, bookkeeping) took any time."""
    weight = model.generator.weight.detach()
    rows = torch.randn(320, weight.size(1))
    for _ in range(5):
        rows @ weight.t()
    t0 = time.perf_counter()
    for _ in range(40):
        rows @ weight.t()
    gflops_per_s = 2 * rows.numel() * weight.size(0) * 40 / (time.perf_counter() - t0) / 1e9
    out = {"matmul_gflop_per_s": round(gflops_per_s, 1)}
    test = dm.split("test")
    for stopping in ("exact", "first"):
        counter = FlopCounterMode(display=False)
        with counter:
            model.translate([ex.src for ex in test], stopping=stopping, **SEARCH)
        gflop = counter.get_total_flops() / 1e9
        suffix = "" if stopping == "exact" else f"_{stopping}"
        out[f"matmul_gflop{suffix}"] = round(gflop, 1)
        out[f"decode_sents_per_s_ceiling{suffix}"] = round(len(test) * gflops_per_s / gflop, 1)
    return out


def psi() -> str | None:
    try:
        return open("/proc/pressure/cpu").readline().strip()
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train-speed", "decode-speed", "timed-bleu"])
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="bahdanau")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--measure", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--cased", action="store_true", help="keep the case (BLEU on tokens is still lowercased)")
    ap.add_argument("--subwords", choices=["bpe", "unigram"], help="a joint SentencePiece model instead of words")
    ap.add_argument("--vocab-size", type=int, default=8000, help="with --subwords")
    ap.add_argument("--lr-scheduler", default="none", help="Seq2Seq lr_scheduler, e.g. plateau (on val_loss)")
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--ckpt", type=Path, help="decode-speed: decode with these weights instead of training an epoch")
    ap.add_argument("--select", choices=["val_loss", "val_bleu"], default="val_loss",
                    help="timed-bleu: the epoch that translates test2016 has the best of this (val_bleu: greedy)")
    ap.add_argument("--seed", type=int, default=0, help="weights, dropout and batch order")
    ap.add_argument("--keep-last", type=int, default=0,
                    help="timed-bleu: also keep the last K epochs' weights (for checkpoint averaging)")
    ap.add_argument("--out", type=Path, help="timed-bleu: folder for the checkpoints (default: a temporary one)")
    args = ap.parse_args()
    if not args.data.is_dir():
        ap.error(f"{args.data} not found: pass --data path/to/multi30k")
    pl.seed_everything(args.seed, verbose=False)
    result = {"bench": f"seq2seq_multi30k_{args.mode}", "variant": args.variant, "threads": torch.get_num_threads(),
              "psi_before": psi()}
    dm = data_module(args.data, seed=args.seed, cased=args.cased, subwords=args.subwords, vocab_size=args.vocab_size)
    model = build_model(dm, args.variant, label_smoothing=args.label_smoothing, dropout=args.dropout,
                        lr_scheduler=args.lr_scheduler, lr_patience=0, val_bleu=args.select == "val_bleu")
    result["options"] = {"label_smoothing": args.label_smoothing, "dropout": args.dropout,
                         "lr_scheduler": args.lr_scheduler, "precision": args.precision,
                         "cased": args.cased or bool(args.subwords), "select": args.select,
                         "subwords": args.subwords, "vocab_size": len(dm.tgt_vocab), "seed": args.seed}
    result["parameters"] = sum(p.numel() for p in model.parameters())
    clock = StepClock()
    if args.mode == "train-speed":
        steps = args.warmup + args.measure
        trainer(max_steps=steps, callbacks=[clock], precision=args.precision).fit(model, dm)
        result["target_tokens_per_s"] = round(clock.throughput(args.warmup, steps), 1)
    elif args.mode == "decode-speed":
        if args.ckpt:
            model.load_state_dict(torch.load(args.ckpt, weights_only=True)["state_dict"])
            result["ckpt"] = str(args.ckpt)
        else:
            trainer(max_epochs=1, callbacks=[clock], precision=args.precision).fit(model, dm)
            result["updates"] = len(clock.times)
        result.update(decode_figures(model, dm))
        result.update(matmul_floor(model, dm))
    else:
        # validation after every epoch; the best epoch's weights translate the test set
        folder = args.out or Path(tempfile.mkdtemp())
        best = ModelCheckpoint(dirpath=folder, monitor=args.select, mode="min" if args.select == "val_loss"
                               else "max", save_top_k=1, save_weights_only=True, filename="best-{epoch}")
        last = [ModelCheckpoint(dirpath=folder, monitor="epoch", mode="max", save_top_k=args.keep_last,
                                save_weights_only=True, filename="last-{epoch}")] if args.keep_last else []
        budget = args.minutes * 60 - (time.time() - START)
        trainer(max_time={"seconds": budget}, max_epochs=-1, callbacks=[clock, best, *last], precision=args.precision,
                enable_checkpointing=True, limit_val_batches=None).fit(model, dm)
        model.load_state_dict(torch.load(best.best_model_path, weights_only=True)["state_dict"])
        result.update({f"best_epoch_{args.select}": round(float(best.best_model_score), 4),
                       "best_checkpoint": best.best_model_path,
                       "last_checkpoints": sorted(last[0].best_k_models) if last else []})
        result.update(updates=len(clock.times),
                      train_tokens_per_s=round(sum(clock.tokens) / (clock.times[-1] - clock.times[0]), 1))
        result.update(decode_figures(model, dm))
    result.update(peak_rss_mb=round(peak_rss_mb(), 1), psi_after=psi(), wall_s=round(time.time() - START, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
