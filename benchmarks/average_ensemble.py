"""Checkpoint averaging and seed ensembles on Multi30k de->en (issue 16): test2016 BLEU of the
best single checkpoint of each run, of the average of a run's last epochs, and of the
ensemble of the runs' best checkpoints.  Prints one JSON line.

The runs are ``seq2seq_multi30k.py timed-bleu`` runs of one configuration with different
seeds, each keeping its last epochs (``--keep-last 3 --out RUN``)::

    python benchmarks/seq2seq_multi30k.py timed-bleu --minutes 25 --subwords bpe --vocab-size 8000 \\
        --select val_bleu --label-smoothing 0.1 --dropout 0.3 --lr-scheduler plateau \\
        --precision bf16-mixed --keep-last 3 --seed 0 --out runs/s0      # and --seed 1 --out runs/s1
    python benchmarks/average_ensemble.py runs/s0 runs/s1 --subwords bpe --vocab-size 8000

Each figure is :func:`seq2seq_multi30k.test_figures` (beam 5, the peers' settings): ``bleu_detok``
is standard cased sacreBLEU of the detokenized output.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

import seq2seq_multi30k as bench
from seqlearn import Ensemble, Seq2Seq
from seqlearn.averaging import average_checkpoints


def epoch_of(path: Path) -> int:
    return int(re.search(r"epoch=(\d+)", path.name).group(1))


def figures(model, dm) -> dict[str, float]:
    return {k: round(v, 2) for k, v in bench.test_figures(model, dm).items() if k in ("bleu_detok", "bleu_tok")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+", help="timed-bleu --out folders (best-*.ckpt, last-*.ckpt)")
    ap.add_argument("--data", type=Path, default=bench.DATA)
    ap.add_argument("--cased", action="store_true")
    ap.add_argument("--subwords", choices=["bpe", "unigram"])
    ap.add_argument("--vocab-size", type=int, default=8000)
    args = ap.parse_args()
    t0 = time.time()
    dm = bench.data_module(args.data, cased=args.cased, subwords=args.subwords, vocab_size=args.vocab_size)
    result: dict = {"bench": "average_ensemble_multi30k", "threads": torch.get_num_threads(), "runs": []}
    best = []
    for run in args.runs:
        best_path = next(run.glob("best-*.ckpt"))
        last = sorted(run.glob("last-*.ckpt"), key=epoch_of)
        model = Seq2Seq.load_from_checkpoint(best_path, map_location="cpu")
        best.append(model)
        entry = {"run": str(run), "best": best_path.name, "best_single": figures(model, dm)}
        if len(last) > 1:
            entry["averaged"] = [p.name for p in last]
            entry["average_of_last"] = figures(average_checkpoints(last), dm)
        result["runs"].append(entry)
    if len(best) > 1:
        result["ensemble_of_best"] = figures(Ensemble(best, names=[str(r) for r in args.runs]), dm)
    result["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
