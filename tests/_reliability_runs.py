"""Training runs that the reliability tests start as subprocesses, and tiny models they
build in-process (not a test module).

    python tests/_reliability_runs.py MODEL OUT [--kill-at STEP] [--resume CKPT] [--devices N]
        [--fault-save N] [--budget-scale K] [--epochs E] [--no-noise]

MODEL is ``seq2seq`` (the embedded default task, scheduled sampling, step LR schedule),
``tagger`` (synthetic tagged sentences, word dropout, inverse-time LR decay), ``language_model`` (their
words as streams: truncated BPTT carrying the state across windows, variational dropout,
plateau LR schedule) or ``classifier`` (their first tag as label, attention pooling).  All
draw random numbers (dropout...), so the random state matters, unless ``--no-noise``.  The run checkpoints
into OUT/ckpt every 3 steps (``last.ckpt`` too), and rank 0 writes OUT/weights.pt and
OUT/result.json: the global training loss of each step and the final metrics.
``--kill-at`` SIGKILLs the process at the end of that step; ``--fault-save N`` SIGKILLs it
halfway through writing its N-th checkpoint file.  ``--budget-scale K`` multiplies the
token budget (one process with K times the budget trains on the global batch of K
processes).  Under ``--devices 2`` the run is DDP on CPU (gloo) through Lightning's
subprocess launcher, which starts this script again for rank 1.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from seqlearn import Seq2Seq, Tagger
from seqlearn.classification_data import ClassificationDataModule, LabeledText
from seqlearn.classifier import SequenceClassifier
from seqlearn.datamodules import TaggingDataModule, TranslationDataModule
from seqlearn.language_model import LanguageModel
from seqlearn.readers import TaggedSentence
from seqlearn.language_model_data import LanguageModelDataModule

SEED = 0
CHECKPOINT_EVERY = 3


def run(*args: object, killed: bool = False) -> None:
    """Run ``_reliability_runs.py ARGS``; it must end normally, or by SIGKILL when ``killed``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    expected = -signal.SIGKILL if killed else 0
    assert proc.returncode == expected, proc.stderr[-3000:]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def tagged_sentences(n: int, seed: int) -> list[TaggedSentence]:
    """Words ``w0..w29``; a word's tag is ``A`` when it is below 15, ``B`` otherwise, except
    that the word after ``w0`` is always ``C``: a task with context."""
    rng = random.Random(seed)
    out = []
    for line in range(n):
        words = [rng.randrange(30) for _ in range(rng.randint(2, 9))]
        tags = ["C" if i and words[i - 1] == 0 else ("A" if w < 15 else "B") for i, w in enumerate(words)]
        out.append(TaggedSentence([f"w{w}" for w in words], tags, line + 1))
    return out


def labeled_texts(n: int, seed: int) -> list[LabeledText]:
    """:func:`tagged_sentences` labeled by their first tag, ``A`` or ``B``."""
    return [LabeledText(" ".join(s.tokens), s.tokens, [s.tags[0]], s.line) for s in tagged_sentences(n, seed)]


def build(model: str, budget_scale: int, noise: bool) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    if model == "seq2seq":
        data = TranslationDataModule("default", limit=192, max_tokens=96 * budget_scale, seed=SEED)
        data.setup("fit")
        net = Seq2Seq(
            data.src_vocab, data.tgt_vocab, embedding_dim=16, hidden_size=32, dropout=0.2 if noise else 0.0,
            scheduled_sampling="linear" if noise else "none", sampling_c=0.02, lr=3e-3, lr_scheduler="step",
            lr_gamma=0.5, lr_step_size=1, val_bleu=True,
        )  # fmt: skip
    elif model == "language_model":
        data = LanguageModelDataModule([s.tokens for s in tagged_sentences(160, 1)],
                                       [s.tokens for s in tagged_sentences(48, 2)], batch_size=4 * budget_scale, bptt=8)
        net = LanguageModel.from_datamodule(
            data, cell="lstm", embedding_dim=16, num_layers=2, dropout=0.2 if noise else 0.0,
            input_dropout=0.1 if noise else 0.0, lr=1e-2, lr_scheduler="plateau",
        )  # fmt: skip
    elif model == "classifier":
        data = ClassificationDataModule(labeled_texts(160, 1), labeled_texts(48, 2), max_tokens=40 * budget_scale,
                                        seed=SEED)  # fmt: skip
        net = SequenceClassifier.from_datamodule(
            data, embedding_dim=16, hidden_size=16, pooling="attention", dropout=0.2 if noise else 0.0, lr=1e-2)
    else:
        data = TaggingDataModule(tagged_sentences(160, 1), tagged_sentences(48, 2), max_tokens=40 * budget_scale,
                                 seed=SEED)  # fmt: skip
        data.setup("fit")
        net = Tagger.from_datamodule(
            data, embedding_dim=16, char_dim=8, char_out_dim=8, hidden_size=16, dropout=0.2 if noise else 0.0,
            word_dropout=0.1 if noise else 0.0, lr=1e-2, lr_scheduler="inverse-time", lr_gamma=0.5,
        )  # fmt: skip
    return net, data


