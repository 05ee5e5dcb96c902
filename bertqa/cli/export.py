"""`bertqa export`: a model as a self-contained ONNX directory (bertqa.export)."""
from __future__ import annotations

import argparse

from bertqa.cli.registry import subcommand
from bertqa.errors import BertQAError
from bertqa.export.layout import FORMATS, SCHEMES


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="model directory (Hugging Face layout, or one written by `bertqa prepare` for "
                        "--scheme spec), 'bundled', or hub id")
    p.add_argument("--out", required=True, help="directory to write (new, empty, or an earlier export)")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--scheme", default="spec", metavar="{" + ",".join(SCHEMES) + "}",
                   help="fp32; bf16 (the NPU's format for transformers); spec (bertqa's int8 Linear, "
                        "MatMulInteger); qdq-a8w8, qdq-xint8, qdq-a16w8 (static QDQ). Default: spec")
    p.add_argument("--spec", default=None, help="with --scheme spec: the int8 variant (see bertqa demo --help)")
    p.add_argument("--calibrate", default=None, metavar="FILE",
                   help="qdq schemes: stories to calibrate activation scales on (CoQA, SQuAD or text; "
                        "default: the built-in stories)")
    p.add_argument("--qdq-weights", choices=("tensor", "channel"), default=None,
                   help="qdq-a8w8/qdq-a16w8 weight scales (default channel; qdq-xint8 is per tensor)")
    p.add_argument("--threads", type=int, default=None)


@subcommand("export", "write a model as ONNX for ONNX Runtime and the Ryzen AI NPU "
            "(run it with --target onnx)", add_export_arguments)
def run_export(args) -> int:
    import bertqa
    from bertqa.export.writer import check_destination, require_onnx
    from bertqa.quant import QuantSpec
    if args.scheme not in SCHEMES:
        raise BertQAError(f"unknown export scheme {args.scheme!r}; choose one of {', '.join(SCHEMES)}")
    if args.spec is not None and args.scheme != "spec":
        raise BertQAError(f"--spec applies to --scheme spec, not {args.scheme}")
    if args.threads is not None and args.threads < 1:
        raise BertQAError(f"--threads must be >= 1, got {args.threads}")
    require_onnx()
    out = check_destination(args.out)                     # before a long load
    try:
        spec = None if args.spec is None else QuantSpec.parse(args.spec)
    except ValueError as e:
        raise BertQAError(str(e)) from None
    spec_scheme = args.scheme == "spec"
    qa = bertqa.load(model=args.model, target="customcpu" if spec_scheme else "cpu",
                     precision="int" if spec_scheme else "fp", spec=spec, threads=args.threads,
                     attention="fp32")
    path = qa.export(out, args.scheme, args.calibrate, args.qdq_weights)
    print(f"wrote {path} ({args.format}, scheme {args.scheme}); run it with "
          f"bertqa demo --model {path}")
    return 0
