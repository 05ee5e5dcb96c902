"""`bertqa ask`: one question about one context given on the command line or in a file."""
from __future__ import annotations

import argparse

from bertqa.cli.common import NO_ANSWER, add_model_options, load_from_args
from bertqa.cli.registry import subcommand
from bertqa.cli.values import positive_int
from bertqa.errors import BertQAError


def add_ask_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    g = p.add_argument_group("the question")
    g.add_argument("--question", "-q", required=True, help="the question")
    where = g.add_mutually_exclusive_group(required=True)
    where.add_argument("--context", "-c", default=None, help="the text to find the answer in")
    where.add_argument("--context-file", default=None, metavar="FILE",
                       help="read the context from this UTF-8 text file ('-': standard input)")
    g.add_argument("--top-k", type=positive_int, default=1, help="answers to print, best first (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print the answers as JSON (text, score, start, end)")
    g.add_argument("--verbose", "-v", action="store_true", help="print the model header first")


def read_context(args) -> str:
    if args.context is not None:
        return args.context
    import sys
    from pathlib import Path
    from bertqa.data.files import read_text
    return sys.stdin.read() if args.context_file == "-" else read_text(Path(args.context_file))


@subcommand("ask", "answer one question about a context given with --context or --context-file",
            add_ask_arguments)
def run_ask(args) -> int:
    import json
    from bertqa.cli.common import print_header
    context = read_context(args)
    if not context.strip():
        raise BertQAError("the context is empty: give the text to search with --context or --context-file")
    qa = load_from_args(args, fallback_to_bundled=args.model is None)
    if args.verbose:
        print_header(qa, "bertqa ask")
    else:
        for note in qa.notes:
            print(f"note: {note}")
    answers = qa.answer(args.question, context, top_k=args.top_k)
    answers = answers if isinstance(answers, list) else [answers]
    if args.json:
        print(json.dumps([a.to_dict() for a in answers], ensure_ascii=False))
        return 0
    for a in answers:
        text = NO_ANSWER if a.is_impossible or not a.text.strip() else a.text
        print(text if args.top_k == 1 else f"{a.score:.3f}  {text}")
    return 0
