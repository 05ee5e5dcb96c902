"""RoBERTa and XLM-RoBERTa (`model_type` roberta, xlm-roberta): BERT's layers under `roberta.`.

What differs from BERT: position ids count from pad_token_id + 1 over the non-pad tokens (pad
tokens take pad_token_id's row; max_position_embeddings is 514 for 512 tokens), a single token
type, LayerNorm eps 1e-5 (read from config.json), and `<s> q </s></s> c </s>` with type ids
all 0. XLM-RoBERTa is the same architecture with a SentencePiece vocabulary; its
XLMRobertaForQuestionAnswering also names the encoder `roberta`.
"""
from __future__ import annotations

from bertqa.model.families import Family
from bertqa.model.family_bert import bert_style_ignored, bert_style_renames


def roberta_config(raw: dict) -> dict:
    return {**raw, "positions_from_padding": True}


_COMMON = dict(renames=bert_style_renames("roberta"), ignored=bert_style_ignored("roberta"),
               config=roberta_config, cls_token="<s>", sep_token="</s>", pad_token="<pad>",
               pair_template="<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0")
FAMILY = Family("roberta", "RoBERTa", **_COMMON)
XLM_FAMILY = Family("xlm-roberta", "XLM-RoBERTa", **_COMMON)
