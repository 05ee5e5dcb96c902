"""Options and helpers shared by the subcommands: the model/target options, loading, the header."""
from __future__ import annotations

import argparse

from bertqa.cli.values import finite_float, non_negative_int, positive_int
from bertqa.errors import BertQAError

NO_ANSWER = "I am unable to find the answer to this question. Can you please ask another question?"


def add_model_options(p: argparse.ArgumentParser, default_target: str = "cpu") -> None:
    from bertqa.attention import MODES as ATTENTION_MODES
    from bertqa.model.loading import DEFAULT_MODEL
    from bertqa.targets import PRECISIONS, TARGETS
    g = p.add_argument_group("model and target")
    g.add_argument("--model", default=None,
                   help=f"model directory (Hugging Face layout, or one written by `bertqa prepare`), "
                        f"'bundled', or hub id (default: {DEFAULT_MODEL})")
    g.add_argument("--target", choices=TARGETS, default=None,
                   help=f"where the Linear layers run (default: {default_target}, or the target a "
                        "prepared model was saved for)")
    g.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32 or int8 Linear layers (default: fp; int for a prepared model)")
    g.add_argument("--spec", default=None,
                   help="int8 variant: a preset (default = channel-row-smooth, tensor, int32, "
                        "channel-row, seed-shift4) or "
                        "weights=tensor|channel,acts=tensor|row,requant=int16|int32,shift=N,smooth=A")
    g.add_argument("--backend", default=None, help="force one Linear backend for a custom target")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch and the kernels")
    g.add_argument("--attention", choices=ATTENTION_MODES, default=None,
                   help="host attention: fp32 PyTorch SDPA, the native AVX512-BF16 kernel (bf16) "
                        "or the native AVX2 fp32 one (fp32-native); auto: for int8 customcpu/aie "
                        "bf16 where the CPU has it, else fp32-native")
    g.add_argument("--aie-device", choices=("auto", "emulator", "npu"), default=None,
                   help="with --target aie: run the tiles on the NPU or on the tile-exact emulator "
                        "(default auto: the NPU where one is found)")
    g.add_argument("--onnx-provider", default=None, metavar="PROVIDER",
                   help="with --target onnx (a `bertqa export` directory): the ONNX Runtime execution "
                        "provider, e.g. CPUExecutionProvider (default) or VitisAIExecutionProvider")
    g.add_argument("--onnx-provider-option", action="append", default=None, metavar="KEY=VALUE",
                   help="with --target onnx: an option for the execution provider (repeatable), e.g. "
                        "the VitisAI EP's config or cache options (see docs/ryzen-ai.md)")
    q = p.add_argument_group("question answering")
    q.add_argument("--max-seq-len", type=positive_int, default=384,
                   help="tokens per window: question, context part and 3 special tokens (default: %(default)s)")
    q.add_argument("--doc-stride", type=non_negative_int, default=128,
                   help="tokens shared by consecutive windows (default: %(default)s)")
    q.add_argument("--max-question-len", type=positive_int, default=64,
                   help="question tokens kept in a window (default: %(default)s)")
    q.add_argument("--max-answer-len", type=positive_int, default=15,
                   help="longest answer, in tokens (default: %(default)s)")
    q.add_argument("--no-align-to-words", dest="align_to_words", action="store_false",
                   help="let answers start or end inside a word of the context (by default a span "
                        "is extended to whole words, as the Hugging Face pipeline's align_to_words)")
    q.add_argument("--n-best", type=positive_int, default=20,
                   help="start and end candidates per window (default: %(default)s)")
    q.add_argument("--batch-size", type=positive_int, default=16,
                   help="windows per forward pass (default: %(default)s)")
    q.add_argument("--allow-no-answer", action="store_true", help="SQuAD v2 style: may answer nothing")
    q.add_argument("--null-threshold", type=finite_float, default=0.0,
                   help="with --allow-no-answer: answer nothing when null - best span logit exceeds "
                        "this (default: %(default)s)")

