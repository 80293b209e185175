"""Faults: a run killed mid-epoch resumes exactly; a kill while saving leaves the last checkpoint whole.

The slow tests start real training runs (tests/_reliability_runs.py) as subprocesses and
SIGKILL them: the oracle is the same run left alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from _reliability_runs import CHECKPOINT_EVERY, max_difference, run, weights
from seqlearn.batching import BucketBatchSampler, ResumableLoader
from seqlearn.checkpointing import atomic_save, rng_state, set_rng_state


# -- the loader's position ---------------------------------------------------------------------
def _loader(num_workers: int = 0) -> ResumableLoader:
    lengths = [(i * 7) % 13 + 1 for i in range(60)]
    sampler = BucketBatchSampler(lengths, max_tokens=24, seed=5)
    return ResumableLoader(DataLoader(list(range(60)), batch_sampler=sampler, num_workers=num_workers,
                                      collate_fn=list))  # fmt: skip


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_state_resumes_after_the_batches_delivered_even_when_workers_prefetch(num_workers):
    uninterrupted = _loader()
    epochs = [list(uninterrupted), list(uninterrupted)]
    assert epochs[0] != epochs[1]  # a new order each epoch
    interrupted = _loader(num_workers)
    seen = []
    for batch in interrupted:  # epoch 0 entirely, then 3 batches of epoch 1
        seen.append(batch)
    it = iter(interrupted)
    seen += [next(it) for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "start": 3}
    resumed = _loader(num_workers)
    resumed.load_state_dict(state)
    assert len(resumed) == len(epochs[1])  # Lightning counts the delivered batches itself
    assert seen + list(resumed) == epochs[0] + epochs[1]
    assert list(resumed) == list(_loader_at_epoch(2))


def _loader_at_epoch(epoch: int) -> ResumableLoader:
    loader = _loader()
    loader.batch_sampler.set_epoch(epoch)
    return loader


def test_a_state_saved_after_the_last_batch_resumes_with_the_next_epoch():
    loader = _loader()
    first = list(loader)
    resumed = _loader()
    resumed.load_state_dict(loader.state_dict())
    assert loader.state_dict() == {"epoch": 0, "start": len(first)}
    assert list(resumed) == list(_loader_at_epoch(1))


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    state = rng_state()
    atomic_save({"rng": state}, tmp_path / "rng.ckpt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.random(), np.random.rand(), torch.rand(())  # move every generator on
    set_rng_state(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


# -- atomic writes ---------------------------------------------------------------------------
def test_atomic_save_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.ckpt"
    atomic_save({"step": 1, "w": torch.ones(3)}, target)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"step": 2, "w": torch.zeros(3)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    # saves: step=3.ckpt (1), last.ckpt (2), step=6.ckpt (3), then last.ckpt again (4): killed halfway
    run("seq2seq", tmp_path, "--epochs", 1, "--fault-save", 4, killed=True)
    folder = tmp_path / "ckpt"
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # the previous last.ckpt, whole
    assert torch.load(folder / "step=6.ckpt", weights_only=True)["global_step"] == 6
    (partial,) = folder.glob(".last.ckpt.*.tmp")  # the interrupted write, beside it
    with pytest.raises(Exception):
        torch.load(partial, weights_only=True)
    run("seq2seq", tmp_path, "--epochs", 1, "--resume", folder / "last.ckpt")  # and training goes on from it


# -- exact resume ------------------------------------------------------------------------------
KILL_AT = {"seq2seq": 29, "tagger": 31, "language_model": 47, "classifier": 31}
STEPS_PER_EPOCH = {"seq2seq": 23, "tagger": 25, "language_model": 33, "classifier": 25}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(model)``: the folders of an uninterrupted run and of one SIGKILLed at the end
    of step ``KILL_AT[model]``, each made once per module."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(model: str) -> tuple[Path, Path]:
        if model not in made:
            root = tmp_path_factory.mktemp(model)
            run(model, root / "full")
            run(model, root / "killed", "--kill-at", KILL_AT[model], killed=True)
            made[model] = root / "full", root / "killed"
        return made[model]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("model", list(KILL_AT))
def test_run_killed_mid_epoch_resumes_to_the_same_weights(runs, tmp_path, model):
    """Seq2Seq: dropout, scheduled sampling (linear decay by step) and a step LR schedule;
    Tagger: dropout, word dropout and the inverse-time LR decay; LanguageModel: variational dropout and the
    state carried from window to window; SequenceClassifier: dropout.  Two epochs;
    checkpoints every 3 steps."""
    full, killed = runs(model)
    last = killed / "ckpt" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    step = KILL_AT[model] - KILL_AT[model] % CHECKPOINT_EVERY
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (step, 1)  # in the middle of the second epoch
    (loader_state,) = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state["start"] == step - STEPS_PER_EPOCH[model]  # the windows' loader counts no epochs
    assert loader_state.get("epoch", 1) == 1
    if model == "language_model":
        assert checkpoint["seqlearn_carried_state"] is not None
    assert not (killed / "weights.pt").exists()

    run(model, tmp_path, "--resume", last)
    uninterrupted = json.loads((full / "result.json").read_text())
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert len(uninterrupted["losses"]) == 2 * STEPS_PER_EPOCH[model]
    assert resumed["losses"] == pytest.approx(uninterrupted["losses"][step:], abs=1e-6)
    assert max_difference(weights(full / "weights.pt"), weights(tmp_path / "weights.pt")) <= 1e-6
    assert resumed["metrics"]["val_loss"] == pytest.approx(uninterrupted["metrics"]["val_loss"], abs=1e-6)


@pytest.mark.slow
def test_without_the_saved_random_state_the_resumed_run_differs(runs, tmp_path):
    """The control: the same resume, from the checkpoint stripped of its random state."""
    full, killed = runs("seq2seq")
    checkpoint = torch.load(killed / "ckpt" / "last.ckpt", weights_only=True)
    del checkpoint["callbacks"]["TrainingState"]
    torch.save(checkpoint, tmp_path / "stripped.ckpt")
    run("seq2seq", tmp_path, "--resume", tmp_path / "stripped.ckpt")
    assert max_difference(weights(full / "weights.pt"), weights(tmp_path / "weights.pt")) > 1e-3


@pytest.mark.slow
def test_without_the_carried_state_the_resumed_language_model_differs(runs, tmp_path):
    """The control for truncated BPTT: the same resume, its next window started from zeros."""
    full, killed = runs("language_model")
    checkpoint = torch.load(killed / "ckpt" / "last.ckpt", weights_only=True)
    checkpoint["seqlearn_carried_state"] = None
    torch.save(checkpoint, tmp_path / "stripped.ckpt")
    run("language_model", tmp_path, "--resume", tmp_path / "stripped.ckpt")
    assert max_difference(weights(full / "weights.pt"), weights(tmp_path / "weights.pt")) > 1e-4
