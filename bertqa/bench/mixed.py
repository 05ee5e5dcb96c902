"""The bench's mixed-length case: real windows of different lengths, in padded batches.

The fixed cases of `bertqa bench` are random tokens of one length, nothing padded. This one is
the windows of N questions -- spread evenly over a SQuAD file (`--mixed-data`, e.g. the eval
file), else the built-in stories' questions, each about the first k sentences of its story (k
cycling: the three stories are of one length) -- in question order, in batches of `batch` windows,
each batch padded to its longest window (bertqa.qa.windows.collate): what a server's batch of
independent requests looks like. Engines that take the padded batch as it is compute every
padded position; the PyTorch-side engines (BertForQA) run it packed, real tokens only
(bertqa.model.packing), and `customcpu-int-padded` is customcpu int with packing off, so that
packed and padded are timed in the same run. Logits are compared at the real tokens only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bertqa.model.packing import PADDED_LOGIT


@dataclass
class Mixed:
    batches: list         # [(ids, types, mask)]: [b, S_i] each, padded to its longest window
    batch: int            # windows per batch (the last may have fewer)
    questions: int
    source: str           # where the questions come from, in words

    @property
    def windows(self) -> int:
        return sum(ids.shape[0] for ids, _, _ in self.batches)

    @property
    def width(self) -> int:
        return max(ids.shape[1] for ids, _, _ in self.batches)

    def real(self) -> torch.Tensor:
        """[windows, width] bool: True at each window's real tokens (the rows of real_logits)."""
        return torch.cat([F.pad(mask.bool(), (0, self.width - mask.shape[1]), value=False)
                          for _, _, mask in self.batches])

    def lengths(self) -> list[int]:
        return [int(n) for _, _, mask in self.batches for n in mask.sum(dim=1)]

    def describe(self) -> str:
        lengths = self.lengths()
        real, padded = sum(lengths), sum(ids.numel() for ids, _, _ in self.batches)
        return (f"{self.windows} windows of {self.questions} questions ({self.source}), in "
                f"{len(self.batches)} batches of up to {self.batch} in question order, "
                f"{min(lengths)}-{max(lengths)} tokens (mean {real / len(lengths):.0f}); "
                f"{real:,} real tokens of {padded:,} padded ({1 - real / padded:.0%} padding)")


def spread(items: list, n: int) -> list:
    """n of items, evenly spaced from the first (all of them if there are no more than n)."""
    return list(items) if n >= len(items) else [items[i * len(items) // n] for i in range(n)]


def question_pairs(data: str | Path | None) -> tuple[list[tuple[str, str]], str]:
    """(question, context) pairs of a SQuAD file, else of the built-in stories; and their source."""
    if data is not None:
        from bertqa.data.squad import read_squad
        squad = read_squad(data)
        return [(q.question, q.context) for q in squad.questions], Path(data).name
    from bertqa.data.readers import builtin_stories
    pairs = []
    for story in builtin_stories():
        sentences = re.split(r"(?<=[.!?])\s+", story.context.strip())
        for q in story.questions:
            k = 1 + 3 * len(pairs) % len(sentences)          # cycling: the lengths vary
            pairs.append((q, " ".join(sentences[:k])))
    return pairs, "built-in stories, each question about its story's first k sentences; no --mixed-data"


def mixed_case(tokenizer_dir: Path, questions: int = 32, batch: int = 8, data=None,
               max_seq_len: int = 384, vocab_size: int | None = None) -> Mixed:
    """The windows of `questions` questions spread over `data` (see the module docstring),
    at most max_seq_len tokens each, as padded batches of `batch`."""
    from bertqa.qa.windows import Tokenizer, WindowOptions, collate, make_windows
    assert questions >= 1 and batch >= 1, f"questions {questions} and batch {batch} must be >= 1"
    pairs, source = question_pairs(data)
    picked = spread(pairs, questions)
    if len(picked) < len(pairs):
        source += f", {len(picked)} spread over its {len(pairs):,}"
    elif len(picked) < questions:
        source += f", all it has of the {questions} asked"
    tok = Tokenizer(Path(tokenizer_dir))
    opts = WindowOptions(max_seq_len=max_seq_len, doc_stride=min(128, max_seq_len // 3),
                         max_question_len=min(64, max_seq_len // 4))
    windows = make_windows(tok, [q for q, _ in picked], [c for _, c in picked], opts)
    batches = [collate(windows[i:i + batch], tok.pad_id) for i in range(0, len(windows), batch)]
    top = max(int(ids.max()) for ids, _, _ in batches)
    if vocab_size is not None and top >= vocab_size:
        raise ValueError(f"the tokenizer of {tokenizer_dir} gives token id {top}, beyond the "
                         f"model's vocab_size {vocab_size}")
    return Mixed(batches, batch, len(picked), source)


def real_logits(starts: list, ends: list, mixed: Mixed) -> tuple[torch.Tensor, torch.Tensor]:
    """One engine's logits of the mixed case (per batch [b, S_i]) as (start, end) [windows,
    width], PADDED_LOGIT wherever a window has no token (mixed.real() is False): engines that
    compute the padded positions then compare with those that do not at the real tokens alone."""
    def rows(per_batch):
        return torch.cat([F.pad(torch.where(mask.bool(), t.float(), PADDED_LOGIT),
                                (0, mixed.width - t.shape[1]), value=PADDED_LOGIT)
                          for t, (_, _, mask) in zip(per_batch, mixed.batches)])
    return rows(starts), rows(ends)
