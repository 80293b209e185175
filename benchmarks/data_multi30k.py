"""Multi30k data pipeline: read train.{de,en}.gz with spaCy tokenizers, build both vocabularies.

    .venv/bin/python benchmarks/data_multi30k.py [--data ../shared/data/multi30k]

Prints one JSON object: seconds for reading + tokenizing (building the spaCy tokenizers
included) and for building the vocabularies, the pair count and the vocabulary sizes.
The target is under 20 s in total.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seqlearn.readers import read_parallel
from seqlearn.tokenizers import get_tokenizer
from seqlearn.vocab import Vocab

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "multi30k",
                        help="folder holding train.de.gz and train.en.gz")
    args = parser.parse_args()
    if not (args.data / "train.de.gz").is_file():
        parser.error(f"{args.data} has no train.de.gz (pass --data)")

    start = time.perf_counter()
    src_tok, tgt_tok = get_tokenizer("spacy:de"), get_tokenizer("spacy:en")
    pairs = read_parallel(args.data / "train.de.gz", args.data / "train.en.gz",
                          src_tokenizer=src_tok, tgt_tokenizer=tgt_tok)
    read_s = time.perf_counter() - start

    start = time.perf_counter()
    src_vocab = Vocab.build((p.src for p in pairs), min_freq=2)
    tgt_vocab = Vocab.build((p.tgt for p in pairs), min_freq=2)
    vocab_s = time.perf_counter() - start

    print(json.dumps({
        "benchmark": "data_multi30k",
        "read_tokenize_s": round(read_s, 3),
        "vocab_s": round(vocab_s, 3),
        "total_s": round(read_s + vocab_s, 3),
        "pairs": len(pairs),
        "src_vocab": len(src_vocab),
        "tgt_vocab": len(tgt_vocab),
    }))


if __name__ == "__main__":
    main()
