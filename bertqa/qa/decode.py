"""Start/end logits of every window -> answers as character slices of the context (postprocessing).

Candidates are the n-best start and end tokens of each window, kept when both lie in the
context (and cover more than whitespace), end >= start and the span is at most max_answer_len tokens. Spans are ranked across
windows by start_logit + end_logit (the original BERT rule: logits are comparable across windows,
per-window probabilities are not). The reported score is the span's probability inside its
window, p_start * p_end, with the softmax taken over the window's context tokens and [CLS].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    max_answer_len: int = 30
    allow_no_answer: bool = False
    null_threshold: float = 0.0    # predict "no answer" when null logit - best span logit > this

    def __post_init__(self):
        if self.n_best < 1 or self.max_answer_len < 1:
            raise ValueError("n_best and max_answer_len must be >= 1")


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
    answers, seen = [], set()
    for logit, prob, a, b in candidates:
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