def tiny(kind: str, on_nonfinite: str = "stop", **options: Any
         ) -> tuple[pl.LightningModule, pl.LightningDataModule, torch.nn.Module]:  # fmt: skip
    """For in-process tests: a tiny model (``options`` override its arguments: ``cell=``...),
    its data, and the layer tests poison: the output layer, or the language model's encoder
    (whose final state is carried to the next window)."""
    torch.manual_seed(0)
    common = {"dropout": 0.0, "lr": 1e-2, "on_nonfinite": on_nonfinite}
    if kind == "language_model":
        data = LanguageModelDataModule([s.tokens for s in tagged_sentences(64, 1)], batch_size=4, bptt=5)
        model = LanguageModel.from_datamodule(
            data, **{"embedding_dim": 8, "num_layers": 1, "input_dropout": 0.0, **common, **options})
        return model, data, model.encoder
    if kind == "classifier":
        data = ClassificationDataModule(labeled_texts(64, 1), max_tokens=40, seed=0)
        model = SequenceClassifier.from_datamodule(data, **{"embedding_dim": 8, "hidden_size": 8, **common, **options})
        return model, data, model.output
    if kind == "seq2seq":
        data = TranslationDataModule("default", limit=64, max_tokens=96, seed=0)
        data.setup("fit")
        model = Seq2Seq(data.src_vocab, data.tgt_vocab,
                        **{"embedding_dim": 8, "hidden_size": 16, "val_bleu": False, **common, **options})
        return model, data, model.decoder.readout
    data = TaggingDataModule(tagged_sentences(64, 1), max_tokens=40, seed=0)
    data.setup("fit")
    model = Tagger.from_datamodule(
        data, **{"embedding_dim": 8, "char_dim": 4, "char_out_dim": 4, "hidden_size": 8, **common, **options})
    return model, data, model.emission


class Record(pl.Callback):
    """The global training loss of every step; SIGKILL at the end of step ``kill_at``."""

    def __init__(self, kill_at: int | None):
        self.losses: list[float] = []
        self.kill_at = kill_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train_loss_step" if "train_loss_step" in
                                                          trainer.callback_metrics else "train_loss"]))
        if trainer.global_step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def fault_on_save(n: int) -> None:
    """SIGKILL this process halfway through writing the ``n``-th checkpoint file."""
    real_save, count = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        count[0] += 1
        if count[0] < n:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["seq2seq", "tagger", "language_model", "classifier"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--kill-at", type=int)
    ap.add_argument("--resume")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--budget-scale", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-noise", action="store_true", help="no dropout, word dropout or scheduled sampling")
    ap.add_argument("--fault-save", type=int)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(SEED, verbose=False)
    net, data = build(args.model, args.budget_scale, not args.no_noise)
    if args.fault_save:
        fault_on_save(args.fault_save)
    record = Record(args.kill_at)
    checkpoints = ModelCheckpoint(dirpath=args.out / "ckpt", every_n_train_steps=CHECKPOINT_EVERY, save_top_k=-1,
                                  save_last=True, filename="{step}")  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", callbacks=[record, checkpoints], logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, gradient_clip_val=1.0,
    )  # fmt: skip
    trainer.fit(net, data, ckpt_path=args.resume)
    if trainer.is_global_zero:
        torch.save(net.state_dict(), args.out / "weights.pt")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        result = {"losses": record.losses, "metrics": metrics, "global_step": trainer.global_step,
                  "skipped": net.skipped_batches, "world_size": trainer.world_size}  # fmt: skip
        (args.out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
