"""End to end on the bundled model: real answers, character slices, long contexts, batching."""
import pytest

from bertqa.data.readers import builtin_stories
from bertqa.qa.pipeline import QAOptions
from bertqa.qa.windows import WindowOptions


def test_answer_is_an_exact_slice_with_original_case_and_accents(qa_fp):
    context = "In 1911 the explorer Roald Amundsen reached the South Pole. Later he lived in Zürich."
    ans = qa_fp.answer("Who reached the South Pole?", context)
    assert ans.text == "Roald Amundsen"
    assert context[ans.start:ans.end] == ans.text
    ans = qa_fp.answer("Where did he live later?", context)
    assert ans.text == "Zürich"


def test_no_wordpieces_reach_the_user_on_the_builtin_stories(qa_fp):
    for story in builtin_stories():
        for q in story.questions:
            ans = qa_fp.answer(q, story.context)
            assert "##" not in ans.text
            assert story.context[ans.start:ans.end] == ans.text


def test_answer_in_the_last_window_of_a_long_context(qa_fp):
    filler = " ".join(f"The village number {i} had a bakery and a small school." for i in range(120))
    context = filler + " The lighthouse keeper was called Margarethe Olsen."
    opts = QAOptions(windows=WindowOptions(max_seq_len=128, doc_stride=32, max_question_len=24))
    windows = qa_fp.pipeline.windows(["Who was the lighthouse keeper?"], [context], options=opts)
    assert len(windows) > 10
    ans = qa_fp.answer("Who was the lighthouse keeper?", context, options=opts)
    assert ans.text == "Margarethe Olsen"


def test_batched_answers_equal_single_answers(qa_fp):
    story = builtin_stories()[0]
    questions = story.questions[:4]
    batched = qa_fp.answer_batch(questions, [story.context] * len(questions))
    for q, answers in zip(questions, batched):
        single = qa_fp.answer(q, story.context)
        assert answers[0].text == single.text
        assert answers[0].score == pytest.approx(single.score, abs=1e-4)


def test_history_turns_are_prepended_to_follow_up_questions(qa_fp):
    story = builtin_stories()[0]
    history = [("What cut the island off in 1952?", "a storm")]
    ans = qa_fp.answer("For how long?", story.context, history=history, history_turns=1)
    assert ans.text == "nineteen days"
