"""The measurement scripts: decoding cached logits (decode_sweep) and CoQA follow-ups (followups)."""
import json
from dataclasses import replace

from bertqa.eval.coqa import read_coqa, turn_score
from bertqa.eval.decode_sweep import cache_logits, decode_cached, gold_tokens, main, setting_scores
from bertqa.eval.followups import followup_scores, story_turns
from bertqa.data.squad import SquadQuestion

STORY = ("The lighthouse keeper was called Margarethe Olsen. She lived there from 1911 to 1952 "
         "with her dog Rex.")
QUESTIONS = [SquadQuestion("a", "Who was the lighthouse keeper?", STORY, ("Margarethe Olsen",)),
             SquadQuestion("b", "What was the dog called?", STORY, ("Rex",)),
             SquadQuestion("c", "When did she live there?", STORY, ("from 1911 to 1952",))]


def test_cached_logits_decode_as_answer_batch_does(qa_fp):
    cached = cache_logits(qa_fp, QUESTIONS, chunk=2)
    for max_len in (1, 15, 30):
        opts = replace(qa_fp.options.decode, max_answer_len=max_len)
        got = decode_cached(cached, opts, top_k=3)
        want = qa_fp.answer_batch([q.question for q in QUESTIONS], STORY, top_k=3, max_answer_len=max_len)
        assert [[(a.start, a.end) for a in g] for g in got] == [[(a.start, a.end) for a in w] for w in want]


def test_setting_scores_count_word_cuts_and_long_golds(qa_fp):
    cached = cache_logits(qa_fp, QUESTIONS)
    long_at = {3: {i for i, n in enumerate(gold_tokens(qa_fp.tokenizer, QUESTIONS)) if n > 3}}
    assert long_at[3] == {2}                                   # "from 1911 to 1952": 4 tokens
    raw = setting_scores(QUESTIONS, decode_cached(cached, replace(qa_fp.options.decode, align_to_words=False), 5), long_at)
    aligned = setting_scores(QUESTIONS, decode_cached(cached, qa_fp.options.decode, 5), long_at)
    assert raw["cuts"] > 0 and aligned["cuts"] == 0 and aligned["answers"] == 15
    assert aligned["f1_gold_over_3"][1] == 1 and 0 <= aligned["em"] <= aligned["f1"] <= 100


def test_the_sweep_prints_one_row_per_setting(tmp_path, capsys):
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": STORY, "qas": [
        {"id": q.id, "question": q.question, "answers": [{"text": q.answers[0], "answer_start": STORY.index(q.answers[0])}]}
        for q in QUESTIONS]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    cache = tmp_path / "logits.pkl"
    args = [str(path), "--max-answer-len", "2", "15", "--align", "on", "off", "--top-k", "2", "--cache", str(cache)]
    assert main(args) == 0 and cache.is_file()
    first = capsys.readouterr().out
    assert main(args + ["--limit", "2"]) == 0                  # served from the cache of all 3
    rows = [line for line in first.splitlines() if line.startswith("| 2 ") or line.startswith("| 15 ")]
    assert len(rows) == 4 and "2 questions" in capsys.readouterr().out


def test_followups_ask_a_story_in_order_with_the_models_answers(qa_fp, tmp_path):
    doc = {"data": [{"id": "s", "story": STORY,
                     "questions": [{"input_text": "Who was the lighthouse keeper?", "turn_id": 1},
                                   {"input_text": "What was her dog called?", "turn_id": 2}],
                     "answers": [{"input_text": "Margarethe Olsen", "turn_id": 1},
                                 {"input_text": "Rex", "turn_id": 2}]}]}
    path = tmp_path / "coqa.json"
    path.write_text(json.dumps(doc))
    data = read_coqa(path)
    assert [len(qs) for _, qs in story_turns(data)] == [2]
    alone = followup_scores(qa_fp, [data], 0, "always")
    assert alone["n"] == 2 and alone["answers"]["s:1"] == "Margarethe Olsen"
    want = [turn_score(alone["answers"][q.id] or "unknown", q.answers)[1] for q in data.questions]
    assert alone["f1"] == 100 * sum(want) / 2 and want[0] == 1.0
    with_turn = followup_scores(qa_fp, [data], 1, "always")
    assert with_turn["answers"]["s:1"] == alone["answers"]["s:1"]    # the first turn has no history
