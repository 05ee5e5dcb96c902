"""`bertqa eval` with several configurations: warm-up, interleaving, emulator labels,
--predictions-out, the bundled-model fallback, and CoQA files scored with CoQA's F1."""
import json
import math

import pytest
from torch import nn

from bertqa.cli import main
from bertqa.errors import DataError, ModelUnavailable
from bertqa.eval import compare
from bertqa.eval.coqa import read_coqa, score_coqa, turn_kind, turn_score
from bertqa.data.squad import SquadQuestion
from bertqa.qa.decode import Answer
from bertqa.qa.pipeline import QAOptions
from conftest import shared_file

STORY = "Ada lives in Oslo. She has a red bicycle. She rides it to work."


class FakeQA:
    """Answers every question with its own text; logs (name, question) for each call."""

    def __init__(self, name, log):
        self.name, self.log = name, log
        self.options, self.target, self.precision, self.notes = QAOptions(), "cpu", "fp", []
        self.prepared = type("P", (), {"model": nn.Linear(1, 1)})()

    def header(self):
        return {"quantization": "-", "model": "fake", "linear backend": self.name,
                "attention": "fp32", "threads": 1}

    def answer_batch(self, questions, contexts, top_k=1, options=None):
        self.log += [(self.name, q) for q in questions]
        return [[Answer(q, 0.5, 0, len(q))] for q in questions]


def questions(n):
    return [SquadQuestion(f"q{i}", f"question {i}", "context", ("x",)) for i in range(n)]


def test_configurations_are_warmed_up_then_take_turns_in_rotating_order():
    log = []
    runners = [compare.ConfigRunner(FakeQA(name, log), name, v2=False) for name in "ABC"]
    runs = compare.interleave(runners, questions(4), batch=1, progress=False)
    warm = compare.WARMUP_CALLS
    assert log[:3 * warm] == [(n, f"question {i}") for n in "ABC" for i in range(warm)]
    timed = log[3 * warm:]
    assert [n for n, _ in timed] == list("ABC" "BCA" "CAB" "ABC")
    assert all(q == f"question {i // 3}" for i, (_, q) in enumerate(timed))
    for run in runs:
        assert list(run.predictions) == ["q0", "q1", "q2", "q3"] and len(run.latencies_ms) == 4


def test_batches_take_turns_too():
    log = []
    runners = [compare.ConfigRunner(FakeQA(name, log), name, v2=False) for name in "AB"]
    compare.interleave(runners, questions(5), batch=2, progress=False)
    timed = log[2 * compare.WARMUP_CALLS:]
    assert [n for n, _ in timed] == ["A", "A", "B", "B", "B", "B", "A", "A", "A", "B"]


def test_emulated_devices_are_labelled():
    import bertqa
    qa = bertqa.load(model="bundled", target="aie", precision="int", aie_device="emulator")
    assert compare.is_emulated(qa)
    assert compare.run_label(compare.Config("aie", "int"), qa) == "aie int (emulator)"
    fake = FakeQA("x", [])
    assert not compare.is_emulated(fake)


def coqa_doc(turns, extra=None):
    """turns: [(question, gold answer)]; extra: additional answer sets, each a list of answers."""
    item = {"id": "s1", "story": STORY,
            "questions": [{"input_text": q, "turn_id": i + 1} for i, (q, _) in enumerate(turns)],
            "answers": [{"input_text": a, "turn_id": i + 1} for i, (_, a) in enumerate(turns)]}
    if extra:
        item["additional_answers"] = {str(k): [{"input_text": a, "turn_id": i + 1} for i, a in enumerate(s)]
                                      for k, s in enumerate(extra)}
    return {"version": "1.0", "data": [item]}


def test_coqa_turn_score_is_the_official_leave_one_out_mean():
    assert turn_score("red bicycle", ["a red bicycle"]) == (1.0, 1.0)
    # golds a, b, c: leave out each in turn, take the best of the other two, average
    em, f = turn_score("red", ["red", "red bike", "blue"])
    assert em == pytest.approx((0 + 1 + 1) / 3)
    assert f == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert turn_kind("Yes.") == "yes/no" and turn_kind("unknown") == "unknown" and turn_kind("Oslo") == "span"


