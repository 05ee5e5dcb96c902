"""`bertqa eval` and `bertqa profile`."""
from __future__ import annotations

import argparse
import sys

from bertqa.cli.registry import subcommand
from bertqa.cli.common import (add_model_options, add_random_weights_options, load_from_args,
                               load_model_or_random, print_header)
from bertqa.cli.demo import print_layer_report
from bertqa.errors import BertQAError

# -- eval ---------------------------------------------------------------------------------------

def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--data", required=True,
                   help="SQuAD v1.1 or v2.0 JSON file, or a CoQA file (scored with CoQA's F1, "
                        "yes/no/unknown turns apart)")
    g.add_argument("--limit", type=int, default=None, help="the first N questions of the file, in file order")
    g.add_argument("--compare", default=None, metavar="T:P[:SPEC][:attn=MODE],...",
                   help="configurations to run over the same questions, e.g. cpu:fp,cpu:int,"
                        "customcpu:int:channel-row,customcpu:int:attn=fp32; the first is the "
                        "reference for dF1 and 'same answer'. All are loaded at once, warmed "
                        "up, and take turns question by question, so latencies are comparable")
    g.add_argument("--predictions", default=None, metavar="PREDS.json",
                   help="score this {question id: answer text} file instead of running a model "
                        "(for CoQA also the official [{id, turn_id, answer}] list)")
    g.add_argument("--predictions-out", default=None, metavar="FILE.json",
                   help="write every question's answer per configuration, with its EM, F1 and latency")
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
    r = p.add_argument_group("on Ray Data model actors (needs bertqa[ray]; docs/scale-out.md)")
    r.add_argument("--ray", action="store_true",
                   help="answer the questions on Ray model actors (local Ray, or --ray-address)")
    from bertqa.cli.batch import add_ray_arguments
    add_ray_arguments(r)


def load_config(args, config):
    """The model of `args` for one --compare configuration."""
    changed = {"target": config.target, "precision": config.precision, "spec": config.spec or args.spec,
               "attention": config.attention or args.attention}
    # no --model: the default model, or the bundled one where it cannot be had (as `demo` does)
    return load_from_args(argparse.Namespace(**{**vars(args), **changed}),
                          fallback_to_bundled=args.model is None)


@subcommand("eval", "score answers to SQuAD v1.1/v2.0 or CoQA questions: EM, F1, latency "
            "(--compare: several configurations, interleaved)", add_eval_arguments)
def run_eval(args) -> int:
    from pathlib import Path
    from bertqa.eval import compare, report
    from bertqa.eval.coqa import read_eval_file, read_eval_predictions
    if args.batch < 1:
        raise BertQAError(f"--batch must be >= 1, got {args.batch}")
    paths = report_paths(args)
    if paths["plot"] and not args.predictions:
        report.require_matplotlib(paths["plot"])
    data = read_eval_file(args.data, args.limit)
    if data.no_gold:
        print(f"warning: {len(data.no_gold)} questions have no gold answer and are not scored: "
              f"{', '.join(data.no_gold[:10])}{' ...' if len(data.no_gold) > 10 else ''}", file=sys.stderr)
    if args.predictions:
        runs = [compare.predictions_run(read_eval_predictions(args.predictions, data), data)]
        model, threads = Path(args.predictions).name, None
    elif args.ray:
        from bertqa.cli.batch import ray_eval_runs
        runs = ray_eval_runs(args, data)
        model, threads = runs[0].info["model"], runs[0].info["threads"]
    else:
        configs = (compare.parse_configs(args.compare) if args.compare
                   else [compare.Config(args.target, args.precision)])
        runs = compare.run_configs(configs, data, lambda c: load_config(args, c), args.batch,
                                   not args.no_progress)
        model, threads = runs[0].info["model"], runs[0].info["threads"]
        for note in sorted({n for r in runs for n in r.info.get("notes", [])}):
            print(f"note: {note}", file=sys.stderr)
    rows = compare.result_rows(runs, data)
    latency = "-" if args.predictions else rows[0]["latency"]
    meta = report.make_meta(data, model, args.machine, threads, latency)
    print(report.format_table(rows, meta))
    write_reports(paths, rows, meta)
    if args.predictions_out:
        from bertqa.eval.per_question import write_per_question
        try:
            write_per_question(args.predictions_out, runs, data)
        except OSError as e:
            raise BertQAError(f"cannot write {args.predictions_out}: {e.strerror or e}") from None
        print(f"wrote {args.predictions_out}")
    return 0


def report_paths(args) -> dict:
    """kind -> output path, checked before the run: a long run must not end on a missing folder."""
    from pathlib import Path
    from bertqa.paths import out_dir
    paths = {"json": args.json, "markdown": args.markdown, "plot": args.plot}
    if args.out:
        out_dir(args.out)
        defaults = {"json": "eval.json", "markdown": "eval.md", "plot": "eval.png"}
        paths = {k: v or str(Path(args.out) / defaults[k]) for k, v in paths.items()}
    for path in filter(None, [*paths.values(), args.predictions_out]):
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
    add_random_weights_options(p, "a model too large to download here: BERT-large's GEMM shapes")
    p.add_argument("--data", default=None,
                   help="stories to ask about (CoQA, SQuAD, text; default: the built-in stories)")
    p.add_argument("--questions", type=int, default=None, help="ask at most N questions in all")


@subcommand("profile", "time a forward pass by layer type: Linear (and backend parts), the host "
            "kernels by what runs them, embeddings, the rest; int8 shifts and saturation per layer "
            "(after a few unprofiled questions)", add_profile_arguments)
def run_profile(args) -> int:
    from bertqa.data.readers import builtin_stories, read_stories
    from bertqa.bench.profile import format_profile, profile_questions
    if args.questions is not None and args.questions < 1:
        raise BertQAError(f"--questions must be >= 1, got {args.questions}")
    stories = read_stories(args.data) if args.data else builtin_stories()
    pairs = [(q, s.context) for s in stories for q in s.questions][:args.questions]
    if not pairs:
        raise BertQAError("no questions to profile")
    qa = load_model_or_random(args)
    print_header(qa, "bertqa profile")
    print()
    print(format_profile(profile_questions(qa, pairs)))
    if qa.precision == "int":
        print_layer_report(qa)
    return 0

