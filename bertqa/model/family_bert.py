"""BERT (`model_type` bert): Hugging Face BertForQuestionAnswering names onto BertForQA.

RoBERTa, XLM-RoBERTa and ELECTRA name their encoders the same way under another prefix, so
`bert_style_renames(prefix)` serves them too.
"""
from __future__ import annotations

from bertqa.model.families import Family


def bert_style_renames(prefix: str) -> list[tuple[str, str]]:
    """Renames for `<prefix>.embeddings.*`, `<prefix>.encoder.layer.N.*` and `qa_outputs.*`
    (the prefix optional: a bare encoder checkpoint has none)."""
    p = rf"(?:{prefix}\.)?"
    layer = p + r"encoder\.layer\.(\d+)\."
    return [
        (p + r"embeddings\.word_embeddings\.weight", r"embeddings.word.weight"),
        (p + r"embeddings\.position_embeddings\.weight", r"embeddings.position.weight"),
        (p + r"embeddings\.token_type_embeddings\.weight", r"embeddings.token_type.weight"),
        (p + r"embeddings\.LayerNorm\.(weight|bias)", r"embeddings.norm.\1"),
        (layer + r"attention\.self\.(query|key|value)\.(weight|bias)", r"layers.\1.attention.\2.\3"),
        (layer + r"attention\.output\.dense\.(weight|bias)", r"layers.\1.attention.out.\2"),
        (layer + r"attention\.output\.LayerNorm\.(weight|bias)", r"layers.\1.attention.norm.\2"),
        (layer + r"intermediate\.dense\.(weight|bias)", r"layers.\1.ffn.up.\2"),
        (layer + r"output\.dense\.(weight|bias)", r"layers.\1.ffn.down.\2"),
        (layer + r"output\.LayerNorm\.(weight|bias)", r"layers.\1.ffn.norm.\2"),
        (r"qa_outputs\.(weight|bias)", r"qa_outputs.\1"),
    ]


def bert_style_ignored(prefix: str) -> str:
    """The pooler (QA does not use it) and the position/token-type id buffers some files keep."""
    return rf"(?:{prefix}\.)?(pooler\..*|embeddings\.(position_ids|token_type_ids))"


FAMILY = Family("bert", "BERT", bert_style_renames("bert"), bert_style_ignored("bert"))