def test_coqa_file_scored_by_kind(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coqa_doc([("Where does Ada live?", "in Oslo"), ("Has she a bike?", "yes"),
                                         ("What is her name?", "unknown")])))
    data = read_coqa(path)
    assert [q.id for q in data.questions] == ["s1:1", "s1:2", "s1:3"]
    scores = score_coqa({"s1:1": "Oslo", "s1:2": "a red bicycle", "s1:3": ""}, data)
    assert scores["span_f1"] == pytest.approx(100 * 2 / 3) and scores["span_n"] == 1
    assert scores["yes/no_f1"] == 0.0 and scores["unknown_f1"] == 100.0     # "" counts as unknown
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 0 + 1) / 3) and scores["n"] == 3


def test_coqa_answer_sets_must_match_the_turns(tmp_path):
    doc = coqa_doc([("a?", "x"), ("b?", "y")], extra=[["x"]])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"additional_answers\['0'\] has turns \[1\]"):
        read_coqa(path)


def test_eval_coqa_with_predictions_out_on_the_bundled_model(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coqa_doc([("Where does Ada live?", "Oslo"),
                                         ("What does she have?", "a red bicycle"),
                                         ("Is it red?", "yes")], extra=[["in Oslo", "bicycle", "yes"]])))
    out = tmp_path / "pq.json"
    assert main(["eval", "--model", "bundled", "--data", str(path), "--compare", "cpu:fp,customcpu:int",
                 "--predictions-out", str(out), "--json", str(tmp_path / "r.json"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "(CoQA: 2 span, 1 yes/no, 0 unknown turns)" in text and "span F1" in text
    doc = json.loads(out.read_text())
    assert doc["configurations"] == ["cpu fp", "customcpu int"] and doc["version"] == "coqa"
    first = doc["questions"][0]
    assert first["id"] == "s1:1" and first["gold"] == ["Oslo", "in Oslo"] and first["kind"] == "span"
    answer = first["answers"]["cpu fp"]
    assert "Oslo" in answer["text"] and answer["f1"] > 0 and answer["ms"] > 0
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    f1s = [sum(q["answers"][r["label"]]["f1"] for q in doc["questions"]) / 3 * 100 for r in rows]
    assert [r["f1"] for r in rows] == pytest.approx(f1s, abs=0.01)


def test_official_coqa_predictions_list_is_scored(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coqa_doc([("Where does Ada live?", "Oslo")])))
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps([{"id": "s1", "turn_id": 1, "answer": "Oslo"}]))
    assert main(["eval", "--data", str(path), "--predictions", str(preds),
                 "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["f1"] == 100.0


def test_predictions_out_for_squad_v1(tmp_path, capsys):
    data = shared_file("squad-v1.1-dev-eval.json")
    out = tmp_path / "pq.json"
    assert main(["eval", "--model", "bundled", "--data", str(data), "--limit", "2",
                 "--predictions-out", str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["questions"]) == 2 and doc["configurations"] == ["cpu fp"]
    entry = doc["questions"][0]["answers"]["cpu fp"]
    assert set(entry) == {"text", "em", "f1", "ms"} and not math.isnan(entry["f1"])


def test_eval_without_model_falls_back_to_the_bundled_one(tmp_path, capsys, monkeypatch):
    import bertqa.api

    def unreachable(name):
        raise ModelUnavailable(f"{name or 'the default model'} is not cached and HF_HUB_OFFLINE is set")
    real = bertqa.api.resolve_model
    monkeypatch.setattr(bertqa.api, "resolve_model", lambda name: unreachable(name) if name is None else real(name))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coqa_doc([("Where does Ada live?", "Oslo")])))
    assert main(["eval", "--data", str(path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "model minilm-l6-squad" in captured.out
    assert "using the bundled model minilm-l6-squad" in captured.err
