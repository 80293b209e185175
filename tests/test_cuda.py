"""The CUDA path: cuDNN's fused kernels against the step loop, and training on a GPU.

CI has no GPU, so every test here skips there; ``benchmarks/device_check.sh`` runs them on
a lent one (``tests/test_checkpoint_compat.py`` also runs its 0.1.0 checkpoints on CUDA when
it is there).  ``SEQLEARN_TEST_DEVICE=cpu`` runs the same comparisons on the CPU, to check
the tests themselves.  Matrix products and cuDNN run in full float32 here (TF32 off), so
that the device is compared with the CPU and not with TF32's 10-bit mantissa.
"""
from __future__ import annotations

import copy
import os
import warnings

import pytest
import pytorch_lightning as pl
import torch

from seqlearn import Seq2Seq
from seqlearn.datamodules import TranslationDataModule
from seqlearn.encoder import RNNLayer
from seqlearn.testing import SMALL_MODEL, validation_loss

DEVICE = os.environ.get("SEQLEARN_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")
SOURCES = ["on march 3 , 1 9 9 8", "2 1", "1 9 4 5", "on june 1 7", "3 0 4", "on may 2 , 2 0 0 1"]


@pytest.fixture(autouse=True)
def full_float32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def leaves(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def run(layer: RNNLayer, x: torch.Tensor, lengths: torch.Tensor, fused: bool, grads: bool = True) -> list[torch.Tensor]:
    """Outputs, final state and (``grads``) the gradients of a loss on both, for x and every parameter."""
    layer.use_fused = fused
    out, final = layer(x, lengths)
    results = [out, *leaves(final)]
    if not grads:
        return results
    loss = out.square().sum() + sum(t.square().sum() for t in leaves(final))
    return [*results, *torch.autograd.grad(loss, [x, *layer.parameters()])]


def assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w.cpu(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_cudnn_and_the_step_loop_agree_on_outputs_states_and_gradients(cell, bidirectional):
    torch.manual_seed(0)
    layer = RNNLayer(cell, 6, 8, bidirectional=bidirectional).to(DEVICE)
    x = torch.randn(5, 7, 6, device=DEVICE, requires_grad=True)
    lengths = torch.tensor([7, 1, 4, 7, 2], device=DEVICE)
    fused = run(layer, x, lengths, fused=True)
    assert_close(fused, run(layer, x, lengths, fused=False))
    cpu_x = x.detach().cpu().requires_grad_()
    assert_close(fused, run(copy.deepcopy(layer).cpu(), cpu_x, lengths.cpu(), fused=True))


@pytest.mark.parametrize("used_before_the_move", [False, True])
def test_the_fused_kernel_trains_the_cells_own_weights_on_the_device(used_before_the_move):
    """cuDNN packs the weights into one buffer; the cells' parameters must stay the ones the
    optimizer updates and the kernel reads, without compacting them again at every call."""
    torch.manual_seed(0)
    layer = RNNLayer("lstm", 6, 8, bidirectional=True)
    if used_before_the_move:
        layer(torch.randn(2, 3, 6))  # the fused module exists when .to() moves the weights
    layer.to(DEVICE)
    x, lengths = torch.randn(5, 7, 6, device=DEVICE), torch.tensor([7, 1, 4, 7, 2], device=DEVICE)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    before = [p.detach().clone() for p in layer.parameters()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            layer(x, lengths)[0].square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    assert not [w for w in caught if "contiguous chunk" in str(w.message)]
    assert all(not torch.equal(p, b) for p, b in zip(layer.parameters(), before))
    with torch.no_grad():
        assert_close(run(layer, x, lengths, True, grads=False), run(layer, x, lengths, False, grads=False))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_seq2seq_trained_on_the_device_translates_the_same_on_the_cpu(precision, tmp_path):
    pl.seed_everything(0, verbose=False)
    data = TranslationDataModule("default", limit=1024, max_tokens=256, seed=0)
    data.setup("fit")
    model = Seq2Seq(data.src_vocab, data.tgt_vocab, **SMALL_MODEL)
    untrained = validation_loss(model, data)
    trainer = pl.Trainer(
        accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, max_steps=80, precision=precision,
        gradient_clip_val=1.0, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, data)
    assert model.device.type == DEVICE
    on_device = model.eval().translate(SOURCES, beam_size=3)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    cpu = Seq2Seq.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu").eval()
    on_cpu = cpu.translate(SOURCES, beam_size=3)
    assert [h[0].tokens for h in on_cpu] == [h[0].tokens for h in on_device]
    assert [h[0].score for h in on_cpu] == pytest.approx([h[0].score for h in on_device], abs=1e-4)
    assert validation_loss(cpu, data) < untrained - 1.0
