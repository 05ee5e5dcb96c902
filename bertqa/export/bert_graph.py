"""bertqa's BertForQA as an ONNX graph, with each Linear written by a scheme.

The graph computes what bertqa.model.bert computes (embeddings + LayerNorm, fused-QKV attention
with the additive finfo.min mask, exact erf GELU, post-LayerNorm residuals, the span head) in
standard opset-17 operators; inputs input_ids, token_type_ids, attention_mask: int64 [B, S],
outputs start_logits, end_logits: fp32 [B, S]. The encoder knows nothing of quantization: a
scheme object writes every Linear (`scheme.linear(g, name, module, x)`, module an nn.Linear or
a bertqa custom node) and the two activation-by-activation products of attention
(`scheme.matmul(g, tag, a, b)`), so that QDQ schemes can quantize their inputs too.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from onnx import TensorProto, helper
from torch import nn

from bertqa.export.graph import GraphWriter, to_numpy
from bertqa.model.bert import BertForQA

INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT_NAMES = ("start_logits", "end_logits")


def layer_norm(g: GraphWriter, x: str, norm: nn.LayerNorm, name: str) -> str:
    w = g.weight(f"{name}.weight", to_numpy(norm.weight).astype(np.float32))
    b = g.weight(f"{name}.bias", to_numpy(norm.bias).astype(np.float32))
    return g.op("LayerNormalization", [x, w, b], axis=-1, epsilon=float(norm.eps), name=name)


def gelu_erf(g: GraphWriter, x: str, name: str) -> str:
    """0.5 * x * (1 + erf(x / sqrt(2))): torch's exact GELU (ONNX Runtime fuses it to Gelu)."""
    e = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0))])])
    return g.op("Mul", [g.op("Mul", [x, g.const(0.5)]), g.op("Add", [e, g.const(1.0)])], name=name)


def embeddings(g: GraphWriter, emb, ids: str, types: str) -> str:
    word = g.weight("embeddings.word.weight", to_numpy(emb.word.weight).astype(np.float32))
    pos = g.weight("embeddings.position.weight", to_numpy(emb.position.weight).astype(np.float32))
    typ = g.weight("embeddings.token_type.weight", to_numpy(emb.token_type.weight).astype(np.float32))
    seq = g.op("Gather", [g.op("Shape", [ids]), g.const(1, np.int64)])            # S (scalar)
    positions = g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)])  # [S]
    x = g.op("Add", [g.op("Gather", [word, ids]), g.op("Gather", [typ, types])])
    x = g.op("Add", [x, g.op("Gather", [pos, positions])])                         # [B, S, H]
    return layer_norm(g, x, emb.norm, "embeddings.norm")


def additive_mask(g: GraphWriter, mask: str) -> str:
    """[B, S] 1/0 -> [B, 1, 1, S]: 0 where attended, finfo(fp32).min where padded (as BertForQA)."""
    m = g.op("Cast", [mask], to=TensorProto.FLOAT)
    m = g.op("Mul", [g.op("Sub", [g.const(1.0), m]), g.const(float(torch.finfo(torch.float32).min))])
    return g.op("Unsqueeze", [m, g.const([1, 2], np.int64)], name="attention_bias")


def attention(g: GraphWriter, scheme, i: int, att, x: str, bias: str) -> str:
    heads = att.heads
    hidden = att.out.in_features
    hd = hidden // heads
    qkv = scheme.linear(g, f"layers.{i}.attention.qkv", att.qkv, x)                # [B, S, 3H]
    qkv = g.op("Reshape", [qkv, g.const([0, 0, 3, heads, hd], np.int64)])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])                            # [3, B, nh, S, hd]
    q, k, v = (g.op("Gather", [qkv, g.const(j, np.int64)], axis=0, name=f"layers.{i}.attention.{n}")
               for j, n in enumerate("qkv"))                                       # [B, nh, S, hd]
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])                                  # [B, nh, hd, S]
    scores = scheme.matmul(g, f"layers.{i}.attention.scores", q, kt)               # [B, nh, S, S]
    scores = g.op("Add", [g.op("Mul", [scores, g.const(hd ** -0.5)]), bias])
    probs = g.op("Softmax", [scores], axis=-1, name=f"layers.{i}.attention.probs")
    ctx = scheme.matmul(g, f"layers.{i}.attention.context", probs, v)              # [B, nh, S, hd]
    ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.const([0, 0, hidden], np.int64)])
    y = scheme.linear(g, f"layers.{i}.attention.out", att.out, ctx)
    return layer_norm(g, g.op("Add", [x, y]), att.norm, f"layers.{i}.attention.norm")


def feed_forward(g: GraphWriter, scheme, i: int, ffn, x: str) -> str:
    h = scheme.linear(g, f"layers.{i}.ffn.up", ffn.up, x)
    lw = getattr(ffn.up, "lw", None)
    if isinstance(ffn.act, nn.GELU) or (lw is not None and lw.gelu):   # a node may have absorbed it
        h = gelu_erf(g, h, f"layers.{i}.ffn.act")
    y = scheme.linear(g, f"layers.{i}.ffn.down", ffn.down, h)
    return layer_norm(g, g.op("Add", [x, y]), ffn.norm, f"layers.{i}.ffn.norm")


def build_bert(g: GraphWriter, model: BertForQA, scheme) -> tuple[list, list]:
    """Write the whole model into g; returns (graph inputs, graph outputs) value infos."""
    assert isinstance(model, BertForQA), f"export writes bertqa's BertForQA, got {type(model).__name__}"
    ids, types, mask = INPUT_NAMES
    x = embeddings(g, model.embeddings, ids, types)
    bias = additive_mask(g, mask)
    for i, layer in enumerate(model.layers):
        x = attention(g, scheme, i, layer.attention, x, bias)
        x = feed_forward(g, scheme, i, layer.ffn, x)
    logits = scheme.linear(g, "qa_outputs", model.qa_outputs, x)                  # [B, S, 2]
    start, end = g.op("Split", [logits, g.const([1, 1], np.int64)], n_out=2, axis=-1)
    axes = g.const([-1], np.int64)
    g.nodes.append(helper.make_node("Squeeze", [start, axes], [OUTPUT_NAMES[0]], name=OUTPUT_NAMES[0]))
    g.nodes.append(helper.make_node("Squeeze", [end, axes], [OUTPUT_NAMES[1]], name=OUTPUT_NAMES[1]))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in OUTPUT_NAMES]
    return inputs, outputs
