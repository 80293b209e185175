"""Language model on the English side of Multi30k: truncated BPTT with carried state vs
independent windows of the same length, each trained for the same wall-clock budget.

    python benchmarks/language_model.py --minutes 10            # word level (spaCy tokens, lowercased)
    python benchmarks/language_model.py --minutes 10 --char     # character level

Trains on train.en.gz and evaluates on val.en.gz (``../shared/data/multi30k``).  Both runs
use the same model, data, window length (``--bptt``) and streams (``--batch-size``); they
differ only in whether each window starts from the previous window's final state
(detached: truncated BPTT) or from zeros.  Prints one JSON object: per run the validation
perplexity evaluated both ways (state carried across the validation stream, and every
window from zeros), the training tokens per second (time inside training steps:
forward, backward and optimizer step), epochs, steps and the validation curve.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from seqlearn.language_model import LanguageModel
from seqlearn.language_model_data import LanguageModelDataModule

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


class Meter(pl.Callback):
    """Training tokens and the seconds spent in training steps; validation perplexity per epoch."""

    def __init__(self):
        self.tokens, self.seconds, self.curve = 0, 0.0, []
        self.started = time.perf_counter()
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._t0
        self.tokens += batch.input.numel()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and "val_ppl" in trainer.callback_metrics:
            self.curve.append({"minutes": round((time.perf_counter() - self.started) / 60, 2),
                               "epoch": trainer.current_epoch,
                               "val_ppl": round(float(trainer.callback_metrics["val_ppl"]), 2)})


def run(dm: LanguageModelDataModule, carry_state: bool, args: argparse.Namespace) -> dict:
    pl.seed_everything(args.seed, verbose=False)
    model = LanguageModel.from_datamodule(
        dm, cell=args.cell, embedding_dim=args.dim, num_layers=args.layers, dropout=args.dropout,
        input_dropout=args.dropout / 2, tie_embeddings=True, carry_state=carry_state, optimizer="adam", lr=args.lr,
    )  # fmt: skip
    meter = Meter()
    trainer = pl.Trainer(
        max_epochs=-1, max_time={"seconds": args.minutes * 60}, gradient_clip_val=args.clip, callbacks=[meter],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, accelerator=args.accelerator,
    )  # fmt: skip
    trainer.fit(model, dm)
    valid = dm.windows("valid")
    return {
        "val_ppl_carried_state": round(model.perplexity(valid, carry_state=True), 2),
        "val_ppl_independent_windows": round(model.perplexity(valid, carry_state=False), 2),
        "train_tokens_per_s": round(meter.tokens / meter.seconds) if meter.seconds else None,
        "epochs": trainer.current_epoch, "steps": trainer.global_step, "curve": meter.curve,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each of the two runs")
    ap.add_argument("--char", action="store_true", help="character level (default: word level)")
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding train.en.gz and val.en.gz")
    ap.add_argument("--limit", type=int, default=None, help="sentences per split (for a quick try)")
    ap.add_argument("--bptt", type=int, default=None, help="window length (default 35 words, 150 characters)")
    ap.add_argument("--batch-size", type=int, default=20, help="parallel training streams")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--dim", type=int, default=256, help="embedding and hidden size")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    args = ap.parse_args()
    if not (args.data / "train.en.gz").is_file():
        ap.error(f"{args.data} has no train.en.gz (pass --data)")
    bptt = args.bptt or (150 if args.char else 35)
    dm = LanguageModelDataModule(
        args.data / "train.en.gz", args.data / "val.en.gz", tokenizer="char" if args.char else "spacy:en",
        lowercase=True, min_freq=1 if args.char else 2, limit=args.limit, batch_size=args.batch_size,
        eval_batch_size=10, bptt=bptt,
    )  # fmt: skip
    started = time.perf_counter()
    dm.setup("fit")
    read_s = time.perf_counter() - started
    runs = {"tbptt_carried_state": run(dm, True, args), "independent_windows": run(dm, False, args)}
    carried, independent = runs["tbptt_carried_state"], runs["independent_windows"]
    print(json.dumps({
        "bench": "language_model", "level": "char" if args.char else "word", "corpus": "multi30k train.en / val.en",
        "train_tokens": dm.stream("train").numel(), "val_tokens": dm.stream("valid").numel(), "vocab": len(dm.vocab),
        "read_s": round(read_s, 2), "minutes_each": args.minutes, "bptt": bptt, "batch_size": args.batch_size,
        "model": {"cell": args.cell, "dim": args.dim, "layers": args.layers, "dropout": args.dropout, "tied": True,
                  "optimizer": "adam", "lr": args.lr, "clip": args.clip},
        "threads": torch.get_num_threads(), **runs,
        # each run evaluated the way it was trained
        "carried_beats_independent": carried["val_ppl_carried_state"] < independent["val_ppl_independent_windows"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
