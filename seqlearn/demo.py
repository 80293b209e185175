"""The quickstart job (``make demo``, or ``python -m seqlearn.demo``).

Trains a small GRU encoder-decoder with Bahdanau attention on the embedded default task
(English number and date expressions -> German words, see :mod:`seqlearn.default_task`),
then translates the test split with beam search and prints exact match, BLEU
(sacrebleu, detokenized) and a few translations, and writes an alignment plot and the
checkpoint to ``--out``.  Needs no network and no data files.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import sacrebleu
import torch

from .datamodules import TranslationDataModule
from .notices import quiet_third_party_notices
from .seq2seq import Seq2Seq


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlearn.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="artifacts/demo", help="folder for the checkpoint and the plot")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=150.0, help="training time budget")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quiet_third_party_notices()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    pl.seed_everything(args.seed, verbose=False)
    data = TranslationDataModule("default", max_tokens=512, seed=args.seed)
    data.setup("fit")
    print(f"default task: {len(data.split('train'))} training pairs, vocabularies "
          f"{len(data.src_vocab)} (en) / {len(data.tgt_vocab)} (de)")
    model = Seq2Seq(data.src_vocab, data.tgt_vocab, cell="gru", attention="bahdanau", decoder="bahdanau",
                    embedding_dim=64, hidden_size=128, dropout=0.1, lr=3e-3)
    trainer = pl.Trainer(
        max_epochs=args.epochs, max_time={"seconds": args.max_seconds}, gradient_clip_val=1.0,
        logger=False, enable_checkpointing=False, enable_model_summary=False, default_root_dir=out,
        accelerator="auto", devices=1,
    )  # fmt: skip
    trainer.fit(model, data)
    trained = time.perf_counter() - start
    ckpt = out / "demo.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=False)  # with the optimizer state: training can resume from it

    model.eval()
    test = data.split("test")
    hyps = model.translate([ex.src for ex in test], beam_size=args.beam_size, return_attention=True)
    best = [h[0] for h in hyps]
    exact = sum(h.tokens == ex.tgt for h, ex in zip(best, test)) / len(test)
    bleu = sacrebleu.corpus_bleu([" ".join(h.tokens) for h in best], [[ex.tgt_text for ex in test]])
    total = time.perf_counter() - start

    print(f"\ntrained {trainer.current_epoch} epochs ({trainer.global_step} updates) in {trained:.0f} s")
    print(f"test split, {len(test)} sentences, beam {args.beam_size}: exact match {100 * exact:.1f}%, "
          f"BLEU {bleu.score:.2f}")
    print("\nsome translations (source => output | reference):")
    for h, ex in list(zip(best, test))[:5]:
        mark = "ok " if h.tokens == ex.tgt else "ERR"
        print(f"  [{mark}] {ex.src_text}  =>  {' '.join(h.tokens)}  |  {ex.tgt_text}")

    # the example with the most source tokens shows reordering best
    i = max(range(len(test)), key=lambda k: len(test[k].src))
    plot = out / "alignment.png"
    try:
        from .widgets import show_attention

        show_attention([hyps[i]], [test[i].src]).save(plot)
        print(f"\nalignment plot of {test[i].src_text!r}: {plot}")
    except ImportError as err:  # the notebook extra is not installed
        print(f"\nno alignment plot ({err})")
    print(f"checkpoint: {ckpt}  (seqlearn translate --ckpt {ckpt} < sentences.txt)")
    print(f"total time {total:.0f} s, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
