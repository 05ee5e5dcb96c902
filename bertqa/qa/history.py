"""Follow-up questions: how the conversation so far may be put before a question.

A model fine-tuned on SQuAD saw single questions only: text before a question is to it part of
the question, and it often answers the earlier turn instead ("always" lowers F1 on CoQA; numbers
in docs/answers.md). The modes:

  always     prepend the last turns to every question (the seed's behaviour)
  open       prepend them only to a question that leaves its subject open: a pronoun or
             demonstrative ("What did she do?"), or at most three words ("For how long?")
  best       answer with and without the turns (one forward batch) and keep the answer with
             the higher span score
  open-best  best, for the questions `open` would prepend to; the others alone
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

HISTORY_MODES = ("always", "open", "best", "open-best")
DEFAULT_HISTORY_MODE = "open-best"     # the least F1 lost on CoQA (docs/answers.md)

# words that point back to an earlier turn
ANAPHORS = frozenset("he she it they him her them his hers its their theirs this that these those "
                     "there then one ones".split())


def history_text(turns: Sequence[tuple[str, str]] | None, last: int) -> str:
    """The last `last` (question, answer) turns as one text to put before a follow-up question."""
    if not turns or last <= 0:
        return ""
    return " ".join(f"{q} {a}" for q, a in list(turns)[-last:])


def leaves_open(question: str) -> bool:
    """Whether a question refers back (a pronoun or demonstrative) or is elliptic (<= 3 words)."""
    words = re.findall(r"[a-z']+", question.lower())
    return len(words) <= 3 or any(w in ANAPHORS for w in words)


def answer_with_history(run: Callable[[list[str]], list[list]], question: str,
                        turns: Sequence[tuple[str, str]] | None, last: int, mode: str) -> list:
    """The answers to `question` given the conversation `turns`; run(histories) answers the
    question once per history text (one batch) and returns one answer list per history."""
    text = history_text(turns, last)
    if not text or (mode in ("open", "open-best") and not leaves_open(question)):
        return run([""])[0]
    if mode in ("always", "open"):
        return run([text])[0]
    alone, with_history = run(["", text])
    return with_history if with_history[0].score > alone[0].score else alone
