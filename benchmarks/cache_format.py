"""The corpus cache's format, measured: flat numpy arrays (what seqlearn.corpus_cache writes)
against an Arrow IPC file with a list<uint16> column (what Hugging Face ``datasets`` keeps).

    python benchmarks/cache_format.py [--pairs 464000]   # needs pyarrow, which seqlearn does not

Synthetic ids (15-39 a sentence, one side) for ``--pairs`` sentences; both stores are
memory-mapped.  Prints one JSON object: seconds to write each, seconds and RSS (MB) to
open each and read its length index, and microseconds to gather a padded batch of 64
random sentences (the same arrays from both, checked).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def padded(lengths: np.ndarray, offsets: np.ndarray, tokens: np.ndarray, idx: np.ndarray) -> np.ndarray:
    lens = lengths[idx].astype(np.int64)
    cols = np.arange(int(lens.max()))
    inside = cols < lens[:, None]
    ids = np.zeros((len(idx), len(cols)), np.int64)
    ids[inside] = tokens[(offsets[idx][:, None] + cols)[inside]]
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=464_000)
    args = parser.parse_args()
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401
    except ImportError:
        sys.exit("pyarrow is not installed (pip install pyarrow in a throwaway environment)")
    rng = np.random.default_rng(0)
    lengths = rng.integers(15, 40, args.pairs).astype(np.int32)
    offsets = np.zeros(args.pairs + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = rng.integers(4, 8000, int(offsets[-1])).astype(np.uint16)
    folder = Path(tempfile.mkdtemp())
    out: dict[str, float] = {}

    start = time.perf_counter()
    for name, array in (("tokens", tokens), ("offsets", offsets), ("lengths", lengths)):
        array.tofile(folder / f"side.{name}")
    out["numpy_write_s"] = time.perf_counter() - start
    table = pa.table({"src": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(tokens))})
    start = time.perf_counter()
    with pa.OSFile(str(folder / "side.arrow"), "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table, max_chunksize=1000)
    out["arrow_write_s"] = time.perf_counter() - start
    del table

    base, start = rss_mb(), time.perf_counter()
    maps = [np.memmap(folder / f"side.{n}", t, "r") for n, t in (("lengths", np.int32), ("offsets", np.int64),
                                                                    ("tokens", np.uint16))]  # fmt: skip
    np.asarray(maps[0]) + 1  # the length index batching sorts by
    out["numpy_open_s"], out["numpy_open_rss_mb"] = time.perf_counter() - start, rss_mb() - base
    base, start = rss_mb(), time.perf_counter()
    column = pa.ipc.open_file(pa.memory_map(str(folder / "side.arrow"))).read_all().column("src")
    np.concatenate([pa.compute.list_value_length(c).to_numpy() for c in column.chunks]) + 1
    out["arrow_open_s"], out["arrow_open_rss_mb"] = time.perf_counter() - start, rss_mb() - base

    def arrow_padded(idx: np.ndarray) -> np.ndarray:
        sub = column.take(pa.array(idx)).combine_chunks()
        offs = sub.offsets.to_numpy()
        return padded(np.diff(offs), offs[:-1], sub.values.to_numpy(), np.arange(len(idx)))

    batches = [rng.integers(0, args.pairs, 64) for _ in range(1000)]
    assert all((padded(*maps, b) == arrow_padded(b)).all() for b in batches[:20])
    for name, gather in (("numpy", lambda b: padded(*maps, b)), ("arrow", arrow_padded)):
        start = time.perf_counter()
        for b in batches:
            gather(b)
        out[f"{name}_batch_us"] = (time.perf_counter() - start) / len(batches) * 1e6
    print(json.dumps({"benchmark": "cache_format", "pairs": args.pairs, **{k: round(v, 4) for k, v in out.items()}}))


if __name__ == "__main__":
    main()
