#!/usr/bin/env python
"""CRF speed: seqlearn.CRF vs pytorch-crf (and torch-struct when it is installed).

Same protocol as the peer baselines (``../shared/bench/peers/crf_peers.py``), so the
figures compare with ``../shared/bench/RESULTS.md``:

* shapes B x T x K (default 32x40x9, 64x100x17, 256x50x9), random emissions and tags,
  lengths uniform in [ceil(T/2), T] with one sequence of length T;
* every library gets the same CRF (pytorch-crf's randomly initialized parameters);
* ``nll_fb``: summed negative log-likelihood, forward + backward; ``viterbi``: decode to
  per-sentence tag lists under ``torch.no_grad()``;
* repetitions are interleaved (each repetition times every (library, op) once, in
  rotating order, averaging enough calls to last >= --min-rep-s); medians are reported,
  with min and quartiles because the shared cores make timings bimodal.

Before timing, the script checks that the libraries agree (NLL difference, share of
identical Viterbi paths).  ``speedup_*`` = pytorch-crf ms / seqlearn ms.

Prints ONE JSON object.  Usage:
    .venv/bin/python benchmarks/crf.py [--reps 15] [--threads 2] [--shapes 32x40x9,64x100x17,256x50x9]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch
import torchcrf

from seqlearn import CRF

try:
    import torch_struct
except ImportError:  # optional peer
    torch_struct = None


def cpu_pressure() -> str | None:
    """Linux CPU pressure: shows contention from other tenants of the cores."""
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return None


def make_case(B: int, T: int, K: int, seed: int):
    """The peers' case: emissions, tags, lengths, mask and a pytorch-crf CRF."""
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(B, T, K, generator=g)
    tags = torch.randint(0, K, (B, T), generator=g)
    lengths = torch.randint(math.ceil(T / 2), T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T).view(1, T) < lengths.view(B, 1)
    tags = tags.masked_fill(~mask, 0)
    torch.manual_seed(seed)
    return em, tags, lengths, mask, torchcrf.CRF(K, batch_first=True)


def torch_struct_potentials(em, lengths, crf):
    """torch-struct edge potentials (B, T-1, K, K) [t, next, prev] of pytorch-crf's model
    (as in the peer script)."""
    B, T, K = em.shape
    last = (torch.arange(T).view(1, T) == (lengths.view(B, 1) - 1)).to(em.dtype).unsqueeze(-1)
    em2 = em + last * crf.end_transitions.view(1, 1, K)
    lp = em2[:, 1:, :, None] + crf.transitions.t().view(1, 1, K, K)
    first = (em2[:, 0, :] + crf.start_transitions.view(1, K)).view(B, 1, K)
    return torch.cat([lp[:, :1] + first.unsqueeze(1), lp[:, 1:]], dim=1)


def torch_struct_tags(parts):
    """Argmax edge indicators (B, T-1, K, K) -> tags (B, T), vectorized (as in the peer script)."""
    t0 = parts[:, 0].sum(-2).argmax(-1)
    return torch.cat([t0.unsqueeze(1), parts.sum(-1).argmax(-1)], dim=1)


def build_cases(em0, tags, lengths, mask, ref, ours):
    """(library, op, closure) for every timed operation."""
    K = em0.shape[-1]

    def nll_fb(crf, sign):
        def run():
            em = em0.clone().requires_grad_(True)
            crf.zero_grad(set_to_none=True)
            (sign * crf(em, tags, mask, reduction="sum")).backward()
        return run

    def viterbi(crf):
        def run():
            with torch.no_grad():
                crf.decode(em0, mask)
        return run

    cases = [("seqlearn", "nll_fb", nll_fb(ours, 1.0)), ("seqlearn", "viterbi", viterbi(ours)),
             ("pytorch_crf", "nll_fb", nll_fb(ref, -1.0)), ("pytorch_crf", "viterbi", viterbi(ref))]
    if torch_struct is not None:
        chain = torch_struct.LinearChainCRF

        def ts_nll():
            em = em0.clone().requires_grad_(True)
            ref.zero_grad(set_to_none=True)
            dist = chain(torch_struct_potentials(em, lengths, ref), lengths=lengths)
            (-dist.log_prob(chain.struct.to_parts(tags, K, lengths=lengths)).sum()).backward()

        def ts_viterbi():
            with torch.no_grad():
                potentials = torch_struct_potentials(em0, lengths, ref)
            torch_struct_tags(chain(potentials, lengths=lengths).argmax.detach())

        cases += [("torch_struct", "nll_fb", ts_nll), ("torch_struct", "viterbi", ts_viterbi)]
    return cases


def agreement(em0, tags, mask, ref, ours) -> dict:
    with torch.no_grad():
        nll_ref = -ref(em0, tags, mask, reduction="none")
        nll_ours = ours(em0, tags, mask, reduction="none")
        paths_ref, paths_ours = ref.decode(em0, mask), ours.decode(em0, mask)
    return {
        "nll_max_abs_diff_vs_pytorch_crf": float((nll_ref - nll_ours).abs().max()),
        "viterbi_path_agreement_vs_pytorch_crf": sum(a == b for a, b in zip(paths_ref, paths_ours)) / len(paths_ref),
    }


def time_interleaved(cases, reps: int, min_rep_s: float) -> dict:
    inner = {}
    for lib, op, fn in cases:  # warm-up, then enough calls per repetition to last min_rep_s
        fn(), fn()
        t0 = time.perf_counter()
        fn()
        inner[lib, op] = max(1, math.ceil(min_rep_s / max(time.perf_counter() - t0, 1e-6)))
    samples = {(lib, op): [] for lib, op, _ in cases}
    for r in range(reps):
        for lib, op, fn in cases[r % len(cases):] + cases[: r % len(cases)]:
            n = inner[lib, op]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[lib, op].append((time.perf_counter() - t0) / n * 1e3)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default="32x40x9,64x100x17,256x50x9")
    ap.add_argument("--min-rep-s", type=float, default=0.05)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]

    out = {
        "bench": "crf",
        "torch": torch.__version__,
        "torchcrf": getattr(torchcrf, "__version__", "0.7.2"),
        "torch_struct": getattr(torch_struct, "__version__", "installed") if torch_struct else None,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "reps": args.reps,
        "unit": "ms_per_batch_median",
        "cpu_pressure_start": cpu_pressure(),
        "results": [],
    }
    for B, T, K in shapes:
        em0, tags, lengths, mask, ref = make_case(B, T, K, seed=1234 + B + T + K)
        ours = CRF(K)
        ours.load_state_dict(ref.state_dict())
        res = {"B": B, "T": T, "K": K, "mean_len": float(lengths.float().mean()),
               "check": agreement(em0, tags, mask, ref, ours)}
        samples = time_interleaved(build_cases(em0, tags, lengths, mask, ref, ours), args.reps, args.min_rep_s)
        for (lib, op), s in samples.items():
            res[f"{lib}.{op}.ms"] = round(statistics.median(s), 3)
            res[f"{lib}.{op}.min_ms"] = round(min(s), 3)
            res[f"{lib}.{op}.q1_q3_ms"] = [round(x, 3) for x in statistics.quantiles(s, n=4)[::2]] if len(s) >= 2 else None
        for op in ("nll_fb", "viterbi"):
            for peer in ("pytorch_crf", "torch_struct"):
                if f"{peer}.{op}.ms" in res:
                    res[f"speedup_{op}_vs_{peer}"] = round(res[f"{peer}.{op}.ms"] / res[f"seqlearn.{op}.ms"], 2)
        out["results"].append(res)
    out["cpu_pressure_end"] = cpu_pressure()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
