"""DistilBERT (`model_type` distilbert): its own config and tensor names onto BertForQA.

The arithmetic is BERT's (post-LayerNorm residuals, erf GELU, LayerNorm eps 1e-12 fixed in its
code) without token-type embeddings; config.json says dim / n_layers / n_heads / hidden_dim /
activation, and the layers are `distilbert.transformer.layer.N.{attention.q_lin, ...,
sa_layer_norm, ffn.lin1, ffn.lin2, output_layer_norm}`.
"""
from __future__ import annotations

from bertqa.model.families import Family

_CONFIG_NAMES = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                 "hidden_dim": "intermediate_size", "activation": "hidden_act"}


def distilbert_config(raw: dict) -> dict:
    fields = {_CONFIG_NAMES.get(k, k): v for k, v in raw.items()}
    return {**fields, "type_vocab_size": 0, "layer_norm_eps": 1e-12}


_P = r"(?:distilbert\.)?"
_LAYER = _P + r"transformer\.layer\.(\d+)\."
_RENAMES = [
    (_P + r"embeddings\.word_embeddings\.weight", r"embeddings.word.weight"),
    (_P + r"embeddings\.position_embeddings\.weight", r"embeddings.position.weight"),
    (_P + r"embeddings\.LayerNorm\.(weight|bias)", r"embeddings.norm.\1"),
    (_LAYER + r"attention\.q_lin\.(weight|bias)", r"layers.\1.attention.query.\2"),
    (_LAYER + r"attention\.k_lin\.(weight|bias)", r"layers.\1.attention.key.\2"),
    (_LAYER + r"attention\.v_lin\.(weight|bias)", r"layers.\1.attention.value.\2"),
    (_LAYER + r"attention\.out_lin\.(weight|bias)", r"layers.\1.attention.out.\2"),
    (_LAYER + r"sa_layer_norm\.(weight|bias)", r"layers.\1.attention.norm.\2"),
    (_LAYER + r"ffn\.lin1\.(weight|bias)", r"layers.\1.ffn.up.\2"),
    (_LAYER + r"ffn\.lin2\.(weight|bias)", r"layers.\1.ffn.down.\2"),
    (_LAYER + r"output_layer_norm\.(weight|bias)", r"layers.\1.ffn.norm.\2"),
    (r"qa_outputs\.(weight|bias)", r"qa_outputs.\1"),
]

FAMILY = Family("distilbert", "DistilBERT", _RENAMES, _P + r"embeddings\.position_ids",
                config=distilbert_config)
