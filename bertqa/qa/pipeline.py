"""preprocess -> forward -> postprocess: questions about contexts in, answers out.

Knows the model only as a callable (input_ids, token_type_ids, attention_mask) -> (start, end)
logits, so the same pipeline runs every target and precision.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Sequence

import torch

from bertqa.errors import InputError
from bertqa.qa.checks import check_int
from bertqa.qa.decode import Answer, DecodeOptions, decode
from bertqa.qa.history import DEFAULT_HISTORY_MODE, HISTORY_MODES, answer_with_history
from bertqa.qa.windows import Tokenizer, Window, WindowOptions, check_text, collate, make_windows

MAX_CONTEXT_CHARS = 1_000_000
MAX_QUESTION_CHARS = 2_000


@dataclass
class QAOptions:
    windows: WindowOptions = field(default_factory=WindowOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    batch_size: int = 16           # windows per forward pass (dynamic padding inside a batch)
    max_context_chars: int = MAX_CONTEXT_CHARS

    def __post_init__(self):
        check_int("batch_size", self.batch_size, 1)
        check_int("max_context_chars", self.max_context_chars, 1)

    def with_decode(self, **changes) -> "QAOptions":
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, decode=replace(self.decode, **changes)) if changes else self

    def with_options(self, **changes) -> "QAOptions":
        """These options with some fields changed by name, whichever part holds them
        (max_answer_len, doc_stride, batch_size, ...); None leaves a field as it is. A name that
        is no option: TypeError listing the valid ones; a bad value: ValueError naming it."""
        unknown = sorted(set(changes) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r}; valid options: {', '.join(OPTION_NAMES)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        parts = {part: {k: v for k, v in changes.items() if OPTION_NAMES[k] == part}
                 for part in ("windows", "decode", None)}
        return replace(self, **parts[None],
                       **{part: replace(getattr(self, part), **c) for part, c in parts.items()
                          if part and c})


# option name -> the part of QAOptions that holds it (None: QAOptions itself)
OPTION_NAMES = {**{f.name: "decode" for f in fields(DecodeOptions)},
                **{f.name: "windows" for f in fields(WindowOptions)},
                "batch_size": None, "max_context_chars": None}


def as_pairs(questions, contexts) -> tuple[list, list]:
    """(questions, contexts) as two equal lists from what a caller may pass: a list of questions
    with a list of contexts, or with one context string they all share; one question string;
    a {"question", "context"} dict or a list of them (contexts None)."""
    if isinstance(questions, (str, dict)):
        questions = [questions]
    if not isinstance(questions, (list, tuple)):
        raise TypeError(f"questions must be a list of strings or of {{'question', 'context'}} dicts, "
                        f"got {type(questions).__name__}")
    dicts = [isinstance(q, dict) for q in questions]
    if any(dicts):
        if not all(dicts):
            raise ValueError("questions mixes {'question', 'context'} dicts and other items")
        if contexts is not None:
            raise ValueError("the questions are {'question', 'context'} dicts: give no contexts besides")
        pairs = [pair_of_dict(q, f"questions[{i}]") for i, q in enumerate(questions)]
        return [q for q, _ in pairs], [c for _, c in pairs]
    if isinstance(contexts, str):
        contexts = [contexts] * len(questions)          # one context shared by every question
    if not isinstance(contexts, (list, tuple)):
        raise TypeError(f"contexts must be a string or a list of strings, got {type(contexts).__name__}")
    return list(questions), list(contexts)


def pair_of_dict(item: dict, where: str) -> tuple:
    """(question, context) of a {"question": ..., "context": ...} dict."""
    missing = [k for k in ("question", "context") if k not in item]
    extra = sorted(set(item) - {"question", "context"}, key=str)
    if missing or extra:
        raise ValueError(f"{where} must have the keys 'question' and 'context'"
                         + (f"; missing {', '.join(map(repr, missing))}" if missing else "")
                         + (f"; unknown {', '.join(map(repr, extra))}" if extra else ""))
    return item["question"], item["context"]


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

    @property
    def packs_batches(self) -> bool:
        """Whether a batch's padding costs nothing: the model runs a right-padded batch on the
        CPU as its real tokens only (BertForQA.pack_batches, bertqa.model.packing)."""
        return self.device.type == "cpu" and getattr(self.model, "pack_batches", False) is True

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
        """top_k answers for each (question, context) pair; all windows share the batches.
        histories[i]: text put before question i (as much as fits max_question_len)."""
        check_int("top_k", top_k, 1)
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        if histories is not None and len(histories) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(histories)} histories")
        if not questions:
            return []
        opts = options or self.options
        windows = self.windows(questions, contexts, histories, opts)
        logits = self.logits(windows, opts.batch_size)
        n = len(questions)
        return decode_pairs(contexts, windows, logits, [opts.decode] * n, [top_k] * n)

    def answer(self, question: str, context: str, history: Sequence[tuple[str, str]] | None = None,
               history_turns: int = 0, top_k: int = 1, options: QAOptions | None = None,
               history_mode: str = DEFAULT_HISTORY_MODE):
        """The best Answer (or a list of top_k) for one question about one context; with
        history_turns > 0, the last turns of `history` [(question, answer), ...] may be put
        before the question, as history_mode says (bertqa.qa.history)."""
        check_int("top_k", top_k, 1)
        check_int("history_turns", history_turns, 0)
        if history_mode not in HISTORY_MODES:
            raise ValueError(f"history_mode must be one of {', '.join(HISTORY_MODES)}, got {history_mode!r}")
        answers = answer_with_history(
            lambda hists: self.answer_batch([question] * len(hists), [context] * len(hists), hists,
                                            top_k, options),
            question, history, history_turns, history_mode)
        return answers if top_k > 1 else answers[0]
