"""Data preparation at scale: subword corpora prepared once into the memory-mapped cache.

    .venv/bin/python benchmarks/data_scale.py [--pairs 116000 464000 4600000] [--sample-size 2000000]
        [--vocab-size 8000] [--word-level-max 464000] [--work DIR] [--data ../shared/data/multi30k]

For each N, generates N pairs by joining two random Multi30k training sentences per line
(the same two on both sides; about 25 tokens a side, like WMT), written as plain
``train.de``/``train.en`` under ``--work`` (kept, and reused by a later run), and measures,
each step in a fresh process so that its peak RSS is its own:

- ``prepare``: the first preparation with ``subwords="bpe"``, ``joint=True``: SentencePiece
  training on a seeded sample of ``--sample-size`` sentences, encoding on all cores,
  writing; its seconds, the peak RSS of the main process and of the largest worker;
- ``setup``: ``setup("fit")`` of a new data module on the prepared cache, its seconds and
  the RSS after it above the RSS of a process that has only imported
  ``seqlearn.datamodules`` (torch and Lightning loaded, no data): ``baseline_rss_gb``;
- ``epoch``: one epoch of training batches (``max_tokens=4096``) iterated in that process:
  seconds, batches, target tokens and tokens per second;
- ``word_in_memory``: up to ``--word-level-max`` pairs, today's word-level path held in
  Python lists (``read_parallel`` with spaCy de/en, lowercase, min_freq 2, one core, then
  the data module's ``setup``): seconds, peak RSS and RSS above the baseline;
- ``word_cached``: the same word-level options through the cache (spaCy on all cores).
- ``onmt_build_vocab``: OpenNMT-py's ``onmt_build_vocab -n_sample -1`` on the same files,
  from the peers' environment of ../shared/bench/setup_peers.sh (``$PEERS_DIR/onmt``,
  default ``~/.cache/seqlearn-peers/onmt``); skipped with a message when it is missing.

Prints one JSON object with a row per N.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GB = 1 << 30


def rss_gb() -> float:
    """This process's resident memory now."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb * 1024 / GB


def peak_gb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss * 1024 / GB


