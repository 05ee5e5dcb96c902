"""Calibration for the static QDQ schemes: per-tensor max |x| of every MatMul input.

The windows come from the built-in stories (the questions bertqa.load calibrates its int16
shifts on) or from a stories file (`--calibrate FILE`: CoQA, SQuAD or text, read as the demo
reads it). The statistics are taken on the fp32 PyTorch model, which computes what the fp32
graph computes: forward pre-hooks on every nn.Linear give the Linear inputs, and a recording
attention core (BertForQA.set_host_kernels) gives Q, K^T, the probabilities and V under the
tags the graph uses (bert_graph: '<layer>.attention.scores.a/.b', '.context.a/.b').
Each window runs alone (no padding), so that padded positions do not enter the statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertqa.data.readers import builtin_stories, read_stories
from bertqa.errors import DataError
from bertqa.qa.pipeline import QAOptions, QAPipeline
from bertqa.qa.windows import collate


@dataclass
class Calibration:
    source: str                     # 'built-in stories' or the file's path
    questions: int
    windows: list                   # (input_ids, token_type_ids, attention_mask) [1, S] each

    def describe(self) -> dict:
        return {"source": self.source, "questions": self.questions, "windows": len(self.windows),
                "statistic": "max |x| per tensor over the windows (fp32 model)"}


def calibration_windows(tokenizer, options: QAOptions | None = None, path: str | None = None,
                        questions_per_story: int = 3, max_questions: int = 64) -> Calibration:
    """Windows of up to `questions_per_story` questions per story (at most max_questions)."""
    stories = read_stories(path) if path else builtin_stories()
    pairs = [(q, s.context) for s in stories for q in s.questions[:questions_per_story]][:max_questions]
    if not pairs:
        raise DataError(f"{path or 'the built-in stories'}: no questions to calibrate on")
    pipeline = QAPipeline(lambda *a: None, tokenizer, options or QAOptions())
    windows = pipeline.windows([q for q, _ in pairs], [c for _, c in pairs])
    return Calibration(path or "built-in stories", len(pairs),
                       [collate([w], tokenizer.pad_id) for w in windows])


def activation_amax(model: nn.Module, calibration: Calibration) -> dict[str, float]:
    """tag -> max |x| of every quantized MatMul input of `model` (a BertForQA, fp32)."""
    amax: dict[str, float] = {}

    def record(tag: str, t: torch.Tensor) -> None:
        value = float(t.detach().abs().max()) if t.numel() else 0.0
        if not math.isfinite(value):
            raise DataError(f"calibration: {tag} saw a non-finite value")
        amax[tag] = max(amax.get(tag, 0.0), value)

    def pre_hook(name):
        return lambda _module, args: record(name, args[0])

    def attention_for(layer: int):
        def core(qkv, mask, heads):                 # SelfAttention.core, explicit softmax
            b, s, h3 = qkv.shape
            q, k, v = qkv.view(b, s, 3, heads, h3 // (3 * heads)).permute(2, 0, 3, 1, 4)
            tag = f"layers.{layer}.attention"
            kt = k.transpose(-1, -2)
            record(f"{tag}.scores.a", q)
            record(f"{tag}.scores.b", kt)
            scores = (q @ kt) * (q.shape[-1] ** -0.5)
            probs = F.softmax(scores if mask is None else scores + mask, dim=-1)
            record(f"{tag}.context.a", probs)
            record(f"{tag}.context.b", v)
            return (probs @ v).transpose(1, 2).reshape(b, s, h3 // 3)
        return core

    handles = [m.register_forward_pre_hook(pre_hook(n)) for n, m in model.named_modules()
               if type(m) is nn.Linear]
    saved = [(layer.attention.core) for layer in model.layers]
    for i, layer in enumerate(model.layers):
        layer.attention.core = attention_for(i)
    try:
        with torch.inference_mode():
            for ids, types, mask in calibration.windows:
                model(ids, types, mask)
    finally:
        for h in handles:
            h.remove()
        for layer, core in zip(model.layers, saved):
            layer.attention.core = core
    return amax


def save_windows(export_dir: str, path: str, calibrate: str | None = None) -> int:
    """The calibration windows for export_dir's tokenizer as an .npz (input_ids_0, ...), for
    quantizers that run outside bertqa's environment (scripts/quark_quantize_export.py)."""
    import numpy as np
    from pathlib import Path

    from bertqa.qa.windows import Tokenizer
    cal = calibration_windows(Tokenizer(Path(export_dir)), path=calibrate)
    arrays = {f"{name}_{i}": t.numpy() for i, w in enumerate(cal.windows)
              for name, t in zip(("input_ids", "token_type_ids", "attention_mask"), w)}
    np.savez(path, **arrays)
    return len(cal.windows)
