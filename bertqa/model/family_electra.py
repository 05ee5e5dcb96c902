"""ELECTRA (`model_type` electra): BERT's layers under `electra.`, embeddings of their own width.

The embeddings (word, position, token type, LayerNorm) are embedding_size wide; when that differs
from hidden_size, `electra.embeddings_project` (an nn.Linear, so it becomes a custom node on the
custom targets like every other Linear) maps them to hidden_size. The discriminator's QA head is
BERT's `qa_outputs`.
"""
from __future__ import annotations

from bertqa.model.families import Family
from bertqa.model.family_bert import bert_style_ignored, bert_style_renames

FAMILY = Family(
    "electra", "ELECTRA",
    bert_style_renames("electra") + [(r"(?:electra\.)?embeddings_project\.(weight|bias)",
                                      r"embeddings.project.\1")],
    bert_style_ignored("electra"))