def qa_options(args):
    from bertqa.qa.decode import DecodeOptions
    from bertqa.qa.pipeline import QAOptions
    from bertqa.qa.windows import WindowOptions
    try:
        return QAOptions(
            windows=WindowOptions(args.max_seq_len, args.doc_stride, args.max_question_len),
            decode=DecodeOptions(args.n_best, args.max_answer_len, args.allow_no_answer, args.null_threshold,
                                 getattr(args, "align_to_words", True)),
            batch_size=args.batch_size)
    except ValueError as e:
        raise BertQAError(str(e)) from None


def load_kwargs(args) -> dict:
    """The keyword arguments of bertqa.load for `args` (also what Ray replicas and actors load)."""
    from bertqa.quant import QuantSpec
    try:
        spec = None if args.spec is None else QuantSpec.parse(args.spec)
    except ValueError as e:
        raise BertQAError(str(e)) from None
    if args.threads is not None and args.threads < 1:
        raise BertQAError(f"--threads must be >= 1, got {args.threads}")
    return dict(model=args.model, target=args.target, precision=args.precision, spec=spec,
                threads=args.threads, backend=args.backend, options=qa_options(args),
                aie_device=args.aie_device, attention=args.attention,
                onnx_provider=getattr(args, "onnx_provider", None),
                onnx_provider_options=provider_options(getattr(args, "onnx_provider_option", None)))


def load_from_args(args, fallback_to_bundled: bool = False):
    import bertqa
    return bertqa.load(**load_kwargs(args), fallback_to_bundled=fallback_to_bundled)


RANDOM_SHAPES = ("bert-large", "bert-base")


def add_random_weights_options(p: argparse.ArgumentParser, why: str) -> None:
    """--random-weights SHAPES and --layers N: a model built in code instead of --model."""
    p.add_argument("--random-weights", choices=RANDOM_SHAPES, default=None,
                   help="instead of --model: random weights in these shapes, with the bundled "
                        f"tokenizer ({why})")
    p.add_argument("--layers", type=positive_int, default=None,
                   help="with --random-weights: encoder layers (default: the shapes' own, 24 or 12)")


def load_model_or_random(args):
    """The QAModel of --model as everywhere (the bundled one without it), or with --random-weights
    an fp32 model of BERT-large/base shapes (seed 0) prepared for the same target options."""
    if args.random_weights is None:
        if args.layers is not None:
            raise BertQAError("--layers applies to --random-weights")
        return load_from_args(args, fallback_to_bundled=args.model is None)
    if args.model is not None:
        raise BertQAError("--random-weights replaces --model: give one of them")
    from dataclasses import replace
    from bertqa.api import from_module
    from bertqa.model.bert import BertConfig, random_model
    from bertqa.model.loading import BUNDLED_DIR
    kwargs = load_kwargs(args)
    config = BertConfig.bert_large() if args.random_weights == "bert-large" else BertConfig()
    if args.layers is not None:
        config = replace(config, num_hidden_layers=args.layers)
    layers = config.num_hidden_layers
    name = f"{args.random_weights} ({layers} layer{'s' * (layers != 1)}, random weights)"
    return from_module(random_model(config), BUNDLED_DIR, name, kwargs["target"] or "cpu",
                       kwargs["precision"] or "fp", kwargs["spec"], kwargs["threads"],
                       kwargs["backend"], kwargs["options"], aie_device=kwargs["aie_device"],
                       attention=kwargs["attention"])


def provider_options(items) -> dict | None:
    """['key=value', ...] -> {'key': 'value'} (ONNX Runtime takes provider options as strings)."""
    if not items:
        return None
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BertQAError(f"--onnx-provider-option takes KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    return options


def print_header(qa, title: str) -> None:
    print(title)
    for note in qa.notes:
        print(f"note: {note}")
    for key, value in qa.header().items():
        if key == "parameters":
            value = f"{value / 1e6:.1f} M"
        print(f"  {key + ':':16} {value}")
    print(f"Layers in model: {qa.layer_summary()}")

