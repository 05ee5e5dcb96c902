"""Decoding settings compared on one forward pass per question (SQuAD v1.1 files).

    python -m bertqa.eval.decode_sweep DATA.json [--limit N] --max-answer-len 15 20 30 \\
        [--align on off] [--top-k 5] [--cache LOGITS.pkl] [--threads 2]

Decoding is post-processing: the windows' start/end logits do not depend on max_answer_len,
n_best or align_to_words, so each question is run through the model once and its cached logits
are decoded once per setting. Per setting: EM/F1 of the top answer, the F1 on questions whose
every gold answer is longer than L model tokens (for each L given; what a max_answer_len below
L cannot answer exactly), and how many of the top-k answers cut a word of the context.
"""
from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

from bertqa.data.squad import read_squad
from bertqa.eval.squad_metric import best_over_gold
from bertqa.qa.decode import Words
from bertqa.qa.pipeline import decode_pairs


@dataclass
class Cached:
    """Windows and logits of a chunk of questions, in question order."""
    contexts: list[str]
    windows: list
    logits: list


def cache_logits(qa, questions, chunk: int = 32) -> list[Cached]:
    """One forward pass per question, `chunk` questions' windows sharing the batches."""
    out = []
    for at in range(0, len(questions), chunk):
        part = questions[at:at + chunk]
        contexts = [q.context for q in part]
        windows = qa.pipeline.windows([q.question for q in part], contexts)
        out.append(Cached(contexts, windows, qa.pipeline.logits(windows, qa.options.batch_size)))
    return out


def decode_cached(cached: list[Cached], decode_options, top_k: int) -> list[list]:
    """The top_k answers of every question under decode_options, from the cached logits."""
    answers = []
    for c in cached:
        n = len(c.contexts)
        answers += decode_pairs(c.contexts, c.windows, c.logits, [decode_options] * n, [top_k] * n)
    return answers


def gold_tokens(tokenizer, questions) -> list[int]:
    """Per question, the model tokens of its shortest gold answer."""
    out = []
    for q in questions:
        enc = tokenizer.encode_many(list(q.answers))
        out.append(min(len(ids) for ids, _ in enc))
    return out


def setting_scores(questions, answers, long_at: dict[int, list[int]]) -> dict:
    """EM/F1 (percent) of the top answers, F1 on the long-gold subsets, top-k word cuts."""
    em = f1 = cuts = n_answers = 0.0
    long_f1 = {L: [] for L in long_at}
    for i, (q, ans) in enumerate(zip(questions, answers)):
        e, f = best_over_gold(ans[0].text, q.answers, empty_match=False)
        em, f1 = em + e, f1 + f
        for L, idx in long_at.items():
            if i in idx:
                long_f1[L].append(f)
        words = Words(q.context)
        for a in ans:
            if a.start >= 0:
                n_answers += 1
                cuts += words.cuts_a_word(a.start, a.end)
    n = len(questions)
    return {"em": 100 * em / n, "f1": 100 * f1 / n, "cuts": int(cuts), "answers": int(n_answers),
            **{f"f1_gold_over_{L}": (100 * sum(v) / len(v) if v else None, len(v))
               for L, v in long_f1.items()}}


def main(argv=None) -> int:
    import bertqa
    p = argparse.ArgumentParser(prog="python -m bertqa.eval.decode_sweep", description=__doc__.split("\n")[0])
    p.add_argument("data", help="SQuAD v1.1 JSON file")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-answer-len", type=int, nargs="+", default=[30])
    p.add_argument("--align", nargs="+", choices=("on", "off"), default=["on"])
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--long", type=int, nargs="*", default=[15], help="gold-length thresholds L")
    p.add_argument("--cache", default=None, help="pickle of the logits: read if it exists, else written")
    p.add_argument("--model", default="bundled")
    p.add_argument("--target", default="cpu")
    p.add_argument("--precision", default="fp")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    data = read_squad(args.data, args.limit)
    qa = bertqa.load(model=args.model, target=args.target, precision=args.precision, threads=args.threads)
    cache = Path(args.cache) if args.cache else None
    if cache and cache.is_file():
        cached = pickle.loads(cache.read_bytes())
        # a cache of the whole file serves its first --limit questions too
        assert sum(len(c.contexts) for c in cached) >= len(data.questions), f"{cache} holds fewer questions"
    else:
        cached = cache_logits(qa, data.questions)
        if cache:
            cache.write_bytes(pickle.dumps(cached))
    lengths = gold_tokens(qa.tokenizer, data.questions)
    long_at = {L: {i for i, n in enumerate(lengths) if n > L} for L in args.long}
    print(f"{len(data.questions)} questions of {Path(args.data).name}, {qa.target} {qa.precision}, "
          f"top-{args.top_k}\n")
    print("| max_answer_len | align_to_words | EM | F1 | "
          + " | ".join(f"F1, gold > {L} tokens (n)" for L in args.long)
          + f" | top-{args.top_k} answers cutting a word |")
    print("|---|---|---|---|" + "---|" * len(args.long) + "---|")
    for max_len in args.max_answer_len:
        for align in args.align:
            opts = replace(qa.options.decode, max_answer_len=max_len, align_to_words=align == "on")
            answers = decode_cached(cached, opts, args.top_k)[:len(data.questions)]
            s = setting_scores(data.questions, answers, long_at)
            longs = " | ".join(f"{f:.1f} ({n})" if f is not None else f"- ({n})"
                               for f, n in (s[f"f1_gold_over_{L}"] for L in args.long))
            print(f"| {max_len} | {align} | {s['em']:.2f} | {s['f1']:.2f} | {longs} | "
                  f"{s['cuts']} of {s['answers']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
