"""End to end on the bundled model: real answers, character slices, long contexts, batching."""
import pytest

from bertqa.data.readers import builtin_stories
from bertqa.qa.pipeline import QAOptions, decode_pairs
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


def test_decode_pairs_applies_each_pairs_options(qa_fp):
    stories = builtin_stories()
    questions = [s.questions[0] for s in stories]
    contexts = [s.context for s in stories]
    options = [qa_fp.options.with_decode(), qa_fp.options.with_decode(max_answer_len=2),
               qa_fp.options.with_decode(allow_no_answer=True, null_threshold=-100.0)]
    top_ks = [3, 1, 2]
    windows = qa_fp.pipeline.windows(questions, contexts)
    got = decode_pairs(contexts, windows, qa_fp.pipeline.logits(windows, 16),
                       [o.decode for o in options], top_ks)
    for q, c, o, k, answers in zip(questions, contexts, options, top_ks, got):
        alone = qa_fp.answer_batch([q], [c], top_k=k, options=o)[0]     # padded differently: scores ~equal
        assert [(a.text, a.start, a.end) for a in answers] == [(a.text, a.start, a.end) for a in alone]
        assert [a.score for a in answers] == pytest.approx([a.score for a in alone], rel=1e-5, abs=1e-8)
    assert got[2][0].is_impossible                       # null_threshold -100: always "no answer"
    assert len(got[1][0].text.split()) <= 2


def test_windows_longer_than_the_models_positions_are_an_input_error(qa_fp):
    """The bundled model has 512 position embeddings: a longer window would index past them."""
    import bertqa
    from bertqa.errors import InputError
    assert qa_fp.pipeline.max_positions == 512
    too_long = QAOptions(windows=WindowOptions(max_seq_len=600))
    with pytest.raises(InputError, match=r"max_seq_len \(600\) exceeds the model's 512 position"):
        qa_fp.answer("Who?", "Ada lives in Oslo.", options=too_long)
    with pytest.raises(InputError, match="exceeds the model's 512 position"):
        bertqa.load(model="bundled", options=too_long)
    at_limit = QAOptions(windows=WindowOptions(max_seq_len=512))
    assert qa_fp.answer("Where does Ada live?", "Ada lives in Oslo.", options=at_limit).text == "Oslo"
