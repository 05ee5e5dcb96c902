"""Question/context pairs for bulk QA: SQuAD, CoQA and JSONL files, and their errors."""
import json

import pytest
from conftest import shared_file

from bertqa.data.pairs import read_pairs
from bertqa.errors import DataError


def test_squad_pairs_are_the_eval_questions_in_file_order():
    from bertqa.data.squad import read_squad
    path = shared_file("squad-v1.1-dev-eval.json")
    pairs, squad = read_pairs(path, limit=30)
    want = read_squad(path, 30).questions
    assert [(p.id, p.question, p.context) for p in pairs] == [(q.id, q.question, q.context) for q in want]
    assert squad.version == "1.1" and len(squad.questions) == 30


def test_coqa_pairs_are_every_turn_with_story_and_turn_ids():
    path = shared_file("coqa-dev-v1.0-sample.json")
    doc = json.loads(path.read_text())
    pairs, squad = read_pairs(path)
    assert squad is None
    first = doc["data"][0]
    assert pairs[0].id == f"{first['id']}:{first['questions'][0]['turn_id']}"
    assert pairs[0].question == first["questions"][0]["input_text"] and pairs[0].context == first["story"]
    assert len(pairs) == sum(len(d["questions"]) for d in doc["data"])


def test_jsonl_pairs_ids_default_to_line_numbers(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "Who?", "context": "Tom did."}\n\n'
                    '{"id": "b", "question": "What?", "context": "A lamp."}\n')
    pairs, squad = read_pairs(path)
    assert squad is None and [(p.id, p.question) for p in pairs] == [("1", "Who?"), ("b", "What?")]
    assert [p.id for p in read_pairs(path, limit=1)[0]] == ["1"]


@pytest.mark.parametrize("text, message", [
    ('{"question": "Who?"}\n', "line 1: missing key 'context'"),
    ('{"question": "Who?", "context": 3}\n', "'context' must be a str"),
    ('{"question": "Who?", "context": "x"\n', "line 1 is not valid JSON"),
    ('{"id": 1, "question": "a", "context": "x"}\n{"id": 1, "question": "b", "context": "y"}\n', "id '1' repeats"),
    ("\n", "holds no questions"),
])
def test_bad_jsonl_is_a_data_error_naming_the_line(tmp_path, text, message):
    path = tmp_path / "q.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_pairs(path)


def test_unknown_json_layout_is_a_data_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"data": [{"text": "no"}]}')
    with pytest.raises(DataError, match="neither a SQuAD file"):
        read_pairs(path)
