"""Start/end logits of every window -> answers as character slices of the context (postprocessing).

Candidates are the n-best start and end tokens of each window, kept when both lie in the
context (and cover more than whitespace), end >= start and the span is at most max_answer_len tokens. Spans are ranked across
windows by start_logit + end_logit (the original BERT rule: logits are comparable across windows,
per-window probabilities are not). The reported score is the span's probability inside its
window, p_start * p_end, with the softmax taken over the window's context tokens and [CLS].

align_to_words (default on, as Hugging Face's pipeline): a span that starts or ends inside a word
of the context is extended to the whole word, so that a wordpiece ("Margaret" of "Margarethe")
never is an answer; spans that then cover the same characters are one answer, with the score of
the best of them. A word is a run of letters, digits and combining marks; punctuation, '_' and
spaces separate words and each CJK ideograph is a word of its own (BERT's basic tokenizer cuts
there too), so alignment never swallows the punctuation next to a word.
"""
from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

import numpy as np

from bertqa.qa.checks import check_bool, check_int
from bertqa.qa.windows import Window


@dataclass(frozen=True)
class Answer:
    text: str
    score: float
    start: int        # character offset in the context; -1 for "no answer"
    end: int          # exclusive

    @property
    def is_impossible(self) -> bool:
        return self.start < 0

    def to_dict(self) -> dict:
        return {"text": self.text, "score": self.score, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class DecodeOptions:
    n_best: int = 20
    max_answer_len: int = 15     # tokens; the choice is measured in docs/answers.md
    allow_no_answer: bool = False
    null_threshold: float = 0.0    # predict "no answer" when null logit - best span logit > this
    align_to_words: bool = True

    def __post_init__(self):
        check_int("n_best", self.n_best, 1)
        check_int("max_answer_len", self.max_answer_len, 1)
        check_bool("allow_no_answer", self.allow_no_answer)
        check_bool("align_to_words", self.align_to_words)
        t = self.null_threshold
        # -inf is allowed: "always rank the null answer first" (bertqa eval on SQuAD v2.0)
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or math.isnan(t):
            raise ValueError(f"null_threshold must be a number (not NaN), got {t!r}")


# CJK ideographs (the ranges BERT's basic tokenizer makes one-character words), and runs of
# letters/digits ([^\W_] is \w without '_') with the combining diacritics that may follow them
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ebef\U0002f800-\U0002fa1f"
_LETTER = rf"(?![{_CJK}])[^\W_]"
WORD = re.compile(rf"[{_CJK}]|{_LETTER}(?:{_LETTER}|[\u0300-\u036f])*")


class Words:
    """The words of one context as sorted character spans, to snap offsets to their boundaries."""

    def __init__(self, context: str):
        spans = [m.span() for m in WORD.finditer(context)]
        self.starts = [a for a, _ in spans]
        self.ends = [b for _, b in spans]

    def _containing(self, i: int) -> int:
        """Index of the word with start < i < end, or -1 (i is at a boundary or outside words)."""
        k = bisect.bisect_left(self.starts, i) - 1         # last word starting before i
        return k if k >= 0 and i < self.ends[k] else -1

    def snap(self, start: int, end: int) -> tuple[int, int]:
        """(start, end) extended so that neither cuts a word."""
        k = self._containing(start)
        if k >= 0:
            start = self.starts[k]
        k = self._containing(end)
        if k >= 0:
            end = self.ends[k]
        return start, end

    def cuts_a_word(self, start: int, end: int) -> bool:
        return self.snap(start, end) != (start, end)


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def window_candidates(start: np.ndarray, end: np.ndarray, window: Window, opts: DecodeOptions):
    """-> [(logit_sum, prob, char_start, char_end)] for one window; start/end: [S] logits."""
    n = len(window.ids)
    ctx = np.array([o is not None for o in window.offsets], dtype=bool)
    start, end = start[:n], end[:n]
    keep = ctx.copy()
    keep[0] = True                                                   # [CLS] joins the softmax
    p_start = np.zeros(n)
    p_end = np.zeros(n)
    p_start[keep] = _softmax(start[keep])
    p_end[keep] = _softmax(end[keep])
    # a token with an empty span (whitespace only: bertqa.qa.tokenizer) may not bound an answer
    ctx_idx = np.array([i for i in np.flatnonzero(ctx) if window.offsets[i][0] < window.offsets[i][1]],
                       dtype=np.int64)
    k = min(opts.n_best, len(ctx_idx))
    starts = ctx_idx[np.argsort(-start[ctx_idx], kind="stable")[:k]]
    ends = ctx_idx[np.argsort(-end[ctx_idx], kind="stable")[:k]]
    out = []
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > opts.max_answer_len:
                continue
            out.append((float(start[s] + end[e]), float(p_start[s] * p_end[e]),
                        window.offsets[s][0], window.offsets[e][1]))
    null = (float(start[0] + end[0]), float(p_start[0] * p_end[0]))
    return out, null


def decode(context: str, windows: list[Window], start_logits: list[np.ndarray],
           end_logits: list[np.ndarray], opts: DecodeOptions, top_k: int = 1) -> list[Answer]:
    """The top_k answers for one (question, context) pair from the logits of its windows."""
    candidates, nulls = [], []
    for w, s, e in zip(windows, start_logits, end_logits):
        c, null = window_candidates(np.asarray(s, dtype=np.float64), np.asarray(e, dtype=np.float64), w, opts)
        candidates += c
        nulls.append(null)
    candidates.sort(key=lambda c: -c[0])
    words = Words(context) if opts.align_to_words else None
    answers, seen = [], set()
    for logit, prob, a, b in candidates:
        if words is not None:
            a, b = words.snap(a, b)            # sorted by logit: the first of a merged span is its best
        if (a, b) in seen:
            continue
        seen.add((a, b))
        answers.append((logit, Answer(context[a:b], prob, a, b)))
        if len(answers) == top_k:
            break
    null_logit, null_prob = min(nulls)                               # the most confident window
    no_answer = Answer("", null_prob, -1, -1)
    if not answers:
        return [no_answer]
    if opts.allow_no_answer and null_logit - answers[0][0] > opts.null_threshold:
        return [no_answer] + [a for _, a in answers[:top_k - 1]]
    return [a for _, a in answers]