def make_corpus(data: Path, pairs: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """``pairs`` lines, each two random Multi30k training sentences joined, on both sides."""
    src, tgt = folder / "train.de", folder / "train.en"
    if src.exists() and tgt.exists():
        return src, tgt
    sides = []
    for lang in ("de", "en"):
        with gzip.open(data / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            sides.append([line.strip() for line in f])
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    src_tmp, tgt_tmp = folder / "train.de.tmp", folder / "train.en.tmp"
    with open(src_tmp, "w", encoding="utf-8") as fs, open(tgt_tmp, "w", encoding="utf-8") as ft:
        for _ in range(pairs):
            i, j = rng.randrange(len(sides[0])), rng.randrange(len(sides[0]))
            fs.write(f"{sides[0][i]} {sides[0][j]}\n")
            ft.write(f"{sides[1][i]} {sides[1][j]}\n")
    src_tmp.rename(src)
    tgt_tmp.rename(tgt)
    return src, tgt


# -- the measurements, each run in its own process ------------------------------------------------
def subword_module(args: argparse.Namespace) -> Any:
    from seqlearn.datamodules import TranslationDataModule

    return TranslationDataModule((args.src, args.tgt), subwords="bpe", vocab_size=args.vocab_size, joint=True,
                                 subword_sample_size=args.sample_size, cache_dir=args.cache, max_tokens=4096)  # fmt: skip


def measure_prepare(args: argparse.Namespace) -> dict[str, Any]:
    import seqlearn.datamodules  # noqa: F401 -- imports are not preparation

    start = time.perf_counter()
    subword_module(args).prepare_data()
    return {"prepare_s": time.perf_counter() - start, "prepare_peak_rss_gb": peak_gb(),
            "prepare_worker_peak_rss_gb": peak_gb(resource.RUSAGE_CHILDREN)}  # fmt: skip


def measure_setup(args: argparse.Namespace) -> dict[str, Any]:
    import seqlearn.datamodules  # noqa: F401 -- the baseline: torch and Lightning loaded

    baseline = rss_gb()
    start = time.perf_counter()
    data = subword_module(args)
    data.setup("fit")
    setup_s = time.perf_counter() - start
    above = rss_gb() - baseline
    start = time.perf_counter()
    batches = tokens = 0
    for batch in data.train_dataloader():
        batches += 1
        tokens += int(batch.tgt.lengths.sum())
    epoch_s = time.perf_counter() - start
    return {"baseline_rss_gb": baseline, "setup_s": setup_s, "setup_rss_above_baseline_gb": above,
            "epoch_s": epoch_s, "epoch_batches": batches, "epoch_tgt_tokens": tokens,
            "epoch_tokens_per_s": tokens / epoch_s, "vocab_size": len(data.src_vocab)}  # fmt: skip


def measure_word_in_memory(args: argparse.Namespace) -> dict[str, Any]:
    from seqlearn.datamodules import TranslationDataModule
    from seqlearn.readers import read_parallel

    baseline = rss_gb()
    start = time.perf_counter()
    examples = read_parallel(args.src, args.tgt, src_tokenizer="spacy:de", tgt_tokenizer="spacy:en", lowercase=True)
    data = TranslationDataModule(examples, min_freq=2, max_tokens=4096)
    data.setup("fit")
    return {"word_in_memory_s": time.perf_counter() - start, "word_in_memory_peak_rss_gb": peak_gb(),
            "word_in_memory_rss_above_baseline_gb": rss_gb() - baseline}  # fmt: skip


def measure_word_cached(args: argparse.Namespace) -> dict[str, Any]:
    from seqlearn.datamodules import TranslationDataModule

    start = time.perf_counter()  # spaCy's import and pipelines count, as in the in-memory path
    TranslationDataModule((args.src, args.tgt), src_tokenizer="spacy:de", tgt_tokenizer="spacy:en", lowercase=True,
                          min_freq=2, cache_dir=args.cache).prepare_data()  # fmt: skip
    return {"word_cached_prepare_s": time.perf_counter() - start, "word_cached_peak_rss_gb": peak_gb(),
            "word_cached_worker_peak_rss_gb": peak_gb(resource.RUSAGE_CHILDREN)}  # fmt: skip


def measure_onmt(args: argparse.Namespace) -> dict[str, Any]:
    """OpenNMT-py's vocabulary step on the same files, from the peers' environment (its
    peak RSS is this process's only child's)."""
    peers = Path(os.environ.get("PEERS_DIR", Path.home() / ".cache" / "seqlearn-peers"))
    exe = peers / "onmt" / "bin" / "onmt_build_vocab"
    if not exe.exists():
        return {"onmt_build_vocab": f"skipped: {exe} not found (bash ../shared/bench/setup_peers.sh onmt)"}
    work = args.cache.parent / "onmt"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "onmt_vocab.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "save_data": str(work / "onmt"), "src_vocab": str(work / "vocab.src"), "tgt_vocab": str(work / "vocab.tgt"),
        "overwrite": True, "data": {"corpus_1": {"path_src": str(args.src), "path_tgt": str(args.tgt)}},
    }))  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run([str(exe), "-config", str(config), "-n_sample", "-1", "-num_threads", str(os.cpu_count())],
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"onmt_build_vocab": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return {"onmt_build_vocab_s": seconds, "onmt_build_vocab_peak_rss_gb": peak_gb(resource.RUSAGE_CHILDREN)}


MEASURES = {"prepare": measure_prepare, "setup": measure_setup, "word_in_memory": measure_word_in_memory,
            "word_cached": measure_word_cached, "onmt": measure_onmt}  # fmt: skip


def run_measure(name: str, src: Path, tgt: Path, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", name, "--src", str(src), "--tgt", str(tgt), "--cache", str(cache),
           "--sample-size", str(args.sample_size), "--vocab-size", str(args.vocab_size)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {f"{name}_error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[116_000, 464_000, 4_600_000])
    parser.add_argument("--sample-size", type=int, default=2_000_000,
                        help="sentences SentencePiece trains on (subword_sample_size)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--word-level-max", type=int, default=464_000,
                        help="largest N at which to run the word-level paths (the in-memory one needs ~22 GB at 4.6M)")
    parser.add_argument("--work", type=Path, default=None, help="corpora and caches (default: a temporary folder)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "multi30k")
    parser.add_argument("--keep-cache", action="store_true", help="keep the prepared caches under --work")
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tgt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASURES[args.measure](args)))
        return
    if not (args.data / "train.de.gz").is_file():
        parser.error(f"{args.data} has no train.de.gz (pass --data)")
    work = args.work or Path(tempfile.mkdtemp(prefix="seqlearn-data-scale-"))
    rows = []
    for pairs in args.pairs:
        folder = work / f"pairs-{pairs}"
        src, tgt = make_corpus(args.data, pairs, folder)
        cache = folder / "cache"
        shutil.rmtree(cache, ignore_errors=True)  # a first preparation
        row: dict[str, Any] = {"pairs": pairs, "sample_size": args.sample_size, "cores": os.cpu_count()}
        word_level = ("word_in_memory", "word_cached") if pairs <= args.word_level_max else ()
        for name in ("prepare", "setup", *word_level, "onmt"):
            row.update(run_measure(name, src, tgt, cache, args))
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
        rows.append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    print(json.dumps({"benchmark": "data_scale", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
