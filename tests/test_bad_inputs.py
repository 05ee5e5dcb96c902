"""Every bad input of issue 17 point 8 ends in one line `bertqa: error: ...` and exit 2.

The CLI runs in-process (bertqa.cli.main); argparse's usage errors raise SystemExit(2), which
`cli` turns into the same (code, stderr) as an error the subcommand reports itself.
"""
import json
import os

import pytest

from cli_support import run_cli
from bertqa.model.loading import BUNDLED_DIR

STORY = "Ada lives in Oslo. She reads every evening."


def cli(capsys, *args):
    code, _, err = run_cli(capsys, *args)
    return code, err


def write(path, doc):
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def coqa_file(tmp_path, questions, answers=None):
    item = {"id": "s1", "story": STORY, "questions": questions,
            "answers": answers if answers is not None else
            [{"input_text": "Oslo", "turn_id": q.get("turn_id", i + 1) if isinstance(q, dict) else i + 1}
             for i, q in enumerate(questions)]}
    return write(tmp_path / "coqa.json", {"data": [item]})


def model_dir_with_config(tmp_path, **changes):
    """The bundled model with config.json fields changed (weights and tokenizer linked)."""
    out = tmp_path / "model"
    out.mkdir()
    config = json.loads((BUNDLED_DIR / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, **changes}))
    for name in ("model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                 "special_tokens_map.json"):
        os.symlink(BUNDLED_DIR / name, out / name)
    return out


def deep_json(tmp_path):
    return write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000)


