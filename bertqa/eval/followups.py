"""CoQA F1 of follow-up questions asked with the conversation so far, per history mode.

    python -m bertqa.eval.followups DATA.json [DATA2.json ...] --turns 0 1 3 [--threads 2]

Each story's turns are asked in order, as `bertqa demo --history N` asks them: the history of a
turn is the story's earlier questions with the model's own answers (not the gold ones). F1 is
CoQA's (bertqa.eval.coqa), over all turns and over the span-like ones.
"""
from __future__ import annotations

import argparse
from itertools import groupby

from bertqa.eval.coqa import read_coqa, turn_score
from bertqa.qa.history import HISTORY_MODES


def story_turns(data):
    """[(context, [SquadQuestion, ...]), ...]: the turns of each story in order."""
    return [(context, list(qs)) for context, qs in groupby(data.questions, key=lambda q: q.context)]


def followup_scores(qa, datasets, turns: int, mode: str) -> dict:
    """{'f1', 'span_f1', 'n', 'changed'} in percent for one (turns, mode); 'changed': the turns
    whose answer differs from the one asked alone (filled in by the caller's baseline)."""
    f1s, span_f1s, answers = [], [], {}
    for data in datasets:
        for context, questions in story_turns(data):
            history = []
            for q in questions:
                ans = qa.answer(q.question, context, history=history, history_turns=turns,
                                history_mode=mode)
                history.append((q.question, ans.text))
                answers[q.id] = ans.text
                _, f = turn_score(ans.text or "unknown", q.answers)
                f1s.append(f)
                if data.kinds[q.id] == "span":
                    span_f1s.append(f)
    return {"f1": 100 * sum(f1s) / len(f1s), "span_f1": 100 * sum(span_f1s) / max(len(span_f1s), 1),
            "n": len(f1s), "answers": answers}


def main(argv=None) -> int:
    import bertqa
    p = argparse.ArgumentParser(prog="python -m bertqa.eval.followups", description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+", help="CoQA JSON files")
    p.add_argument("--turns", type=int, nargs="+", default=[0, 1, 3])
    p.add_argument("--modes", default=",".join(HISTORY_MODES))
    p.add_argument("--model", default="bundled")
    p.add_argument("--target", default="cpu")
    p.add_argument("--precision", default="fp")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    qa = bertqa.load(model=args.model, target=args.target, precision=args.precision, threads=args.threads)
    datasets = [read_coqa(path) for path in args.data]
    base = followup_scores(qa, datasets, 0, "always")
    print(f"| history | mode | F1 | span-turn F1 | answers changed | turns |\n|---|---|---|---|---|---|")
    print(f"| 0 | - | {base['f1']:.1f} | {base['span_f1']:.1f} | - | {base['n']} |")
    for turns in [t for t in args.turns if t > 0]:
        for mode in args.modes.split(","):
            r = followup_scores(qa, datasets, turns, mode)
            changed = sum(r["answers"][k] != base["answers"][k] for k in base["answers"])
            print(f"| {turns} | {mode} | {r['f1']:.1f} | {r['span_f1']:.1f} | {changed} | {r['n']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
