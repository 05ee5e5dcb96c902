"""Packed batches: a right-padded batch of windows run as the sequence of its real tokens.

A batch of windows of different lengths is padded to the longest. Every step of BertForQA but
attention works row by row (the Linear layers, LayerNorm, GELU; an int8 node quantizes each row
by itself), so those steps need never see the padded rows. `pack(attention_mask)` says how a
batch packs: the real tokens of all windows one after the other, as one [1, T, H] sequence
(T = the sum of the lengths). BertForQA gathers the embeddings into it (before ELECTRA's
projection, a Linear), runs every layer on it with attention per window -- the core on the
window's slice of the packed QKV with the window's own [1, 1, 1, n] mask, which is what the
window gets alone -- and scatters the QA logits back to [B, S], padded positions PADDED_LOGIT.

Assumes right padding: in each row the tokens whose attention_mask is 1 come first and the rest
are padding, dropped (bertqa.qa.windows.collate pads so). A batch packs when it is on the CPU,
run eagerly (not traced, compiled or exported: packing reads the mask's values) and has at least
one padded token; otherwise `pack` returns None and the model runs the padded batch, attention
per sequence (bertqa.model.bert.per_sequence) where it can.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# the start and end logits of padded positions in a packed batch: far below any real logit, so
# that an argmax or softmax over a whole padded row never picks one, and finite, so that sums of
# two (start + end) stay finite; the value transformers' QA pipeline gives masked-out tokens
PADDED_LOGIT = -10000.0


def eager_cpu(t: torch.Tensor) -> bool:
    """Whether `t` is a CPU tensor of an eager run, whose values Python may read."""
    return (t.device.type == "cpu" and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


def right_padded_lengths(keep: torch.Tensor) -> list[int] | None:
    """keep: [B, S] bool, True at real tokens -> each row's length, if every row is its real
    tokens followed by padding only; None otherwise (holes, left padding)."""
    lengths = keep.sum(dim=1)                                            # [B]
    expected = torch.arange(keep.shape[1], device=keep.device)[None, :] < lengths[:, None]
    return lengths.tolist() if torch.equal(keep, expected) else None


@dataclass(frozen=True)
class Packing:
    """How one right-padded batch packs: real [B, S] bool marks its real tokens, lengths[i]
    how many window i has (the first lengths[i] of its row)."""
    real: torch.Tensor
    lengths: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, S, E] -> [1, T, E], the real tokens of window 0, then window 1, ..."""
        return x[self.real][None]

    def attention(self, core, qkv: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
        """core (SelfAttention.core) over each window's slice of qkv: [1, T, 3H] -> [1, T, H],
        with the window's mask mask[i:i+1, ..., :n] (mask: the batch's [B, 1, 1, S]). A slice
        of a [1, T, 3H] tensor along T is contiguous, with the strides it has alone."""
        t, h3 = qkv.shape[1], qkv.shape[2]
        assert qkv.shape[0] == 1 and t == self.tokens, \
            f"qkv {tuple(qkv.shape)} is not the {self.tokens} packed tokens"
        out = qkv.new_empty(1, t, h3 // 3)
        at = 0
        for i, n in enumerate(self.lengths):
            if n:                                  # a window of no tokens has nothing to attend
                out[:, at:at + n] = core(qkv[:, at:at + n], mask[i:i + 1, ..., :n], heads)
            at += n
        return out

    def scatter(self, y: torch.Tensor) -> torch.Tensor:
        """y: [1, T, C] -> [B, S, C]: each window's rows back in its row, padded positions
        PADDED_LOGIT."""
        out = y.new_full((*self.real.shape, y.shape[-1]), PADDED_LOGIT)
        out[self.real] = y[0]
        return out


def pack(attention_mask: torch.Tensor | None) -> Packing | None:
    """The Packing of a batch with this attention_mask ([B, S], 1 at real tokens), or None
    where the batch runs padded (see the module docstring)."""
    if attention_mask is None or attention_mask.dim() != 2 or not eager_cpu(attention_mask):
        return None
    real = attention_mask == 1
    lengths = right_padded_lengths(real)
    if lengths is None or sum(lengths) == real.numel():        # holes, or nothing padded
        return None
    return Packing(real, tuple(lengths))
