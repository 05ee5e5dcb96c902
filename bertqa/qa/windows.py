"""Question + context -> model windows with character offsets (the preprocessing step).

The context is tokenized once with the model's fast tokenizer (bertqa.qa.tokenizer), keeping
each token's character span in the original string; long contexts are cut into overlapping
windows framed by the family's special tokens (`[CLS] question [SEP] context piece [SEP]`,
`<s> question </s></s> context piece </s>`), so that an answer can later be sliced out of the
original context by characters: no `##` wordpieces, "Ġ" or "▁", no lower-casing reach the user.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bertqa.errors import InputError
from bertqa.qa.checks import check_int
from bertqa.qa.tokenizer import Tokenizer

__all__ = ["Tokenizer", "Window", "WindowOptions", "check_text", "collate", "make_windows", "question_ids"]


@dataclass(frozen=True)
class WindowOptions:
    max_seq_len: int = 384
    doc_stride: int = 128          # tokens shared by consecutive windows (Hugging Face's meaning)
    max_question_len: int = 64

    def __post_init__(self):
        for name in ("max_seq_len", "doc_stride", "max_question_len"):
            check_int(name, getattr(self, name), 0)
        if self.max_question_len < 1 or self.max_seq_len < self.max_question_len + 4:
            raise ValueError(f"max_seq_len ({self.max_seq_len}) must exceed max_question_len "
                             f"({self.max_question_len}) + 3 special tokens")
        if not 0 <= self.doc_stride < self.max_seq_len - self.max_question_len - 3:
            raise ValueError(f"doc_stride ({self.doc_stride}) must be >= 0 and smaller than the "
                             "context part of a window")


@dataclass
class Window:
    """One model input. ids/type_ids: [S]; offsets[i] = (char_start, char_end) in the context for
    context tokens, None for question and special tokens."""
    example: int                   # index of the (question, context) pair it belongs to
    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int] | None]


def check_text(name: str, text, max_chars: int | None = None) -> None:
    if not isinstance(text, str):
        raise InputError(f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{name} is empty" if not text else f"{name} is whitespace only")
    if max_chars is not None and len(text) > max_chars:
        raise InputError(f"{name} has {len(text)} characters; the limit is {max_chars}")


def question_ids(q_ids: list[int], history_ids: list[int], limit: int) -> list[int]:
    """The question's tokens, preceded by as much of the conversation history as fits `limit`;
    a question longer than the limit keeps its first tokens."""
    if len(q_ids) >= limit:
        return q_ids[:limit]
    room = limit - len(q_ids)
    return (history_ids[-room:] if room and history_ids else []) + q_ids


def make_windows(tokenizer: Tokenizer, questions: list[str], contexts: list[str],
                 opts: WindowOptions, histories: list[str] | None = None) -> list[Window]:
    """All windows of all (question, context) pairs, in pair order."""
    layout = tokenizer.layout
    histories = histories or [""] * len(questions)
    q_enc = tokenizer.encode_many(questions)
    h_enc = tokenizer.encode_many(histories)
    c_enc = tokenizer.encode_many(contexts)
    windows = []
    for ex, ((q_ids, _), (h_ids, _), (c_ids, c_offs)) in enumerate(zip(q_enc, h_enc, c_enc)):
        if not c_ids:
            raise InputError(f"context {ex} has no tokens the model knows")
        q = question_ids(q_ids, h_ids, opts.max_question_len)
        room = opts.max_seq_len - len(q) - layout.n_special         # context tokens per window
        step = room - opts.doc_stride
        if step < 1:
            raise InputError(f"doc_stride ({opts.doc_stride}) must be smaller than the context part "
                             f"of a window ({room} tokens with this tokenizer's {layout.n_special} "
                             "special tokens)")
        head_ids = [*layout.prefix, *q, *layout.middle]
        head_types = [*layout.prefix_types, *[layout.question_type] * len(q), *layout.middle_types]
        start = 0
        while True:
            piece = range(start, min(start + room, len(c_ids)))
            ids = [*head_ids, *(c_ids[i] for i in piece), *layout.suffix]
            type_ids = [*head_types, *[layout.context_type] * len(piece), *layout.suffix_types]
            offsets = ([None] * len(head_ids) + [tuple(c_offs[i]) for i in piece]
                       + [None] * len(layout.suffix))
            windows.append(Window(ex, ids, type_ids, offsets))
            if piece.stop >= len(c_ids):
                break
            start += step
    return windows


def collate(windows: list[Window], pad_id: int):
    """Dynamic padding to the longest window: (input_ids, token_type_ids, attention_mask) [B, S]."""
    longest = max(len(w.ids) for w in windows)
    ids = torch.full((len(windows), longest), pad_id, dtype=torch.long)
    types = torch.zeros((len(windows), longest), dtype=torch.long)
    mask = torch.zeros((len(windows), longest), dtype=torch.long)
    for i, w in enumerate(windows):
        n = len(w.ids)
        ids[i, :n] = torch.tensor(w.ids)
        types[i, :n] = torch.tensor(w.type_ids)
        mask[i, :n] = 1
    return ids, types, mask
