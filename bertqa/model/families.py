"""Encoder families: what differs between the checkpoints that map onto bertqa's BertForQA.

A family is read from config.json's `model_type` and says three things: how its config.json
becomes a BertConfig (field names, the architecture switches of bertqa.model.bert), how its
checkpoint tensor names become BertForQA's (regex renames; anything else is an error unless
`ignored`), and the special tokens and pair template its tokenizers use when tokenizer.json
does not say (bertqa.qa.tokenizer). One file per family (family_<name>.py), one row here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from bertqa.errors import ModelError


@dataclass(frozen=True)
class Family:
    model_type: str
    label: str                                    # in messages: "a BERT question-answering model"
    renames: list[tuple[str, str]]                # checkpoint name (full-match regex) -> ours
    ignored: str                                  # checkpoint names that are read but not used
    config: Callable[[dict], dict] = dict         # config.json -> BertConfig fields
    cls_token: str = "[CLS]"
    sep_token: str = "[SEP]"
    pad_token: str = "[PAD]"
    # tokenizers' TemplateProcessing pair syntax, used when tokenizer.json has no post-processor
    pair_template: str = "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"
    _compiled: list = field(default_factory=list, repr=False, compare=False)

    def map_name(self, name: str) -> str | None:
        """Checkpoint tensor name -> BertForQA name (query/key/value still apart); None if unused."""
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if not self._compiled:
            self._compiled.extend((re.compile(p), r) for p, r in self.renames)
        for pattern, repl in self._compiled:
            if pattern.fullmatch(name):
                return pattern.sub(repl, name)
        if re.fullmatch(self.ignored, name):
            return None
        raise ModelError(f"checkpoint tensor {name!r} does not belong to a {self.label} "
                         "question-answering model")


def _families() -> dict[str, Family]:
    from bertqa.model import family_bert, family_distilbert, family_electra, family_roberta
    return {
        "bert": family_bert.FAMILY,
        "distilbert": family_distilbert.FAMILY,
        "roberta": family_roberta.FAMILY,
        "xlm-roberta": family_roberta.XLM_FAMILY,
        "electra": family_electra.FAMILY,
    }


FAMILIES = _families()


def family_for(model_type: str | None, source: str = "config.json") -> Family:
    """The family of `model_type` (None: BERT, as old config.json files have no model_type);
    ModelError naming the supported ones otherwise."""
    family = FAMILIES.get(model_type or "bert")
    if family is None:
        raise ModelError(f"{source}: model_type {model_type!r} is not supported "
                         f"(supported: {', '.join(FAMILIES)})")
    return family
