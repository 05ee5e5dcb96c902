"""The command line: `bertqa {demo,prepare,eval,profile,bench,serve}`; `python run.py` is `bertqa demo`.

A thin layer: each subcommand is a short function over the library API. Errors the user can
fix (BertQAError, bad option values) print one line and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from bertqa.errors import BertQAError

NO_ANSWER = "I am unable to find the answer to this question. Can you please ask another question?"
SUBCOMMANDS: dict = {}     # name -> (help, add_arguments, run)


def subcommand(name: str, help: str, add_arguments):
    def register(fn):
        SUBCOMMANDS[name] = (help, add_arguments, fn)
        return fn
    return register


# -- shared options -----------------------------------------------------------------------------

def add_model_options(p: argparse.ArgumentParser, default_target: str = "cpu") -> None:
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
                   help="int8 variant: default, int32, channel-row, seed-shift4, or "
                        "weights=tensor|channel,acts=tensor|row,requant=int16|int32,shift=N")
    g.add_argument("--backend", default=None, help="force one Linear backend for a custom target")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch and the kernels")
    g.add_argument("--aie-device", choices=("auto", "emulator", "npu"), default=None,
                   help="with --target aie: run the tiles on the NPU or on the tile-exact emulator "
                        "(default auto: the NPU where one is found)")
    q = p.add_argument_group("question answering")
    q.add_argument("--max-seq-len", type=int, default=384)
    q.add_argument("--doc-stride", type=int, default=128, help="tokens shared by consecutive windows")
    q.add_argument("--max-question-len", type=int, default=64)
    q.add_argument("--max-answer-len", type=int, default=30, help="in tokens")
    q.add_argument("--n-best", type=int, default=20)
    q.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    q.add_argument("--allow-no-answer", action="store_true", help="SQuAD v2 style: may answer nothing")
    q.add_argument("--null-threshold", type=float, default=0.0,
                   help="with --allow-no-answer: answer nothing when null - best span logit exceeds this")


def qa_options(args):
    from bertqa.qa.decode import DecodeOptions
    from bertqa.qa.pipeline import QAOptions
    from bertqa.qa.windows import WindowOptions
    try:
        return QAOptions(
            windows=WindowOptions(args.max_seq_len, args.doc_stride, args.max_question_len),
            decode=DecodeOptions(args.n_best, args.max_answer_len, args.allow_no_answer, args.null_threshold),
            batch_size=max(1, args.batch_size))
    except ValueError as e:
        raise BertQAError(str(e)) from None


def load_from_args(args, fallback_to_bundled: bool = False):
    import bertqa
    from bertqa.quant import QuantSpec
    try:
        spec = None if args.spec is None else QuantSpec.parse(args.spec)
    except ValueError as e:
        raise BertQAError(str(e)) from None
    if args.threads is not None and args.threads < 1:
        raise BertQAError(f"--threads must be >= 1, got {args.threads}")
    return bertqa.load(model=args.model, target=args.target, precision=args.precision, spec=spec,
                       threads=args.threads, backend=args.backend, options=qa_options(args),
                       fallback_to_bundled=fallback_to_bundled, aie_device=args.aie_device)


def print_header(qa, title: str) -> None:
    print(title)
    for note in qa.notes:
        print(f"note: {note}")
    for key, value in qa.header().items():
        if key == "parameters":
            value = f"{value / 1e6:.1f} M"
        print(f"  {key + ':':16} {value}")
    print(f"Layers in model: {qa.layer_summary()}")


# -- demo ---------------------------------------------------------------------------------------

def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--data", default=None,
                   help="stories to ask about: CoQA or SQuAD JSON, or a text file with 'Q:' lines "
                        "(default: the built-in stories)")
    p.add_argument("--questions", type=int, default=None, help="ask at most N questions in all")
    p.add_argument("--history", type=int, default=0,
                   help="prepend the last N question/answer turns of a story to each question")
    p.add_argument("--stats", action="store_true", help="print the per-layer int8 report at the end")


@subcommand("demo", "answer questions about stories (the seed's run.py)", add_demo_arguments)
def run_demo(args) -> int:
    from bertqa.api import timed_answer
    from bertqa.data.readers import builtin_stories, read_stories
    stories = read_stories(args.data) if args.data else builtin_stories()
    if args.questions is not None and args.questions < 1:
        raise BertQAError(f"--questions must be >= 1, got {args.questions}")
    qa = load_from_args(args, fallback_to_bundled=args.model is None)
    print_header(qa, "bertqa demo")
    asked = 0
    for story in stories:
        if args.questions is not None and asked >= args.questions:
            break
        print(f"\n=== {story.title} ===")
        turns = []
        for question in story.questions:
            if args.questions is not None and asked >= args.questions:
                break
            answer, ms = timed_answer(qa, question, story.context, history=turns, history_turns=args.history)
            print(f"\nQuestion:\n{question}\n\nAnswer:")
            print(NO_ANSWER if answer.is_impossible or not answer.text.strip() else answer.text)
            print(f"{asked} score: {answer.score:.3f}  inference time: {ms:.1f} ms\n********************")
            turns.append((question, answer.text))
            asked += 1
    if args.stats:
        print_layer_report(qa)
    return 0


def print_layer_report(qa) -> None:
    from bertqa.targets import int8_layer_report
    rows = int8_layer_report(qa.prepared.model)
    if not rows:
        print("\n(no custom nodes: the per-layer report needs --target customcpu, aie or gpu)")
        return
    print(f"\n{'layer':34} {'K':>5} {'N':>5} {'shift':>5} {'saturated':>9} {'rate':>8} {'ms':>8}")
    for r in rows:
        print(f"{r['name']:34} {r['K']:5} {r['N']:5} {r['shift']:5} {r['saturated']:9} "
              f"{r['sat_rate']:8.2e} {r['seconds'] * 1e3:8.1f}")
    device_rows = [(r["name"], r["device"]) for r in rows if "device" in r]
    if device_rows:
        print_device_report(device_rows)


def print_device_report(rows) -> None:
    """The AIE device's work per layer: tile M x K x N, tile invocations, MACs wasted on padding,
    bytes moved (activations in, results out per run; weights once)."""
    print(f"\n{'layer':34} {'tile':>13} {'tiles':>8} {'MACs':>9} {'wasted':>6} "
          f"{'in KB':>9} {'out KB':>9} {'W KB':>7}")
    total = dict(tiles=0, useful_macs=0, wasted_macs=0, bytes_in=0, bytes_out=0, weight_bytes=0)
    for name, d in rows:
        print(f"{name:34} {d['tile']:>13} {d['tiles']:8} {d['useful_macs']:9.2e} {d['waste']:6.1%} "
              f"{d['bytes_in'] / 1024:9.0f} {d['bytes_out'] / 1024:9.0f} {d['weight_bytes'] / 1024:7.0f}")
        for key in total:
            total[key] += d[key]
    padded = total["useful_macs"] + total["wasted_macs"]
    print(f"{'total':34} {'':>13} {total['tiles']:8} {total['useful_macs']:9.2e} "
          f"{total['wasted_macs'] / padded if padded else 0:6.1%} {total['bytes_in'] / 1024:9.0f} "
          f"{total['bytes_out'] / 1024:9.0f} {total['weight_bytes'] / 1024:7.0f}")


# -- prepare ------------------------------------------------------------------------------------

def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, default_target="customcpu")
    p.add_argument("--out", required=True, help="directory to write the prepared int8 model to")


@subcommand("prepare", "quantize a model once and save it; `--model DIR` then starts from it",
            add_prepare_arguments)
def run_prepare(args) -> int:
    import time
    args.target, args.precision = args.target or "customcpu", args.precision or "int"
    t0 = time.perf_counter()
    qa = load_from_args(args)
    prepared_s = time.perf_counter() - t0
    out = qa.save(args.out)
    print(f"prepared {qa.model_name} for --target {qa.target} ({qa.header()['quantization']}) "
          f"in {prepared_s:.1f} s; saved to {out} in {time.perf_counter() - t0 - prepared_s:.1f} s")
    return 0


# -- serve --------------------------------------------------------------------------------------

def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from bertqa.serve.config import ServeConfig
    d = ServeConfig()
    add_model_options(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default=d.host,
                   help="address to listen on (default: loopback only; 0.0.0.0 exposes the server)")
    g.add_argument("--port", type=int, default=d.port, help="0 picks a free port (printed at start)")
    g.add_argument("--max-batch", type=int, default=d.max_batch,
                   help="windows per forward pass across requests; 1 turns dynamic batching off")
    g.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="how long a batch waits for more requests after its first one")
    g.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests waiting for the model; more get 503 with Retry-After")
    g.add_argument("--timeout-s", type=float, default=d.timeout_s, help="per request; then 504")
    g.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    g.add_argument("--max-question-chars", type=int, default=d.max_question_chars)
    g.add_argument("--max-context-chars", type=int, default=d.max_context_chars)
    g.add_argument("--max-windows", type=int, default=d.max_windows, help="windows per request")
    g.add_argument("--max-items", type=int, default=d.max_items, help="pairs per /v1/answer:batch request")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


@subcommand("serve", "answer questions over HTTP with dynamic batching (needs bertqa[serve])",
            add_serve_arguments)
def run_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise BertQAError(f"bertqa serve needs fastapi and uvicorn ({e.name} is not installed): "
                          "pip install 'bertqa[serve]'") from None
    from bertqa.serve.app import serve
    from bertqa.serve.config import ServeConfig
    try:
        config = ServeConfig(host=args.host, port=args.port, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             timeout_s=args.timeout_s, max_body_bytes=args.max_body_bytes,
                             max_question_chars=args.max_question_chars,
                             max_context_chars=args.max_context_chars,
                             max_windows=args.max_windows, max_items=args.max_items)
    except ValueError as e:
        raise BertQAError(str(e)) from None
    qa = load_from_args(args)
    print_header(qa, "bertqa serve")
    serve(qa, config, args.log_level)
    return 0


# -- bench --------------------------------------------------------------------------------------

def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq", default="384,128", help="sequence lengths, comma-separated")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds per sequence length")
    p.add_argument("--configs", default=",".join(CONFIG_NAMES),
                   help="which of " + ", ".join(CONFIG_NAMES))
    p.add_argument("--layers", type=int, default=None, help="encoder layers (default: BERT-large's 24)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-gemm", action="store_true", help="skip the int8 GEMM table")
    p.add_argument("--no-model", action="store_true", help="skip the whole-model table")
    p.add_argument("--memory", action="store_true",
                   help="instead: peak memory and start time of preparing BERT-large int8 (writes a "
                        "1.3 GB random checkpoint to a temporary directory, removed afterwards)")


CONFIG_NAMES = ("torch-fp32", "torch-int8", "onnxruntime-int8", "customcpu-fp", "customcpu-int")


@subcommand("bench", "BERT-large shapes: torch fp32 / dynamic int8 / ONNX Runtime int8 / customcpu, "
            "and the int8 GEMM against the machine's peak", add_bench_arguments)
def run_bench(args) -> int:
    import torch
    from bertqa.bench.model_bench import format_model_table, run_model_bench
    from bertqa.model.bert import BertConfig
    if args.threads is not None and args.threads < 1:
        raise BertQAError(f"--threads must be >= 1, got {args.threads}")
    threads = args.threads or torch.get_num_threads()
    try:
        seqs = [int(s) for s in args.seq.split(",")]
    except ValueError:
        raise BertQAError(f"--seq takes comma-separated integers, got {args.seq!r}") from None
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIG_NAMES))
    if unknown or not configs or any(not 8 <= s <= 512 for s in seqs):
        raise BertQAError(f"--configs must name some of {', '.join(CONFIG_NAMES)} and --seq lie in "
                          f"8..512 (got configs {configs}, seq {seqs})")
    if args.memory:
        from bertqa.bench.memory_bench import run_memory_bench
        print(f"bertqa bench --memory on {cpu_name()}")
        run_memory_bench(layers=args.layers)
        return 0
    config = BertConfig.bert_large()
    if args.layers:
        config.num_hidden_layers = args.layers
    label = f"BERT-large shapes ({config.num_hidden_layers} layers, hidden {config.hidden_size}), random weights"
    print(f"bertqa bench on {cpu_name()}")
    if not args.no_model:
        results = run_model_bench(config, seqs, args.repeats, configs, threads)
        print(format_model_table(results, label, threads))
    if not args.no_gemm:
        try:
            from bertqa.bench.gemm import print_gemm_table, run_gemm_bench
        except ImportError as e:
            print(f"\nint8 GEMM table skipped: {e}")
        else:
            print()
            print_gemm_table(run_gemm_bench(threads=threads))
    return 0


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


# -- eval ---------------------------------------------------------------------------------------

def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--data", required=True, help="SQuAD v1.1 or v2.0 JSON file")
    g.add_argument("--limit", type=int, default=None, help="the first N questions of the file, in file order")
    g.add_argument("--compare", default=None, metavar="T:P[:SPEC],...",
                   help="configurations to run over the same questions, e.g. cpu:fp,cpu:int,"
                        "customcpu:int:channel-row; the first is the reference for dF1 and 'same answer'")
    g.add_argument("--predictions", default=None, metavar="PREDS.json",
                   help="score this {question id: answer text} file instead of running a model")
    g.add_argument("--batch", type=int, default=1,
                   help="questions per answer_batch call: 1 (default) times each question alone; "
                        "N > 1 runs faster and reports latency amortized over the batch")
    g.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    g.add_argument("--markdown", default=None, metavar="OUT", help="write the table as Markdown")
    g.add_argument("--plot", default=None, metavar="OUT.png", help="plot F1 against median latency")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="write eval.json, eval.md and eval.png into DIR (unless named above)")
    g.add_argument("--machine", default=None, help="the machine's name in the report (default: CPU model)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def load_config(args, config):
    """The model of `args` for one --compare configuration."""
    changed = {"target": config.target, "precision": config.precision, "spec": config.spec or args.spec}
    return load_from_args(argparse.Namespace(**{**vars(args), **changed}))


@subcommand("eval", "score answers to SQuAD v1.1/v2.0 questions: EM, F1, latency (--compare: several "
            "configurations)", add_eval_arguments)
def run_eval(args) -> int:
    from pathlib import Path
    from bertqa.eval import compare, report
    from bertqa.eval.squad_data import read_predictions, read_squad
    if args.batch < 1:
        raise BertQAError(f"--batch must be >= 1, got {args.batch}")
    paths = report_paths(args)
    if paths["plot"] and not args.predictions:
        report.require_matplotlib()
    data = read_squad(args.data, args.limit)
    if data.no_gold:
        print(f"warning: {len(data.no_gold)} questions have no gold answer and are not scored: "
              f"{', '.join(data.no_gold[:10])}{' ...' if len(data.no_gold) > 10 else ''}", file=sys.stderr)
    if args.predictions:
        runs = [compare.predictions_run(read_predictions(args.predictions), data)]
        model, threads = Path(args.predictions).name, None
    else:
        configs = (compare.parse_configs(args.compare) if args.compare
                   else [compare.Config(args.target, args.precision)])
        runs = compare.run_configs(configs, data, lambda c: load_config(args, c), args.batch,
                                   not args.no_progress)
        model, threads = runs[0].info["model"], runs[0].info["threads"]
    rows = compare.result_rows(runs, data)
    latency = "-" if args.predictions else rows[0]["latency"]
    meta = report.make_meta(data, model, args.machine, threads, latency)
    print(report.format_table(rows, meta))
    write_reports(paths, rows, meta)
    return 0


def report_paths(args) -> dict:
    """kind -> output path, checked before the run: a long run must not end on a missing folder."""
    from pathlib import Path
    paths = {"json": args.json, "markdown": args.markdown, "plot": args.plot}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        defaults = {"json": "eval.json", "markdown": "eval.md", "plot": "eval.png"}
        paths = {k: v or str(Path(args.out) / defaults[k]) for k, v in paths.items()}
    for path in filter(None, paths.values()):
        if not Path(path).resolve().parent.is_dir():
            raise BertQAError(f"cannot write {path}: its folder does not exist")
    return paths


def write_reports(paths: dict, rows, meta) -> None:
    from bertqa.eval import report
    writers = {"json": report.write_json, "markdown": report.write_markdown, "plot": report.write_plot}
    for kind, path in paths.items():
        if path is None:
            continue
        try:
            wrote = writers[kind](path, rows, meta) is not False
        except OSError as e:
            raise BertQAError(f"cannot write {path}: {e.strerror or e}") from None
        print(f"wrote {path}" if wrote else f"no {kind} written: no latency to plot")


# -- profile ------------------------------------------------------------------------------------

def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--data", default=None,
                   help="stories to ask about (CoQA, SQuAD, text; default: the built-in stories)")
    p.add_argument("--questions", type=int, default=None, help="ask at most N questions in all")


@subcommand("profile", "time a forward pass by layer type: Linear (and backend parts), attention, "
            "the rest; int8 shifts and saturation per layer", add_profile_arguments)
def run_profile(args) -> int:
    from bertqa.data.readers import builtin_stories, read_stories
    from bertqa.profile import format_profile, profile_questions
    if args.questions is not None and args.questions < 1:
        raise BertQAError(f"--questions must be >= 1, got {args.questions}")
    stories = read_stories(args.data) if args.data else builtin_stories()
    pairs = [(q, s.context) for s in stories for q in s.questions][:args.questions]
    if not pairs:
        raise BertQAError("no questions to profile")
    qa = load_from_args(args, fallback_to_bundled=args.model is None)
    print_header(qa, "bertqa profile")
    print()
    print(format_profile(profile_questions(qa, pairs)))
    if qa.precision == "int":
        print_layer_report(qa)
    return 0


# -- entry point --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertqa", description="Extractive question answering with "
                                     "BERT, Linear layers as int8 custom nodes on pluggable backends.")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(subs.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
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
