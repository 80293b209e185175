"""Scale out: DDP shards every token-budget batch across processes and trains on the
global batch, as one process with the budget times the number of processes does.

The slow test trains with Lightning's DDP on CPU (gloo, two processes started by its
subprocess launcher) and compares with one process on the equivalent global batch.
"""
from __future__ import annotations

import json
import random

import pytest
import torch

from _reliability_runs import CHECKPOINT_EVERY, max_difference, run, weights
from seqlearn.batching import BucketBatchSampler


def lengths(n: int = 700, seed: int = 3) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(2, 30), rng.randint(2, 30)) for _ in range(n)]


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_share_each_global_batch_disjointly_and_step_together(processes):
    pairs = lengths()
    single = BucketBatchSampler(pairs, max_tokens=300 * processes, seed=4)
    shards = [BucketBatchSampler(pairs, max_tokens=300, seed=4, num_replicas=processes, rank=r) for r in range(processes)]
    for epoch in range(2):
        for sampler in (single, *shards):
            sampler.set_epoch(epoch)
        global_batches = list(single)
        per_process = [list(s) for s in shards]
        assert all(len(p) == len(global_batches) for p in per_process)  # every process steps the same number of times
        for step, batch in enumerate(global_batches):
            parts = [p[step] for p in per_process]
            if len(batch) >= processes:  # disjoint, and together exactly the global batch
                assert sorted(i for part in parts for i in part) == sorted(batch)
                assert max(map(len, parts)) - min(map(len, parts)) <= 1
            else:  # too few examples for all: the short ones repeat one of the batch's
                assert all(part and set(part) <= set(batch) for part in parts)
                assert set().union(*map(set, parts)) == set(batch)


def test_evaluation_shards_see_every_example_exactly_once():
    pairs = lengths(301)
    shards = [BucketBatchSampler(pairs, max_tokens=200, shuffle=False, num_replicas=4, rank=r, pad_shards=False)
              for r in range(4)]  # fmt: skip
    seen = [i for s in shards for batch in s for i in batch]
    assert sorted(seen) == list(range(len(pairs)))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["seq2seq", "tagger"])
def test_ddp_on_two_cpu_processes_follows_the_single_process_loss_curve(tmp_path, model):
    """No dropout or sampling, so both runs compute the same function of the same data; they
    differ only in how float32 sums are split (each process pads its own shard, gradients are
    summed across processes), ~1e-7 relative per operation.  Measured: losses within 1e-6,
    weights within 2e-6 after an epoch.  The tolerance, 2e-5, is ten times that, and far
    below what a wrong shard or a plain mean over per-process means gives (the latter moves
    the losses by ~1e-3 and the weights by ~2e-2 here)."""
    run(model, tmp_path / "ddp", "--devices", 2, "--no-noise", "--epochs", 1)
    run(model, tmp_path / "one", "--budget-scale", 2, "--no-noise", "--epochs", 1)
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    assert len(ddp["losses"]) == len(one["losses"]) > 5
    assert ddp["losses"] == pytest.approx(one["losses"], abs=2e-5)
    assert max_difference(weights(tmp_path / "ddp" / "weights.pt"), weights(tmp_path / "one" / "weights.pt")) < 2e-5
    # validation metrics cover the whole validation set, gathered from both processes
    names = ["val_loss", "val_ppl", "val_bleu", "val_bleu_tok"] if model == "seq2seq" else ["val_loss", "val_acc"]
    for name in names:
        assert ddp["metrics"][name] == pytest.approx(one["metrics"][name], rel=1e-5, abs=1e-6), name
    steps = len(ddp["losses"])  # rank 0 wrote the checkpoints
    assert torch.load(tmp_path / "ddp" / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == steps - steps % CHECKPOINT_EVERY
