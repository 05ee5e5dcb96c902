"""A compact BERT encoder with a span-prediction head: the model, and nothing about quantization.

Fused QKV projection, PyTorch SDPA attention, exact (erf) GELU, post-LayerNorm residuals: the
arithmetic of `transformers.BertForQuestionAnswering`, in fewer modules. Every Linear is a plain
nn.Linear, so the quantization layer can swap it without knowing BERT; the model declares the
fused projection and the GELU that may be fused through `quant_groups()` and `gelu_fusions()`.

The other encoder families (bertqa.model.families) are this model with three config fields:
type_vocab_size 0 (DistilBERT: no token-type embedding), positions_from_padding (RoBERTa and
XLM-R count positions from pad_token_id + 1, pad tokens at pad_token_id) and embedding_size
(ELECTRA: narrower embeddings, then an nn.Linear projection to hidden_size).

A right-padded CPU batch runs packed: every layer on its real tokens only, attention per window
(bertqa.model.packing; BertForQA.pack_batches turns it off).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertqa.model.packing import Packing, eager_cpu, pack, right_padded_lengths


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_act: str = "gelu"
    model_type: str = "bert"               # the family (bertqa.model.families) the weights come from
    embedding_size: int | None = None      # None: hidden_size; else projected to it (ELECTRA)
    positions_from_padding: bool = False   # position ids pad+1, pad+2, ... ; pad tokens: pad (RoBERTa)

    def __post_init__(self):
        """ValueError naming the first field a BERT cannot be built from (a config.json may say
        anything: "384" for 384, -1 positions)."""
        for f in fields(self):
            value = getattr(self, f.name)
            least = 0 if f.name in ("pad_token_id", "type_vocab_size") else 1   # 0 types: DistilBERT
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"{f.name} must be an integer >= {least}, got {value!r}")
        if isinstance(self.layer_norm_eps, bool) or not isinstance(self.layer_norm_eps, (int, float)) \
                or not 0 < self.layer_norm_eps < 1:
            raise ValueError(f"layer_norm_eps must be a number in (0, 1), got {self.layer_norm_eps!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act {self.hidden_act!r} is not implemented (only 'gelu', erf)")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is not below vocab_size {self.vocab_size}")

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def bert_large(cls) -> "BertConfig":
        """bert-large-uncased-whole-word-masking-finetuned-squad's shapes."""
        return cls(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)

    @property
    def max_window(self) -> int:
        """The longest input the position embeddings cover."""
        if self.positions_from_padding:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @property
    def n_parameters(self) -> int:
        h, i, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        e = self.embedding_size or h
        emb = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * e + 2 * e
        if e != h:
            emb += e * h + h
        layer = (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        return emb + L * layer + 2 * h + 2


class Embeddings(nn.Module):
    """word + token type (if the family has them) + position, LayerNorm, and for ELECTRA a
    projection from embedding_size E to hidden_size H."""

    def __init__(self, c: BertConfig):
        super().__init__()
        e = c.embedding_size or c.hidden_size
        self.pad_id, self.positions_from_padding = c.pad_token_id, c.positions_from_padding
        self.word = nn.Embedding(c.vocab_size, e, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, e)
        self.token_type = nn.Embedding(c.type_vocab_size, e) if c.type_vocab_size else None
        self.norm = nn.LayerNorm(e, eps=c.layer_norm_eps)
        self.project = nn.Linear(e, c.hidden_size) if e != c.hidden_size else None

    def forward(self, input_ids, token_type_ids, packing: Packing | None = None):
        # input_ids, token_type_ids: [B, S] -> [B, S, H]; packed: [1, T, H], real tokens only
        x = self.word(input_ids)
        if self.token_type is not None:
            if self.token_type.num_embeddings == 1:        # one type (RoBERTa): every token's
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type(token_type_ids)
        if self.positions_from_padding:
            real = (input_ids != self.pad_id).long()
            x = x + self.position(torch.cumsum(real, dim=1) * real + self.pad_id)
        else:
            x = x + self.position(torch.arange(input_ids.shape[1], device=input_ids.device))[None]
        x = self.norm(x)
        if packing is not None:
            x = packing.gather(x)                          # positions need [B, S]; the rest not
        return x if self.project is None else self.project(x)


def sdpa_attention(qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """qkv: [B, S, 3H] ([query | key | value], heads side by side in each) -> context [B, S, H]."""
    b, s, h3 = qkv.shape
    q, k, v = qkv.view(b, s, 3, heads, h3 // (3 * heads)).permute(2, 0, 3, 1, 4)   # [B, nh, S, hd]
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return ctx.transpose(1, 2).reshape(b, s, h3 // 3)


def per_sequence(core, qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """`core` over each sequence of a CPU batch at its own length (the mask's leading zeros), so
    that a window's context vectors are exactly those it gets alone, whatever it is batched with:
    attention kernels block their sums by sequence length, and per-row int8 quantization turns
    that last-bit difference into a different rounding. Padded rows come out as zeros. Batches on
    other devices (CUDA graphs), traced or compiled models, and masks that are not right padding
    take `core` over the whole batch."""
    b, s, h3 = qkv.shape
    if mask is None or b == 1 or not eager_cpu(qkv):
        return core(qkv, mask, heads)
    lengths = right_padded_lengths(mask.reshape(b, s) == 0)
    if lengths is None:
        return core(qkv, mask, heads)
    out = qkv.new_zeros(b, s, h3 // 3)
    for i, n in enumerate(lengths):
        one = qkv[i:i + 1, :n]
        one = one if one.is_contiguous() else one.contiguous()   # the strides it has alone
        out[i, :n] = core(one, mask[i:i + 1, ..., :n], heads)[0]
    return out


def add_norm(x: torch.Tensor, y: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """The post-LayerNorm residual step: norm(x + y)."""
    return norm(x + y)


class SelfAttention(nn.Module):
    """`core(qkv, mask, heads)` computes softmax(Q K^T / sqrt(hd) + mask) V and
    `add_norm(x, y, norm)` the residual step: PyTorch's unless a target installs other kernels
    (BertForQA.set_host_kernels)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)     # rows: [query; key; value]
        self.out = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.core = sdpa_attention
        self.add_norm = add_norm

    def forward(self, x, mask, packing: Packing | None = None):
        # x: [B, S, H], or packed [1, T, H]; mask: [B, 1, 1, S] additive (0 or a large negative)
        qkv = self.qkv(x)
        ctx = (per_sequence(self.core, qkv, mask, self.heads) if packing is None
               else packing.attention(self.core, qkv, mask, self.heads))
        return self.add_norm(x, self.out(ctx), self.norm)


class FeedForward(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        assert c.hidden_act == "gelu", f"only hidden_act 'gelu' (erf) is implemented, got {c.hidden_act!r}"
        self.up = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = nn.GELU()
        self.down = nn.Linear(c.intermediate_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.add_norm = add_norm

    def forward(self, x):
        return self.add_norm(x, self.down(self.act(self.up(x))), self.norm)


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = SelfAttention(c)
        self.ffn = FeedForward(c)

    def forward(self, x, mask, packing: Packing | None = None):
        return self.ffn(self.attention(x, mask, packing))


class BertForQA(nn.Module):
    """input_ids, token_type_ids, attention_mask: [B, S] -> (start_logits, end_logits): [B, S].

    pack_batches (default True): a right-padded batch on the CPU, run eagerly, goes through the
    layers as its real tokens only (bertqa.model.packing); its padded positions' logits are then
    packing.PADDED_LOGIT. False, or a batch that does not pack (nothing padded, another device,
    traced, compiled): the padded batch, whose padded positions' logits mean nothing either."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.pack_batches = True
        self._forward_scope = None             # set_forward_scope
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        if self._forward_scope is None:
            return self._forward(input_ids, token_type_ids, attention_mask)
        with self._forward_scope():
            return self._forward(input_ids, token_type_ids, attention_mask)

    def _forward(self, input_ids, token_type_ids, attention_mask):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        packing = pack(attention_mask) if self.pack_batches else None
        x = self.embeddings(input_ids, token_type_ids, packing)        # [B, S, H] or [1, T, H]
        mask = None
        if attention_mask is not None:
            # [B, S] 1/0 -> [B, 1, 1, S] additive, as transformers does (finfo.min, not -inf,
            # so that a fully masked row stays finite)
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask, packing)
        logits = self.qa_outputs(x)                                    # [B, S, 2] or [1, T, 2]
        if packing is not None:
            logits = packing.scatter(logits)                           # [B, S, 2]
        return logits[..., 0], logits[..., 1]

    @property
    def forward_scope(self):
        return self._forward_scope

    def set_forward_scope(self, scope=None) -> None:
        """None, or a context manager factory that every forward runs in: a target's choice of
        how the calling thread shares the work (bertqa.native.torch_on_caller)."""
        self._forward_scope = scope

    def set_host_kernels(self, attention=None, residual_norm=None) -> None:
        """The non-Linear kernels of every layer: attention(qkv [B, S, 3H], mask [B, 1, 1, S] |
        None, heads) -> [B, S, H] and residual_norm(x, y, norm: nn.LayerNorm) -> norm(x + y),
        which may write over y (a temporary here). None restores PyTorch's (SDPA; add, then
        LayerNorm)."""
        for layer in self.layers:
            layer.attention.core = attention or sdpa_attention
            layer.attention.add_norm = layer.ffn.add_norm = residual_norm or add_norm

    # -- what the quantization layer may ask of a model ------------------------------------------
    def quant_groups(self) -> dict[str, int]:
        """Fused Linear layers: name -> number of original weight tensors stacked in it."""
        return {f"layers.{i}.attention.qkv": 3 for i in range(len(self.layers))}

    def gelu_fusions(self) -> dict[str, str]:
        """Linear layer -> the activation module right after it that a backend may apply."""
        return {f"layers.{i}.ffn.up": f"layers.{i}.ffn.act" for i in range(len(self.layers))}


def random_model(config: BertConfig, seed: int = 0) -> BertForQA:
    """Random weights with BERT's initializer scale (std 0.02), for shape, speed and parity tests."""
    gen = torch.Generator().manual_seed(seed)
    model = BertForQA(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()
