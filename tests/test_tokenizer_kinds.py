"""bertqa.qa.tokenizer over each kind of tokenizer file: offsets, pair layouts, fallbacks."""
import json

import numpy as np
import pytest

from bertqa.errors import ModelError
from bertqa.qa.decode import DecodeOptions, decode
from bertqa.qa.tokenizer import Tokenizer, trim_offsets
from bertqa.qa.windows import Window

from family_support import CONTEXTS, train_tokenizer  # noqa: E402


def write_dir(path, tok, model_type, **files):
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    tok.save(str(path / "tokenizer.json"))
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_sentencepiece_offsets_that_hold_the_space_are_trimmed(tmp_path):
    tok = train_tokenizer("xlm-roberta", whitespace_split=False)    # offsets of "▁word" hold the space
    context = CONTEXTS[2] + "  (twice)"
    raw = tok.encode(context, add_special_tokens=False).offsets
    assert any(context[a].isspace() for a, b in raw if a < b), "the raw offsets should hold spaces"
    (ids, offsets), = Tokenizer(write_dir(tmp_path, tok, "xlm-roberta")).encode_many([context])
    assert len(offsets) == len(raw) == len(ids)
    for (a, b), (ra, rb) in zip(offsets, raw):
        assert ra <= a <= b <= rb and context[a:b] == context[ra:rb].strip()


def test_trim_offsets_leaves_inner_spaces_and_empties_whitespace_tokens():
    assert trim_offsets("ab  cd", [(0, 2), (2, 3), (2, 6), (3, 4)]) == [(0, 2), (3, 3), (4, 6), (4, 4)]


def test_a_whitespace_only_token_never_bounds_an_answer():
    context = "alpha beta"
    w = Window(0, [0, 9, 2, 5, 6, 7, 2], [0] * 7, [None, None, None, (0, 5), (6, 6), (6, 10), None])
    start = np.array([0, 0, 0, 1.0, 9.0, 2.0, 0])                    # the empty token scores best
    end = np.array([0, 0, 0, 1.0, 9.0, 2.0, 0])
    best = decode(context, [w], [start], [end], DecodeOptions())[0]
    assert (best.text, best.start, best.end) == ("beta", 6, 10)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta"])
def test_a_tokenizer_without_post_processor_gets_the_family_template(tmp_path, family):
    tok = train_tokenizer(family)
    with_pp = Tokenizer(write_dir(tmp_path / "with", tok, family)).layout
    spec = json.loads(tok.to_str())
    spec["post_processor"] = None
    d = tmp_path / "without"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": family}))
    (d / "tokenizer.json").write_text(json.dumps(spec))
    assert Tokenizer(d).layout == with_pp
    assert len(with_pp.middle) == (1 if family == "bert" else 2)


def test_vocab_json_and_merges_read_as_the_tokenizer_json_does(tmp_path):
    tok = train_tokenizer("roberta")
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    d = tmp_path / "bpe"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "roberta"}')
    (d / "vocab.json").write_text(json.dumps(model["vocab"]))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    files = Tokenizer(d)
    reference = Tokenizer(write_dir(tmp_path / "json", tok, "roberta"))
    assert files.layout == reference.layout
    assert files.encode_many(CONTEXTS) == reference.encode_many(CONTEXTS)


def test_a_directory_without_a_readable_tokenizer_says_what_it_needs(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "xlm-roberta"}')
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"\0")
    with pytest.raises(ModelError, match="needs tokenizer.json.*save_pretrained"):
        Tokenizer(tmp_path)


def test_special_tokens_come_from_the_tokenizer_files_before_the_family(tmp_path):
    tok = train_tokenizer("roberta")
    d = write_dir(tmp_path, tok, "roberta",
                  **{"special_tokens_map.json": json.dumps({"pad_token": {"content": "<unk>"}})})
    assert Tokenizer(d).pad_id == tok.token_to_id("<unk>")
