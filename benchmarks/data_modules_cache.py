"""Where the corpus cache helps the other data modules: ``setup("fit")`` with and without
``cache_dir`` for the language-model and classifier data modules, and the in-memory
tagging data module on CoNLL-2003 (which has no cache: this measures why).

    .venv/bin/python benchmarks/data_modules_cache.py [--lines 116000 464000] [--work DIR]
        [--data ../shared/data]

The language-model and classifier corpora are generated as in ``benchmarks/data_scale.py``
(each line two random Multi30k English training sentences, about 25 tokens; the classifier
file labels each line ``long``/``short`` plus a random ``a``/``b``/``c``); tagging reads
CoNLL-2003 ``train.txt`` (IOB2) from ``--data``.  Each measurement runs in a fresh process:

- ``memory``: today's in-memory path (``cache_dir=None``);
- ``prepare``: the first run with ``cache_dir`` (``prepare_data`` then ``setup``, an empty cache);
- ``cached``: a later run mapping the cache (not for tagging).

and reports ``setup_s`` (constructor, ``prepare_data`` where called, ``setup("fit")``),
``rss_above_import_mb`` (RSS after setup above the RSS after importing the data modules:
torch and Lightning loaded), the process's peak RSS, and one epoch of training batches
(``epoch_s``).  Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from data_scale import REPO, make_corpus, peak_gb, rss_gb

MODULES = ("lm", "cls", "tag")


def measure(module: str, path: Path, cache: Path | None, prepare: bool) -> dict[str, Any]:
    import torch

    from seqlearn.classification_data import ClassificationDataModule
    from seqlearn.language_model_data import LanguageModelDataModule
    from seqlearn.tagging_data import TaggingDataModule

    torch.set_num_threads(1)
    options = {} if cache is None else {"cache_dir": cache}
    baseline = rss_gb()
    start = time.perf_counter()
    if module == "lm":
        data = LanguageModelDataModule(path, **options)
    elif module == "cls":
        data = ClassificationDataModule(path, **options)
    else:
        data = TaggingDataModule(path, scheme="BIO")
    if prepare:
        data.prepare_data()
    data.setup("fit")
    setup_s = time.perf_counter() - start
    above = rss_gb() - baseline
    start = time.perf_counter()
    batches = sum(1 for _ in data.train_dataloader())
    return {"setup_s": setup_s, "rss_above_import_mb": above * 1024, "peak_rss_mb": peak_gb() * 1024,
            "epoch_s": time.perf_counter() - start, "batches": batches}  # fmt: skip


def labeled(text: Path, out: Path) -> Path:
    if not out.exists():
        rng = random.Random(1)
        with open(text, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as tsv:
            for line in f:
                tsv.write(f"{'long' if len(line.split()) > 25 else 'short'},{rng.choice('abc')}\t{line}")
    return out


def run(module: str, path: Path, cache: Path | None, prepare: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", module, "--path", str(path)]
    cmd += ["--cache", str(cache)] + (["--prepare"] if prepare else []) if cache is not None else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return {k: round(v, 3) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[116_000, 464_000])
    parser.add_argument("--modules", nargs="+", choices=MODULES, default=list(MODULES))
    parser.add_argument("--work", type=Path, default=None, help="corpora and caches (default: a temporary folder)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--measure", choices=MODULES, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.path, args.cache, args.prepare)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="seqlearn-data-modules-cache-"))
    inputs = []
    for lines in args.lines:
        _, text = make_corpus(args.data / "multi30k", lines, work / f"lines-{lines}")
        inputs += [("lm", lines, text), ("cls", lines, labeled(text, text.with_suffix(".tsv")))]
    inputs.append(("tag", 14041, args.data / "conll2003" / "train.txt"))
    rows = []
    for module, lines, path in inputs:
        if module not in args.modules:
            continue
        row = {"module": module, "lines": lines, "memory": run(module, path, None)}
        if module != "tag":
            cache = work / f"cache-{module}-{lines}"
            shutil.rmtree(cache, ignore_errors=True)  # a first preparation
            row.update(prepare=run(module, path, cache, prepare=True), cached=run(module, path, cache))
        rows.append(row)
    print(json.dumps({"benchmark": "data_modules_cache", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
