"""`bertqa demo` (the seed's run.py) and `bertqa prepare`."""
from __future__ import annotations

import argparse

from bertqa.cli.registry import subcommand
from bertqa.cli.common import NO_ANSWER, add_model_options, load_from_args, print_header
from bertqa.cli.values import non_negative_int
from bertqa.errors import BertQAError
from bertqa.qa.history import DEFAULT_HISTORY_MODE, HISTORY_MODES

# -- demo ---------------------------------------------------------------------------------------

def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--data", default=None,
                   help="stories to ask about: CoQA or SQuAD JSON, or a text file with 'Q:' lines "
                        "(default: the built-in stories)")
    p.add_argument("--questions", type=int, default=None, help="ask at most N questions in all")
    p.add_argument("--history", type=non_negative_int, default=0,
                   help="let the last N question/answer turns of a story go before a follow-up "
                        "question (default: 0, each question alone). It costs F1: a SQuAD-trained "
                        "model answers the earlier turn; on the CoQA samples, with the bundled model, "
                        "F1 38.5 alone, 36.2 with N=1 and 34.7 with N=3 (--history-mode open-best; "
                        "24.6 and 4.3 with 'always'; docs/answers.md)")
    p.add_argument("--history-mode", choices=HISTORY_MODES, default=DEFAULT_HISTORY_MODE,
                   help="with --history N: 'always' prepends the turns; 'open' only to questions "
                        "with a pronoun or of at most 3 words; 'best' answers with and without them "
                        "and keeps the higher score; 'open-best' both (default: %(default)s)")
    p.add_argument("--stats", action="store_true", help="print the per-layer int8 report at the end")
    p.add_argument("--structure", default=None, metavar="FILE",
                   help="also draw the prepared model to FILE.png and FILE.svg (see `bertqa structure`)")


@subcommand("demo", "answer questions about stories (the seed's run.py)", add_demo_arguments)
def run_demo(args) -> int:
    from bertqa.api import timed_answer
    from bertqa.data.readers import builtin_stories, read_stories
    stories = read_stories(args.data) if args.data else builtin_stories()
    if args.questions is not None and args.questions < 1:
        raise BertQAError(f"--questions must be >= 1, got {args.questions}")
    if args.structure:
        from bertqa.cli.structure import check_out
        check_out(args.structure)
    qa = load_from_args(args, fallback_to_bundled=args.model is None)
    print_header(qa, "bertqa demo")
    if args.structure:
        from bertqa.cli.structure import draw_structure
        print()
        draw_structure(qa, args.structure)
    asked = 0
    for story in stories:
        if args.questions is not None and asked >= args.questions:
            break
        print(f"\n=== {story.title} ===")
        turns = []
        for question in story.questions:
            if args.questions is not None and asked >= args.questions:
                break
            answer, ms = timed_answer(qa, question, story.context, history=turns,
                                      history_turns=args.history, history_mode=args.history_mode)
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
    from bertqa.paths import out_dir_undone_on_error
    args.target, args.precision = args.target or "customcpu", args.precision or "int"
    # the folder is checked before the minutes a large model takes to prepare, and removed again
    # if preparing or saving fails
    with out_dir_undone_on_error(args.out):
        t0 = time.perf_counter()
        qa = load_from_args(args)
        prepared_s = time.perf_counter() - t0
        out = qa.save(args.out)
    print(f"prepared {qa.model_name} for --target {qa.target} ({qa.header()['quantization']}) "
          f"in {prepared_s:.1f} s; saved to {out} in {time.perf_counter() - t0 - prepared_s:.1f} s")
    return 0
