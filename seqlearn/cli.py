"""The ``seqlearn`` command line.

    seqlearn plugins            list every registered component and where it comes from
"""
from __future__ import annotations

import argparse
import sys

from . import registry


def _plugins(args: argparse.Namespace) -> int:
    for kind, rows in registry.listing().items():
        print(f"{kind}:")
        if not rows:
            print("  (none)")
        width = max((len(name) for name, _ in rows), default=0)
        for name, origin in rows:
            print(f"  {name:<{width}}  {origin}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="list registered cells, attentions, decoders and tokenizers with their origin")
    p.set_defaults(func=_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
