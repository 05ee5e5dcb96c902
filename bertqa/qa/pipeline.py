"""preprocess -> forward -> postprocess: questions about contexts in, answers out.

Knows the model only as a callable (input_ids, token_type_ids, attention_mask) -> (start, end)
logits, so the same pipeline runs every target and precision.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from bertqa.errors import InputError
from bertqa.qa.decode import Answer, DecodeOptions, decode
from bertqa.qa.windows import Tokenizer, Window, WindowOptions, check_text, collate, make_windows

MAX_CONTEXT_CHARS = 1_000_000
MAX_QUESTION_CHARS = 2_000


@dataclass
class QAOptions:
    windows: WindowOptions = field(default_factory=WindowOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    batch_size: int = 16           # windows per forward pass (dynamic padding inside a batch)
    max_context_chars: int = MAX_CONTEXT_CHARS

    def with_decode(self, **changes) -> "QAOptions":
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, decode=replace(self.decode, **changes)) if changes else self


def decode_pairs(contexts: Sequence[str], windows: list[Window], logits: list,
                 decodes: Sequence[DecodeOptions], top_ks: Sequence[int]) -> list[list[Answer]]:
    """Answers for each (question, context) pair from the logits of its windows; a pair's own
    decode options and top_k apply to it, so pairs that shared a forward batch need not share
    them. windows[i].example indexes contexts; logits[i] = (start [S], end [S]) of windows[i]."""
    assert len(windows) == len(logits), f"{len(windows)} windows but {len(logits)} logits"
    per_example = [[] for _ in contexts]
    for w, lg in zip(windows, logits):
        per_example[w.example].append((w, lg))
    return [decode(contexts[ex], [w for w, _ in items], [lg[0] for _, lg in items],
                   [lg[1] for _, lg in items], decodes[ex], top_ks[ex])
            for ex, items in enumerate(per_example)]


def history_text(turns: Sequence[tuple[str, str]] | None, last: int) -> str:
    """The last `last` (question, answer) turns as one text to put before a follow-up question."""
    if not turns or last <= 0:
        return ""
    return " ".join(f"{q} {a}" for q, a in list(turns)[-last:])


class QAPipeline:
    """max_positions: the model's position embeddings (a window may not be longer), or None."""

    def __init__(self, model: Callable, tokenizer: Tokenizer, options: QAOptions | None = None,
                 device: str | torch.device = "cpu", max_positions: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_positions = max_positions
        self.options = options or QAOptions()
        self.device = torch.device(device)
        self.check_options(self.options)

    def check_options(self, options: QAOptions) -> None:
        """InputError if options' windows would be longer than the model's positions."""
        n = options.windows.max_seq_len
        if self.max_positions is not None and n > self.max_positions:
            raise InputError(f"max_seq_len ({n}) exceeds the model's {self.max_positions} "
                             "position embeddings: a window may be at most that long")

    def windows(self, questions, contexts, histories=None, options: QAOptions | None = None):
        opts = options or self.options
        self.check_options(opts)
        for q in questions:
            check_text("question", q, MAX_QUESTION_CHARS)
        for c in contexts:
            check_text("context", c, opts.max_context_chars)
        return make_windows(self.tokenizer, list(questions), list(contexts), opts.windows, histories)

    @torch.inference_mode()
    def logits(self, windows, batch_size: int):
        """Run the model over windows in batches; -> per window (start [S], end [S]) numpy arrays,
        in the order of windows. Batches are formed longest first, so that a batch pads its
        windows to a similar length: in pair order, one long context among short ones would make
        every batch it falls in cost its length per window (slower than one at a time)."""
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
        out = [None] * len(windows)
        for at in range(0, len(order), batch_size):
            chunk = order[at:at + batch_size]
            batch = [windows[i] for i in chunk]
            ids, types, mask = (t.to(self.device) for t in collate(batch, self.tokenizer.pad_id))
            start, end = self.model(ids, types, mask)                   # [B, S] each
            start, end = start.float().cpu().numpy(), end.float().cpu().numpy()
            for j, i in enumerate(chunk):
                n = len(windows[i].ids)
                out[i] = (start[j, :n], end[j, :n])
        return out

    def answer_batch(self, questions: Sequence[str], contexts: Sequence[str],
                     histories: Sequence[str] | None = None, top_k: int = 1,
                     options: QAOptions | None = None) -> list[list[Answer]]:
        """top_k answers for each (question, context) pair; all windows share the batches."""
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        if not questions:
            return []
        opts = options or self.options
        windows = self.windows(questions, contexts, histories, opts)
        logits = self.logits(windows, opts.batch_size)
        n = len(questions)
        return decode_pairs(contexts, windows, logits, [opts.decode] * n, [top_k] * n)

    def answer(self, question: str, context: str, history: Sequence[tuple[str, str]] | None = None,
               history_turns: int = 0, top_k: int = 1, options: QAOptions | None = None):
        """The best Answer (or a list of top_k) for one question about one context."""
        hist = [history_text(history, history_turns)]
        answers = self.answer_batch([question], [context], hist, top_k, options)[0]
        return answers if top_k > 1 else answers[0]