def huge_file(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(1 << 30)                       # 1 GiB, sparse: nothing is written
    return path


class Evil:
    """A pickle that would make a directory when loaded with weights_only=False."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def evil_model(tmp_path):
    import torch
    out = tmp_path / "evil"
    out.mkdir()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        os.symlink(BUNDLED_DIR / name, out / name)
    torch.save({"w": Evil(str(tmp_path / "pwned"))}, out / "pytorch_model.bin", pickle_protocol=2)
    return out


CASES = {
    "coqa questions as strings": (
        lambda t: ["demo", "--data", coqa_file(t, ["Where does Ada live?"], [])],
        "questions[0]: each entry must be an object"),
    "coqa questions as strings (eval)": (
        lambda t: ["eval", "--model", "bundled", "--data", coqa_file(t, ["Where does Ada live?"], [])],
        "questions[0]: each entry must be an object"),
    "coqa turn_id mixing '1' and 2": (
        lambda t: ["demo", "--data", coqa_file(t, [{"input_text": "Where?", "turn_id": "1"},
                                                   {"input_text": "When?", "turn_id": 2}])],
        "'turn_id' must be an integer (1, 2, ...), got str '1'"),
    "coqa turn_id mixing '1' and 2 (eval)": (
        lambda t: ["eval", "--model", "bundled", "--data",
                   coqa_file(t, [{"input_text": "Where?", "turn_id": "1"}, {"input_text": "When?", "turn_id": 2}])],
        "'turn_id' must be an integer"),
    "100k-deep JSON --data (demo, as run.py)": (
        lambda t: ["demo", "--data", deep_json(t)], "nests JSON arrays or objects too deeply"),
    "100k-deep JSON --data (eval)": (
        lambda t: ["eval", "--model", "bundled", "--data", deep_json(t)], "nests JSON arrays or objects too deeply"),
    "max_position_embeddings -1": (
        lambda t: ["demo", "--model", model_dir_with_config(t, max_position_embeddings=-1)],
        "max_position_embeddings must be an integer >= 1, got -1"),
    "hidden_size '384'": (
        lambda t: ["demo", "--model", model_dir_with_config(t, hidden_size="384")],
        "hidden_size must be an integer >= 1, got '384'"),
    "serve --max-wait-ms nan": (
        lambda t: ["serve", "--model", "bundled", "--max-wait-ms", "nan"],
        "argument --max-wait-ms: must be a finite number, got 'nan'"),
    "serve --timeout-s nan": (
        lambda t: ["serve", "--model", "bundled", "--timeout-s", "nan"],
        "argument --timeout-s: must be a finite number, got 'nan'"),
    "--history -1": (lambda t: ["demo", "--history", "-1"], "argument --history: must be >= 0, got -1"),
    "--null-threshold nan": (
        lambda t: ["demo", "--allow-no-answer", "--null-threshold", "nan"],
        "argument --null-threshold: must be a finite number, got 'nan'"),
    "--batch-size 0": (lambda t: ["demo", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    "1 GiB --data refused by its size": (
        lambda t: ["demo", "--data", huge_file(t)], "is 1024 MiB, more than the 256 MiB"),
    "1 GiB --data refused by its size (eval)": (
        lambda t: ["eval", "--model", "bundled", "--data", huge_file(t)], "is 1024 MiB, more than the 256 MiB"),
    "malicious pickle pytorch_model.bin": (
        lambda t: ["demo", "--model", evil_model(t)],
        "is refused: it asks to call posix.mkdir"),
    "failed prepare": (
        lambda t: ["prepare", "--model", t / "no-such-model", "--out", t / "new" / "int8"],
        "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_args, message = CASES[case]
    code, err = cli(capsys, *make_args(tmp_path))
    assert code == 2, err
    assert err.startswith("bertqa: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_huge_file_is_refused_before_reading(tmp_path, monkeypatch):
    from pathlib import Path
    from bertqa.data.readers import read_stories
    from bertqa.errors import DataError
    path = huge_file(tmp_path)
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(DataError, match="MiB"):
        read_stories(path)


def test_malicious_pickle_does_not_run_and_says_to_convert(tmp_path, capsys):
    code, err = cli(capsys, "demo", "--model", evil_model(tmp_path))
    assert code == 2 and "convert it to model.safetensors" in err and "weights_only=False" not in err
    assert not (tmp_path / "pwned").exists()


def test_failed_prepare_leaves_no_out_dir_but_keeps_an_existing_one(tmp_path, capsys):
    code, _ = cli(capsys, "prepare", "--model", tmp_path / "missing", "--out", tmp_path / "a" / "b")
    assert code == 2 and not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    code, _ = cli(capsys, "prepare", "--model", tmp_path / "missing", "--out", tmp_path / "kept")
    assert code == 2 and (tmp_path / "kept").is_dir()


@pytest.mark.parametrize("field, value", [("max_wait_ms", float("nan")), ("timeout_s", float("nan")),
                                          ("timeout_s", float("inf")), ("max_wait_ms", -1.0)])
def test_serve_config_refuses_non_finite_values(field, value):
    from bertqa.serve.config import ServeConfig
    with pytest.raises(ValueError, match=field.replace("_", "-")):
        ServeConfig(**{field: value})


@pytest.mark.parametrize("changes, message", [
    ({"max_position_embeddings": -1}, "max_position_embeddings must be an integer >= 1"),
    ({"hidden_size": "384"}, "hidden_size must be an integer"),
    ({"num_attention_heads": True}, "num_attention_heads must be an integer"),
    ({"hidden_size": 100, "num_attention_heads": 12}, "not a multiple"),
    ({"layer_norm_eps": "1e-12"}, "layer_norm_eps"),
    ({"hidden_act": "relu"}, "hidden_act 'relu' is not implemented"),
])
def test_bert_config_names_the_bad_field(changes, message):
    from bertqa.model.bert import BertConfig
    with pytest.raises(ValueError, match=message):
        BertConfig(**changes)


def test_coqa_turns_keep_order_by_turn_id():
    from bertqa.data.readers import coqa_turns
    item = {"questions": [{"input_text": "b", "turn_id": 2}, {"input_text": "a", "turn_id": 1}]}
    assert [t["input_text"] for t in coqa_turns(item, "x")] == ["a", "b"]
