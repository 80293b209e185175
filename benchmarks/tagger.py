"""Tagger quality within a time budget: CoNLL-2003 NER dev F1 or UD EWT dev UPOS accuracy.

Trains the model of a bundled config (``conll2003_ner``: BiLSTM-CRF, char-CNN, no
pretrained vectors, seqeval strict span F1 on IOB2 dev; ``ud_ewt_upos``: BiLSTM + softmax,
char-BiLSTM, token accuracy) on ``../shared/data`` for ``--minutes`` of wall-clock time and
prints one JSON line with the validation curve (minutes, epoch, metric) and the best value.

    python benchmarks/tagger.py conll2003_ner --minutes 60
    python benchmarks/tagger.py ud_ewt_upos --minutes 60
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

START = time.time()

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from seqlearn.datamodules import TaggingDataModule  # noqa: E402
from seqlearn.seq2seq_cli import bundled_configs  # noqa: E402
from seqlearn.tagger import Tagger  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRIC = {"conll2003_ner": ("val_f1", "conll2003"), "ud_ewt_upos": ("val_acc", "ud-ewt")}


class Curve(pl.Callback):
    """The validation metric after every epoch, with the minutes since process start."""

    def __init__(self, metric: str):
        self.metric = metric
        self.points: list[dict] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        self.points.append({"minutes": round((time.time() - START) / 60, 2), "epoch": trainer.current_epoch,
                            self.metric: round(100 * float(trainer.callback_metrics[self.metric]), 2)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", choices=sorted(METRIC))
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--data", type=Path, default=None, help="corpus folder (default ../shared/data/<corpus>)")
    ap.add_argument("--limit", type=int, default=None, help="sentences per split (for a quick try)")
    args = ap.parse_args()
    metric, corpus = METRIC[args.config]
    config = yaml.safe_load(bundled_configs()[args.config].read_text())
    data_args = {**config["data"], "data_dir": args.data or DATA / corpus, "limit": args.limit}
    if not Path(data_args["data_dir"]).is_dir():
        ap.error(f"{data_args['data_dir']} not found: pass --data")
    pl.seed_everything(config.get("seed_everything", 0), verbose=False)
    dm = TaggingDataModule(**data_args)
    dm.setup("fit")
    tagger = Tagger.from_datamodule(dm, **config["model"]["init_args"])
    curve = Curve(metric)
    trainer = pl.Trainer(
        max_epochs=-1, max_time={"seconds": args.minutes * 60 - (time.time() - START)},
        gradient_clip_val=config["trainer"]["gradient_clip_val"], callbacks=[curve], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(tagger, dm)
    best = max(curve.points, key=lambda p: p[metric], default=None)
    print(json.dumps({"bench": f"tagger_{args.config}", "metric": metric, "best": best, "curve": curve.points,
                      "epochs": trainer.current_epoch, "threads": torch.get_num_threads(),
                      "wall_minutes": round((time.time() - START) / 60, 2)}))


if __name__ == "__main__":
    main()
