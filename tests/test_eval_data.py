"""Reading SQuAD and prediction files: versions, limits, and errors that name the place."""
import json

import pytest

from bertqa.errors import DataError
from bertqa.data.squad import read_predictions, read_squad


def squad(qas, version="1.1", context="Some context."):
    return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def qa(qid, answers=("x",), **extra):
    return {"id": qid, "question": f"question {qid}?", "answers": [{"text": a, "answer_start": 0} for a in answers],
            **extra}


def write(tmp_path, doc, name="f.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def test_reads_questions_in_file_order_with_limit(tmp_path):
    path = write(tmp_path, squad([qa("a"), qa("b", ["y", "z"]), qa("c")]))
    data = read_squad(path)
    assert [q.id for q in data.questions] == ["a", "b", "c"] and data.version == "1.1"
    assert data.golds["b"] == ("y", "z")
    assert [q.id for q in read_squad(path, limit=2).questions] == ["a", "b"]


def test_version_from_file_or_is_impossible(tmp_path):
    assert read_squad(write(tmp_path, squad([qa("a")], version="v2.0"))).version == "2.0"
    doc = squad([qa("a", [], is_impossible=True)], version="")
    assert read_squad(write(tmp_path, doc)).version == "2.0"


def test_v1_question_without_gold_is_reported(tmp_path):
    data = read_squad(write(tmp_path, squad([qa("a"), qa("b", [])])))
    assert data.no_gold == ["b"] and len(data.questions) == 2


@pytest.mark.parametrize("doc, message", [
    ('{"version": "1.1",\n "data": [\n  {"title": "T",, }]}', "not valid JSON: .* at line 3, column"),
    ([1, 2], "not a SQuAD file"),
    (squad([{"question": "q?", "answers": []}]), r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing key 'id'"),
    (squad([qa("a"), {"id": "b", "question": "q?", "answers": "x"}]),
     r"qas\[1\]: 'answers' must be a list, got str"),
    (squad([{"id": "a", "question": "q?", "answers": [{"answer_start": 0}]}]),
     r"qas\[0\]\.answers\[0\]: missing key 'text'"),
    (squad([qa("a"), qa("a")]), r"qas\[1\]: question id 'a' repeats data\[0\]\.paragraphs\[0\]\.qas\[0\]"),
    (squad([qa("a", ["x"], is_impossible=True)], version="v2.0"), "is_impossible but has 1 answers"),
    (squad([]), "holds no questions"),
    ({"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}, r"paragraphs\[0\]: missing key 'context'"),
])
def test_malformed_squad_files_name_the_place(tmp_path, doc, message):
    with pytest.raises(DataError, match=message):
        read_squad(write(tmp_path, doc))


def test_missing_file_and_bad_limit(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_squad(tmp_path / "nope.json")
    with pytest.raises(DataError, match="limit must be >= 1"):
        read_squad(write(tmp_path, squad([qa("a")])), limit=0)


def test_predictions_files(tmp_path):
    assert read_predictions(write(tmp_path, {"a": "x", "b": ""})) == {"a": "x", "b": ""}
    with pytest.raises(DataError, match="must be a JSON object"):
        read_predictions(write(tmp_path, ["x"]))
    with pytest.raises(DataError, match="the prediction for 'b' must be a string, got int"):
        read_predictions(write(tmp_path, {"a": "x", "b": 3}))


def test_the_demo_and_eval_walk_a_squad_file_alike(tmp_path):
    """One walk of SQuAD's paragraphs serves both readers: the same stories and questions, the
    same error at the same place, and a limit stops the walk before a later bad paragraph."""
    from bertqa.data.readers import read_stories
    doc = squad([qa("a"), qa("b")], context="First.")
    doc["data"].append({"title": "U", "paragraphs": [{"context": "Second.", "qas": [qa("c")]}, {"qas": []}]})
    path = write(tmp_path, doc)
    with pytest.raises(DataError) as demo:
        read_stories(path)
    with pytest.raises(DataError) as score:
        read_squad(path)
    assert str(demo.value) == str(score.value) == f"{path}: data[1].paragraphs[1]: missing key 'context'"
    assert [q.id for q in read_squad(path, limit=3).questions] == ["a", "b", "c"]
    del doc["data"][1]["paragraphs"][1]
    path = write(tmp_path, doc)
    stories = read_stories(path)
    assert [(s.title, s.context, s.questions) for s in stories] == [
        ("T", "First.", ["question a?", "question b?"]), ("U", "Second.", ["question c?"])]
    assert [(q.context, q.question) for q in read_squad(path).questions] == [
        (s.context, text) for s in stories for text in s.questions]
