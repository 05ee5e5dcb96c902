"""Tiny random-weight checkpoints of every encoder family, each with a tokenizer of its kind.

The vocabularies are trained here with the `tokenizers` library on CORPUS (WordPiece for BERT,
ELECTRA (uncased) and DistilBERT (cased), byte-level BPE for RoBERTa, SentencePiece Unigram for
XLM-RoBERTa), then handed to transformers' own tokenizer class of the family (transformers 5
builds them from a vocabulary), whose save_pretrained writes the tokenizer.json that bertqa
reads and which is the reference side of the tests. The models are transformers'
*ForQuestionAnswering with random weights (a test-only dependency), saved with save_pretrained.
"""
from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra")

CORPUS = [
    "The lighthouse keeper Zoë Müller lived on the island of Skye from 1998 to 2004.",
    "Who kept the lighthouse on the island?",
    "Where did the keeper live before she moved?",
    "She moved to São Paulo, where the café on Rua Augusta sold pão de queijo.",
    "In Tōkyō the Ōsaka train leaves at nine; 東京 is the capital of Japan.",
    "The storm of 1998 broke the lamp, and the keeper repaired it with brass and glass.",
    "What did the storm break?", "When did the storm come?", "What is the capital of Japan?",
    "Lightning struck twice, but the keeper's dog Biscuit slept through both strikes.",
]
QUESTIONS = ["Who kept the lighthouse on the island?", "What did the storm break?",
             "Where did the keeper live before she moved?", "What is the capital of Japan?"]
CONTEXTS = [CORPUS[0] + " " + CORPUS[5], CORPUS[5] + " " + CORPUS[9],
            CORPUS[3] + " " + CORPUS[0], CORPUS[4] + " " + CORPUS[9]]

TRAINING = CORPUS * 3 + CONTEXTS + [" ".join(CORPUS)]      # sentences after a space, too
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tokenizer(family: str, whitespace_split: bool = True):
    """A `tokenizers.Tokenizer` of the family's kind, trained on CORPUS. XLM-RoBERTa's without
    whitespace_split is the Metaspace-only layout of older hub files (offsets include spaces)."""
    from tokenizers import pre_tokenizers, processors
    if family in ("bert", "distilbert", "electra"):
        from tokenizers.implementations import BertWordPieceTokenizer
        cased = family == "distilbert"
        wp = BertWordPieceTokenizer(lowercase=not cased, strip_accents=False if cased else None)
        wp.train_from_iterator(TRAINING, vocab_size=400, min_frequency=1, special_tokens=WORDPIECE_SPECIALS)
        return wp._tokenizer
    if family == "roberta":
        from tokenizers.implementations import ByteLevelBPETokenizer
        bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
        bpe.train_from_iterator(TRAINING, vocab_size=600, min_frequency=1, special_tokens=ROBERTA_SPECIALS)
        tok = bpe._tokenizer
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=False)
        return tok
    assert family == "xlm-roberta", family
    from tokenizers.implementations import SentencePieceUnigramTokenizer
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(TRAINING, vocab_size=300, special_tokens=ROBERTA_SPECIALS, unk_token="<unk>")
    tok = sp._tokenizer
    if whitespace_split:      # transformers 5's XLMRobertaTokenizer: no space inside any offset
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Metaspace(replacement="▁")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok


def hf_tokenizer(family: str, tok):
    """transformers' own tokenizer class of `family` over the vocabulary of `tok` (as the hub's
    checkpoints ship it: its normalizer, pre-tokenizer and pair template are the class's)."""
    import json

    import transformers
    model = json.loads(tok.to_str())["model"]
    if family in ("bert", "distilbert", "electra"):
        cls = {"bert": transformers.BertTokenizer, "distilbert": transformers.DistilBertTokenizer,
               "electra": transformers.ElectraTokenizer}[family]
        return cls(vocab=model["vocab"], do_lower_case=family != "distilbert")
    if family == "roberta":
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        return transformers.RobertaTokenizer(vocab=model["vocab"], merges=merges)
    return transformers.XLMRobertaTokenizer(vocab=[tuple(v) for v in model["vocab"]])


def hf_model(family: str, vocab_size: int, seed: int = 0):
    """transformers' *ForQuestionAnswering of `family` with random weights (std 0.1, so that
    the span logits are far apart enough for argmax comparisons)."""
    import transformers
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, initializer_range=0.1, attn_implementation="sdpa")
    if family == "distilbert":
        cfg = transformers.DistilBertConfig(dim=TINY["hidden_size"], n_layers=TINY["num_hidden_layers"],
                                            n_heads=TINY["num_attention_heads"], hidden_dim=TINY["intermediate_size"],
                                            max_position_embeddings=128, pad_token_id=0, **common)
        return transformers.DistilBertForQuestionAnswering(cfg).eval()
    if family in ("roberta", "xlm-roberta"):
        cls = transformers.RobertaConfig if family == "roberta" else transformers.XLMRobertaConfig
        cfg = cls(**TINY, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                  bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **common)
        model = (transformers.RobertaForQuestionAnswering if family == "roberta"
                 else transformers.XLMRobertaForQuestionAnswering)
        return model(cfg).eval()
    if family == "electra":
        cfg = transformers.ElectraConfig(**TINY, embedding_size=16, max_position_embeddings=128, **common)
        return transformers.ElectraForQuestionAnswering(cfg).eval()
    cfg = transformers.BertConfig(**TINY, max_position_embeddings=128, **common)
    return transformers.BertForQuestionAnswering(cfg).eval()


def with_random_layer_norms(model, seed: int = 1):
    """LayerNorm weights and biases away from 1 and 0, so that a mapping that swapped two of them
    would show in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return model


def build_family_dir(family: str, out: Path):
    """out/ with config.json, model.safetensors and the tokenizer files; -> (hf model, hf tokenizer)."""
    tok = train_tokenizer(family)
    hf_tok = hf_tokenizer(family, tok)
    model = with_random_layer_norms(hf_model(family, len(hf_tok)))
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    return model, hf_tok
