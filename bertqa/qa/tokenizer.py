"""A model directory's tokenizer, with character offsets and the family's pair layout.

Whatever tokenizer.json the checkpoint ships (WordPiece, byte-level BPE, SentencePiece Unigram)
runs through the `tokenizers` library; without one, vocab.txt is BERT WordPiece (lower-cased
unless tokenizer_config.json says do_lower_case false) and vocab.json + merges.txt byte-level
BPE (RoBERTa). Texts are encoded without special tokens; the special tokens and their type ids
are added by make_windows from the `PairLayout`, read from the tokenizer's own post-processor
(so windows are what the checkpoint was trained on) or, when it has none, from the family's
template (bertqa.model.families).

Offsets: each token's (start, end) in the original string with the whitespace that byte-level
BPE ("Ġ") and SentencePiece ("▁") tokens may carry trimmed off, so that an answer sliced from
them never starts or ends with a space. A token that covers whitespace only gets an empty span
(start == end) and may not start or end an answer (bertqa.qa.decode). Answers are slices of the
original context: a lower-casing or accent-stripping tokenizer never changes their text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bertqa.errors import ModelError

# what a model directory may hold for its tokenizer, in the order they are tried
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
EXTRA_FILES = ("merges.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class PairLayout:
    """prefix question middle context suffix: the special tokens' ids and every part's type ids
    (BERT: [CLS] q [SEP] c [SEP], types 0 0 0 1 1; RoBERTa: <s> q </s></s> c </s>, all 0)."""
    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    question_type: int
    context_type: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


class Tokenizer:
    """The model directory's fast tokenizer; `layout` says how a (question, context) pair is
    framed, cls_id/sep_id/pad_id are the family's special tokens."""

    def __init__(self, model_dir: Path):
        from bertqa.model.families import family_for
        model_dir = Path(model_dir)
        family = family_for(_model_type(model_dir), str(model_dir / "config.json"))
        try:
            self.tok = _load(model_dir)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"cannot load the tokenizer of {model_dir}: {e}") from e
        self.tok.no_truncation()
        self.tok.no_padding()
        names = {role: _special_token(model_dir, role) or getattr(family, role)
                 for role in ("cls_token", "sep_token", "pad_token")}
        ids = {name: self.tok.token_to_id(name) for name in names.values()}
        if None in ids.values():
            raise ModelError(f"the tokenizer of {model_dir} lacks {[t for t, i in ids.items() if i is None]}")
        self.cls_id, self.sep_id, self.pad_id = (ids[names[r]] for r in ("cls_token", "sep_token", "pad_token"))
        self.layout = self._pair_layout(family, names, model_dir)

    def encode_many(self, texts: list[str]):
        """Each text -> (ids, char offsets with surrounding whitespace trimmed), no special tokens."""
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        return [(e.ids, trim_offsets(text, e.offsets)) for text, e in zip(texts, encs)]

    def _pair_layout(self, family, names: dict, model_dir: Path) -> PairLayout:
        layout = probe_layout(self.tok)
        if layout is None:                   # no post-processor that adds special tokens
            from tokenizers import processors
            specials = {t.split(":")[0] for t in family.pair_template.split() if not t.startswith("$")}
            template = processors.TemplateProcessing(
                single=f"{family.cls_token}:0 $A:0 {family.sep_token}:0", pair=family.pair_template,
                special_tokens=[(t, self.tok.token_to_id(t)) for t in sorted(specials)])
            existing = self.tok.post_processor
            self.tok.post_processor = (template if existing is None
                                       else processors.Sequence([existing, template]))
            layout = probe_layout(self.tok)
        if layout is None:
            raise ModelError(f"cannot tell how the tokenizer of {model_dir} frames a question and a context")
        return layout


def probe_layout(tok) -> PairLayout | None:
    """The pair layout of `tok`'s post-processor, from encoding a probe pair with special
    tokens; None if it adds none."""
    enc = tok.encode("a", "b", add_special_tokens=True)
    seq = enc.sequence_ids
    if None not in seq:
        return None
    q = [i for i, s in enumerate(seq) if s == 0]
    c = [i for i, s in enumerate(seq) if s == 1]
    if not q or not c or q[-1] > c[0]:
        return None
    parts = (range(0, q[0]), range(q[-1] + 1, c[0]), range(c[-1] + 1, len(seq)))
    ids, types = enc.ids, enc.type_ids
    return PairLayout(*(tuple(ids[i] for i in p) for p in parts),
                      *(tuple(types[i] for i in p) for p in parts),
                      question_type=types[q[0]], context_type=types[c[0]])


def trim_offsets(text: str, offsets) -> list[tuple[int, int]]:
    """(start, end) spans of `text` with leading and trailing whitespace moved out; a span of
    whitespace only becomes empty at its end."""
    out = []
    for a, b in offsets:
        if a < b and (text[a].isspace() or text[b - 1].isspace()):
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
        out.append((a, b))
    return out


def _load(model_dir: Path):
    from tokenizers import Tokenizer as HFTokenizer
    if (model_dir / "tokenizer.json").is_file():
        return HFTokenizer.from_file(str(model_dir / "tokenizer.json"))
    if (model_dir / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer
        lower = bool(_tokenizer_config(model_dir).get("do_lower_case", True))
        return BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=lower,
                                      strip_accents=lower)._tokenizer
    if (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file():
        from tokenizers.implementations import ByteLevelBPETokenizer
        prefix = bool(_tokenizer_config(model_dir).get("add_prefix_space", False))
        return ByteLevelBPETokenizer(str(model_dir / "vocab.json"), str(model_dir / "merges.txt"),
                                     add_prefix_space=prefix, trim_offsets=True)._tokenizer
    raise ModelError(f"{model_dir} has no tokenizer bertqa can read: it needs tokenizer.json, "
                     "vocab.txt (WordPiece) or vocab.json + merges.txt (byte-level BPE); a "
                     "SentencePiece model file can be converted to tokenizer.json with transformers "
                     "(AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))")


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


def _tokenizer_config(model_dir: Path) -> dict:
    return _read_json(model_dir / "tokenizer_config.json")


def _model_type(model_dir: Path) -> str | None:
    return _read_json(model_dir / "config.json").get("model_type")


def _special_token(model_dir: Path, role: str) -> str | None:
    """special_tokens_map.json's, else tokenizer_config.json's token for role ('cls_token', ...)."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        value = _read_json(model_dir / name).get(role)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return None
