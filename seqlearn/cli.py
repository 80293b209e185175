"""The ``seqlearn`` command line.

    seqlearn plugins            list every registered component and where it comes from
    seqlearn tag --ckpt T.ckpt < in.txt > out.conll
                                tag one sentence per line with a trained Tagger; writes
                                token<TAB>tag lines, a blank line after each sentence
                                (--ckpt: a checkpoint, a model folder or a Hub repo id, also below)
    seqlearn export --ckpt M.ckpt --out DIR [--format torchscript|onnx]
                                export a trained Seq2Seq, Tagger, LanguageModel or
                                SequenceClassifier for serving (seqlearn.serving) without seqlearn
    seqlearn fit --config default_task [--trainer.max_epochs 4 ...]
                                train a Seq2Seq with Lightning's CLI (a config file or the
                                name of a bundled one: default_task, multi30k_de_en);
                                --save-pretrained DIR writes the best model as a model folder
    seqlearn fit --config conll2003_ner --data.data_dir ../shared/data/conll2003
                                train a Tagger (configs whose model.class_path is seqlearn.Tagger;
                                bundled: conll2003_ner, ud_ewt_upos)
    seqlearn translate --ckpt M.ckpt [--beam-size 5 --n-best 1 ...] < in.txt > out.txt
                                translate one sentence per line with a trained Seq2Seq
                                (--ckpt A.ckpt B.ckpt ...: with the ensemble of several)
    seqlearn convert --from opennmt-py|joeynmt IN OUT_FOLDER
                                convert another tool's translation model (an OpenNMT-py
                                checkpoint, a JoeyNMT model folder) into a seqlearn model folder
    seqlearn average A.ckpt B.ckpt C.ckpt --out AVG_FOLDER (or AVG.ckpt)
                                average the weights of checkpoints of one run
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import registry
from .errors import SeqlearnError
from .notices import quiet_third_party_notices


def _plugins(args: argparse.Namespace) -> int:
    for kind, rows in registry.listing().items():
        print(f"{kind}:")
        if not rows:
            print("  (none)")
        width = max((len(name) for name, _ in rows), default=0)
        for name, origin in rows:
            print(f"  {name:<{width}}  {origin}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    # a config whose model.class_path names the Tagger trains a tagger, any other a Seq2Seq
    from .tagger_cli import is_tagger_config

    if is_tagger_config(args.lightning_args):
        from .tagger_cli import fit
    else:
        from .seq2seq_cli import fit
    cli = fit(args.lightning_args)
    if args.save_pretrained and cli.trainer.is_global_zero:  # one process writes it under DDP
        from .pretrained import save_best_model

        folder = save_best_model(cli.trainer, cli.model, args.save_pretrained)
        print(f"seqlearn fit: saved the best {type(cli.model).__name__} as the model folder {folder}")
    return 0


def _missing_checkpoint(command: str, path: str) -> bool:
    """Say so on stderr (exit status 2 follows) rather than show a traceback: a ``--ckpt``
    that is no checkpoint file, no model folder and cannot be a Hub repo id."""
    from .pretrained import is_repo_id

    if os.path.exists(path) or is_repo_id(path):
        return False
    print(f"seqlearn {command}: {path}: no such checkpoint file or model folder", file=sys.stderr)
    return True


def _translate(args: argparse.Namespace) -> int:
    if any(_missing_checkpoint("translate", path) for path in args.ckpt):
        return 2
    from .ensemble import Ensemble
    from .pretrained import load_model
    from .seq2seq import Seq2Seq
    from .seq2seq_cli import translate_lines

    if len(args.ckpt) == 1:
        model = load_model(args.ckpt[0], Seq2Seq, map_location=args.device)
    else:
        model = Ensemble.from_checkpoints(args.ckpt, map_location=args.device)
    # a search setting not given on the command line is the model's own (its search_defaults)
    given = {k: v for k in ("max_length", "min_length", "length_penalty", "alpha", "block_ngram_repeat",
                            "coverage_penalty", "stopping") if (v := getattr(args, k)) is not None}
    translate_lines(
        model, sys.stdin, sys.stdout, n_best=args.n_best, detokenize=not args.tokens, beam_size=args.beam_size,
        batch_size=args.batch_size, precision=args.precision, **given,
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert

    model = convert(args.tool, args.input)
    model.save_pretrained(args.out)
    print(f"{args.out}: {args.tool} model {args.input} converted")
    return 0


def _add_seq2seq_parsers(sub: argparse._SubParsersAction) -> None:
    # everything after "fit" goes to LightningCLI (its own --help included)
    p = sub.add_parser("fit", add_help=False, help="train a Seq2Seq, or a Tagger when the config's model.class_path is "
                       "seqlearn.Tagger, with LightningCLI: seqlearn fit --config FILE|NAME [--trainer.* --model.* "
                       "--data.*]; seqlearn fit --config FILE|NAME --help for all options")
    p.add_argument("--save-pretrained", metavar="DIR", default=None,
                   help="after training, write the best model (the best or last checkpoint) as a model folder")
    p.set_defaults(func=_fit, passes_through=True)
    p = sub.add_parser(
        "translate",
        help="translate stdin (one sentence per line) with a trained Seq2Seq; one translation per line to stdout",
        description="Read one sentence per line from stdin, tokenize it with the model's source tokenizer, and "
        "write its translation (detokenized) to stdout, one line per input line. With --n-best N > 1, write "
        "Moses n-best lines 'index ||| translation ||| score' instead.",
    )
    p.add_argument("--ckpt", required=True, nargs="+", metavar="CKPT",
                   help="Seq2Seq checkpoint (.ckpt) written by Lightning, a model folder (save_pretrained) or a "
                   "Hugging Face Hub repo id; several: translate with their ensemble (the mean of their "
                   "log-probabilities at every step; they must share the target vocabulary)")
    p.add_argument("--beam-size", type=int, default=5, help="beam width; 1 is greedy search (default 5)")
    p.add_argument("--n-best", type=int, default=1, help="hypotheses per sentence, at most the beam size (default 1)")
    p.add_argument("--max-length", type=int, default=None,
                   help="decoding steps, </s> included (default: the model's rule, else 100, or twice the longest "
                   "input + 10 if more)")
    p.add_argument("--min-length", type=int, default=None, help="tokens before </s> is allowed (default 0)")
    p.add_argument("--length-penalty", choices=["gnmt", "average"], default=None,
                   help="divide scores by ((5+|y|)/6)^alpha (gnmt) or |y|^alpha (average); default: the model's, "
                   "else none")
    p.add_argument("--alpha", type=float, default=None, help="exponent of the length penalty (default 1.0)")
    p.add_argument("--block-ngram-repeat", type=int, default=None,
                   help="forbid repeating n-grams of this size (default off)")
    p.add_argument("--coverage-penalty", type=float, default=None, help="GNMT coverage penalty beta (default off)")
    p.add_argument("--stopping", choices=["exact", "heuristic", "first"], default=None,
                   help="when a sentence's beam search ends: exact (once no live beam can win at any length), "
                   "heuristic (once none can win at its next length) or first (once its best extension ends, as "
                   "OpenNMT-py does); the last two take fewer steps; default: the model's, else exact")
    p.add_argument("--batch-size", type=int, default=64, help="sentences decoded at once (default 64)")
    p.add_argument("--precision", choices=["32", "bf16", "16"], default="32",
                   help="bf16: matrix products in bfloat16, scores in float32 (faster on AVX512-BF16 CPUs and "
                   "recent GPUs); 16: float16 (GPUs); default 32")
    p.add_argument("--tokens", action="store_true", help="write tokens joined by spaces instead of detokenized text")
    p.add_argument("--device", default="cpu", help="torch device to run on (default cpu)")
    p.set_defaults(func=_translate)
    p = sub.add_parser(
        "convert",
        help="convert an OpenNMT-py or JoeyNMT translation model into a seqlearn model folder",
        description="Read another tool's RNN translation model without running any of its code and write it as a "
        "seqlearn model folder (config.json, model.safetensors, vocabularies); the folder translates as the tool "
        "does, with the tool's length penalty, stopping and max-length rules as its defaults.",
    )
    p.add_argument("--from", dest="tool", required=True, choices=["opennmt-py", "joeynmt"],
                   help="the tool that saved IN")
    p.add_argument("input", metavar="IN", help="OpenNMT-py 3.x checkpoint (.pt) or JoeyNMT 2.x model folder")
    p.add_argument("out", metavar="OUT_FOLDER", help="the seqlearn model folder to write (created if missing)")
    p.set_defaults(func=_convert)


def _tag(args: argparse.Namespace) -> int:
    from .pretrained import load_model
    from .tagger import Tagger
    from .tagger_cli import tag_lines

    if _missing_checkpoint("tag", args.ckpt):
        return 2
    tagger = load_model(args.ckpt, Tagger, map_location=args.device)
    tag_lines(tagger, sys.stdin, sys.stdout, batch_size=args.batch_size, confidence=args.confidence, scheme=args.scheme)
    return 0


def _export(args: argparse.Namespace) -> int:
    if _missing_checkpoint("export", args.ckpt):
        return 2
    from .export import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out, args.format)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    print(f"{out}: {manifest['model']} exported as {args.format}: {', '.join(manifest['graphs'])}")
    return 0


def _average(args: argparse.Namespace) -> int:
    if any(_missing_checkpoint("average", path) for path in args.checkpoints):
        return 2
    from .averaging import average_checkpoints, save_checkpoint

    model = average_checkpoints(args.checkpoints)
    if args.out.endswith(".ckpt"):
        save_checkpoint(model, args.out)
    else:
        model.save_pretrained(args.out)
    print(f"{args.out}: {type(model).__name__} averaged from {len(args.checkpoints)} checkpoints")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="list registered cells, attentions, decoders, tokenizers and char features with their origin")
    p.set_defaults(func=_plugins)
    p = sub.add_parser(
        "tag",
        help="tag stdin (one sentence per line) with a trained Tagger; CoNLL-style token<TAB>tag lines to stdout",
        description="Read one sentence per line from stdin, split it with the tagger's tokenizer, and write one "
        "token<TAB>tag line per token to stdout with a blank line after each sentence (an empty input line "
        "gives an empty sentence: just the blank line).",
    )
    p.add_argument("--ckpt", required=True, help="Tagger checkpoint (.ckpt) written by Lightning, a model folder "
                   "(save_pretrained) or a Hugging Face Hub repo id")
    p.add_argument("--batch-size", type=int, default=64, help="sentences tagged at once (default 64)")
    p.add_argument("--confidence", action="store_true", help="add a third column: the probability of the tag")
    p.add_argument("--scheme", default=None, help="chunk scheme of the tags written (BIO, IOB1, BIOUL, BIOES; "
                   "default: the scheme of the training data)")
    p.add_argument("--device", default="cpu", help="torch device to run on (default cpu)")
    p.set_defaults(func=_tag)
    p = sub.add_parser(
        "export",
        help="export a trained model's checkpoint to TorchScript or ONNX for serving without seqlearn",
        description="Load a checkpoint of a Seq2Seq, Tagger, LanguageModel or SequenceClassifier and write its "
        "graphs, vocabularies and manifest.json into --out, each graph checked against the model's own outputs; "
        "serve the folder with seqlearn/serving.py (torch or onnxruntime alone).",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) written by Lightning, a model folder "
                   "(save_pretrained) or a Hugging Face Hub repo id")
    p.add_argument("--out", required=True, help="folder to write the export into (created if missing)")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript",
                   help="torchscript (.pt, torch.jit.load) or onnx (.onnx, onnxruntime); default torchscript")
    p.set_defaults(func=_export)
    p = sub.add_parser(
        "average",
        help="average the weights of checkpoints of one run (the last epochs) into one model",
        description="Load checkpoints of one model (Seq2Seq, Tagger, LanguageModel or SequenceClassifier; same "
        "architecture and vocabularies) and write the model whose weights are their mean: a Lightning checkpoint "
        "when --out ends in .ckpt, a model folder otherwise.",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints (.ckpt) to average")
    p.add_argument("--out", required=True, help="where to write the averaged model: a model folder, or a checkpoint when it ends in .ckpt")
    p.set_defaults(func=_average)
    _add_seq2seq_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_notices()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_through", False):
        args.lightning_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except SeqlearnError as exc:  # bad input, config or checkpoint: the message says what and where
        print(f"seqlearn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
