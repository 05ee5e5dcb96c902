"""`bertqa structure`: draw the prepared model (bertqa.structure) to PNG and SVG, print it as text."""
from __future__ import annotations

import argparse

from bertqa.cli.common import add_model_options, add_random_weights_options, load_model_or_random
from bertqa.cli.registry import subcommand
from bertqa.errors import BertQAError


def add_structure_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, default_target="customcpu")
    p.add_argument("--out", default="bertqa-structure", metavar="PATH",
                   help="write PATH.png and PATH.svg (default: %(default)s)")
    add_random_weights_options(p, "the picture of a model too large to download here")


def draw_structure(qa, out: str) -> None:
    """Trace qa's model, write out.png and out.svg, print the text form and the paths."""
    from bertqa.structure import format_structure, model_structure
    from bertqa.structure_plot import save_structure
    structure = model_structure(qa)
    print(format_structure(structure))
    try:
        paths = save_structure(structure, out)
    except OSError as e:
        raise BertQAError(f"cannot write {out}.png/.svg: {e.strerror or e}") from None
    print("wrote " + " and ".join(str(p) for p in paths))


def check_out(out: str) -> None:
    """Before loading: matplotlib present, and the folder of `out` there."""
    from pathlib import Path
    from bertqa.eval.report import require_matplotlib
    require_matplotlib()
    if not Path(out).expanduser().resolve().parent.is_dir():
        raise BertQAError(f"cannot write {out}.png/.svg: its folder does not exist")


@subcommand("structure", "draw the prepared model to PNG and SVG: embeddings, one encoder layer with "
            "its custom nodes (backend, kernel, K -> N), host kernels, the QA head, x N layers",
            add_structure_arguments)
def run_structure(args) -> int:
    args.target, args.precision = args.target or "customcpu", args.precision or "int"
    check_out(args.out)
    try:
        qa = load_model_or_random(args)
    except ValueError as e:
        raise BertQAError(str(e)) from None
    draw_structure(qa, args.out)
    return 0
