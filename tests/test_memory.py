"""Memory: a batch that does not fit fails at once with advice on the budget to lower.

The allocations that fail are real ones, made by hooks in the middle of the forward or
backward pass and sized by the batch (a TiB per token): the error is the allocator's own,
not a message the test made up.
"""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from _reliability_runs import tiny
from seqlearn.errors import BatchMemoryError
from seqlearn.training import is_out_of_memory

TIB = 1 << 40


def trainer() -> pl.Trainer:
    return pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1)  # fmt: skip


def allocate_per_token(tensor: torch.Tensor) -> None:
    torch.empty(tensor.numel() * TIB, dtype=torch.uint8)


def test_the_allocators_failure_is_recognized_and_other_runtime_errors_are_not():
    with pytest.raises(RuntimeError) as err:
        torch.empty(1 << 62, dtype=torch.uint8)
    assert is_out_of_memory(err.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)"))


@pytest.mark.parametrize("kind", ["seq2seq", "tagger", "classifier"])
def test_a_forward_pass_out_of_memory_names_the_batch_and_the_budget(kind):
    model, data, layer = tiny(kind, "stop")
    layer.register_forward_hook(lambda module, inputs, out: allocate_per_token(out))
    with pytest.raises(BatchMemoryError) as err:
        trainer().fit(model, data)
    message = str(err.value)
    assert message.startswith("batch 0 of epoch 0 (global step 0): ") and "did not fit in memory" in message
    assert "DefaultCPUAllocator: can't allocate memory" in message  # the allocator's own words
    assert f"now max_tokens={data.max_tokens}, max_sentences=None" in message and "--data.max_tokens" in message
    assert isinstance(err.value, MemoryError) and is_out_of_memory(err.value.__cause__)


def test_a_language_model_window_out_of_memory_names_the_window_and_the_streams_to_lower():
    model, data, _ = tiny("language_model", "stop")
    model.output.register_forward_hook(lambda module, inputs, out: allocate_per_token(out))
    with pytest.raises(BatchMemoryError) as err:
        trainer().fit(model, data)
    message = str(err.value)
    assert message.startswith("batch 0 of epoch 0 (global step 0): the window of 4 streams x 5 tokens at stream "
                              "position 0 did not fit in memory: ")  # fmt: skip
    assert "now batch_size=4, bptt=5" in message and "max_tokens" not in message


def test_a_backward_pass_out_of_memory_gets_the_same_advice():
    model, data, layer = tiny("seq2seq", "stop")

    def on_output(module, inputs, out):
        if out.requires_grad:
            out.register_hook(allocate_per_token)  # runs during loss.backward()

    layer.register_forward_hook(on_output)
    with pytest.raises(BatchMemoryError, match=r"batch 0 of epoch 0 .* did not fit in memory: .*max_tokens"):
        trainer().fit(model, data)


def test_a_validation_batch_out_of_memory_gets_the_same_advice():
    model, data, layer = tiny("seq2seq", "stop")
    layer.register_forward_hook(lambda module, inputs, out: None if module.training else allocate_per_token(out))
    with pytest.raises(BatchMemoryError, match=r"evaluated examples .* did not fit in memory"):
        pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(model, data, verbose=False)


def test_other_errors_in_training_pass_through_unchanged():
    model, data, layer = tiny("seq2seq", "stop")

    def broken(module, inputs, out):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)")

    layer.register_forward_hook(broken)
    with pytest.raises(RuntimeError, match="mat1 and mat2") as err:
        trainer().fit(model, data)
    assert not isinstance(err.value, BatchMemoryError)
