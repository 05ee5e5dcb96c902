"""The command line: `bertqa {demo,ask,prepare,eval,profile,bench,serve,structure,export,batch}`; `python
run.py` is `bertqa demo`.

A thin layer: each subcommand is a short function over the library API. Errors the user can
fix (BertQAError, bad option values, argparse's usage errors) print one line and exit 2, never a
traceback.
"""
from __future__ import annotations

import argparse
import sys

from bertqa.errors import BertQAError

from bertqa.cli.common import NO_ANSWER  # noqa: F401
from bertqa.cli.registry import SUBCOMMANDS, subcommand  # noqa: F401
from bertqa.cli import demo, ask, evaluate, bench, serve, structure, export, batch  # noqa: F401  (registers the subcommands)
from bertqa.cli.values import Parser


# -- entry point --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from bertqa import __version__
    parser = Parser(prog="bertqa", description="Extractive question answering with "
                    "BERT, Linear layers as int8 custom nodes on pluggable backends.")
    parser.add_argument("--version", action="version", version=f"bertqa {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(subs.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["demo", *argv]                   # `bertqa --target ...` is the demo, like run.py
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command][2](args)
    except BertQAError as e:
        print(f"bertqa: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertqa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                      # `bertqa demo | head`: the reader left
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
