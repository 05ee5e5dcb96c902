"""Per-call answer options, inputs a Hugging Face user passes, answers aligned to words."""
import math

import numpy as np
import pytest

import bertqa
from bertqa.qa.decode import DecodeOptions, Words, decode
from bertqa.qa.pipeline import QAOptions, as_pairs
from bertqa.qa.windows import Window, WindowOptions

# [CLS] q [SEP] Margaret ##he Olsen . [SEP]: a wordpiece split inside "Margarethe"
CONTEXT = "Margarethe Olsen."
OFFSETS = [None, None, None, (0, 8), (8, 10), (11, 16), (16, 17), None]


def window():
    return Window(0, list(range(len(OFFSETS))), [0] * 3 + [1] * 5, OFFSETS)


def fragment_logits():
    """Spans by logit sum: 'Margarethe Olsen' 16, 'Margaret' 15 (a fragment), 'Olsen' 11,
    'Margarethe' 10, 'Margarethe Olsen.' 8."""
    s, e = np.zeros(len(OFFSETS)), np.zeros(len(OFFSETS))
    s[3], s[5] = 8.0, 3.0
    e[5], e[3], e[4] = 8.0, 7.0, 2.0
    return s, e


# -- align_to_words ---------------------------------------------------------------------------

@pytest.mark.parametrize("context, span, snapped", [
    ("Margarethe Olsen.", (0, 8), (0, 10)),          # end inside a word: to its end
    ("Margarethe Olsen.", (3, 16), (0, 16)),         # start inside a word: to its start
    ("Margarethe Olsen.", (11, 17), (11, 17)),       # punctuation is no part of a word
    ("in 1911, then", (3, 6), (3, 7)),               # digits are word characters
    ("Zürich", (1, 3), (0, 6)),
    ("foo_bar", (4, 7), (4, 7)),                     # '_' separates words, as BERT splits there
    ("北京大学", (1, 2), (1, 2)),                      # each CJK ideograph is a word of its own
])
def test_words_snap_spans_to_whole_words(context, span, snapped):
    assert Words(context).snap(*span) == snapped
    assert Words(context).cuts_a_word(*span) == (span != snapped)


def test_top_k_answers_contain_no_word_fragment_and_no_duplicate():
    s, e = fragment_logits()
    answers = decode(CONTEXT, [window()], [s], [e], DecodeOptions(), top_k=5)
    words = Words(CONTEXT)
    assert [a.text for a in answers][:3] == ["Margarethe Olsen", "Margarethe", "Olsen"]
    assert all(not words.cuts_a_word(a.start, a.end) for a in answers)
    assert len({(a.start, a.end) for a in answers}) == len(answers)


def test_merged_spans_keep_the_best_score():
    s, e = fragment_logits()
    raw = {a.text: a.score for a in decode(CONTEXT, [window()], [s], [e],
                                           DecodeOptions(align_to_words=False), top_k=10)}
    aligned = {a.text: a.score for a in decode(CONTEXT, [window()], [s], [e], DecodeOptions(), top_k=10)}
    # "Margaret" (a fragment) and "Margarethe" become one answer with the better of their scores
    assert aligned["Margarethe"] == max(raw["Margaret"], raw["Margarethe"])
    assert "Margaret" not in aligned


def test_align_to_words_off_keeps_the_raw_spans():
    s, e = fragment_logits()
    answers = decode(CONTEXT, [window()], [s], [e], DecodeOptions(align_to_words=False), top_k=5)
    assert "Margaret" in [a.text for a in answers]


# -- option values --------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: DecodeOptions(max_answer_len=0), "max_answer_len must be an integer >= 1, got 0"),
    (lambda: DecodeOptions(max_answer_len="3"), "max_answer_len must be an integer >= 1, got '3'"),
    (lambda: DecodeOptions(n_best=2.5), "n_best must be an integer >= 1, got 2.5"),
    (lambda: DecodeOptions(allow_no_answer="no"), "allow_no_answer must be True or False, got 'no'"),
    (lambda: DecodeOptions(null_threshold=math.nan), "null_threshold must be a number"),
    (lambda: DecodeOptions(align_to_words=1), "align_to_words must be True or False, got 1"),
    (lambda: WindowOptions(max_seq_len="384"), "max_seq_len must be an integer >= 0, got '384'"),
    (lambda: WindowOptions(doc_stride=-1), "doc_stride must be an integer >= 0, got -1"),
    (lambda: WindowOptions(doc_stride=320), r"doc_stride \(320\) must be >= 0 and smaller"),
    (lambda: QAOptions(batch_size=0), "batch_size must be an integer >= 1, got 0"),
])
def test_bad_option_values_are_value_errors_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_minus_infinity_is_a_valid_null_threshold():
    assert DecodeOptions(null_threshold=-math.inf).null_threshold == -math.inf


def test_with_options_changes_each_part_by_name():
    base = QAOptions()
    got = base.with_options(max_answer_len=5, doc_stride=64, batch_size=4, align_to_words=False,
                            null_threshold=None)
    assert (got.decode.max_answer_len, got.windows.doc_stride, got.batch_size) == (5, 64, 4)
    assert got.decode.align_to_words is False and got.decode.null_threshold == base.decode.null_threshold
    assert base.decode.max_answer_len != 5                       # the original is unchanged
    assert base.with_options() is base
    with pytest.raises(TypeError, match=r"unknown option 'max_len'; valid options: n_best, max_answer_len"):
        base.with_options(max_len=3)


# -- inputs -----------------------------------------------------------------------------------------

def test_one_context_string_is_shared_by_every_question():
    assert as_pairs(["a?", "b?", "c?"], "ctx") == (["a?", "b?", "c?"], ["ctx"] * 3)
    assert as_pairs("a?", "ctx") == (["a?"], ["ctx"])


def test_dicts_give_question_and_context():
    pairs = [{"question": "a?", "context": "x"}, {"question": "b?", "context": "y"}]
    assert as_pairs(pairs, None) == (["a?", "b?"], ["x", "y"])
    assert as_pairs(pairs[0], None) == (["a?"], ["x"])


@pytest.mark.parametrize("questions, contexts, error, message", [
    ([{"question": "a?"}], None, ValueError, r"questions\[0\] must have .*missing 'context'"),
    ([{"question": "a?", "context": "x", "top_k": 3}], None, ValueError, r"unknown 'top_k'"),
    ([{"question": "a?", "context": "x"}, "b?"], None, ValueError, "mixes"),
    ([{"question": "a?", "context": "x"}], "y", ValueError, "give no contexts besides"),
    (["a?"], None, TypeError, "contexts must be a string or a list of strings, got NoneType"),
    (42, "x", TypeError, "questions must be a list"),
])
def test_bad_inputs_are_clear_errors(questions, contexts, error, message):
    with pytest.raises(error, match=message):
        as_pairs(questions, contexts)


# -- on the bundled model -------------------------------------------------------------------------

STORY = ("The lighthouse keeper was called Margarethe Olsen. She lived there from 1911 to 1952 "
         "with her dog Rex.")


def test_qaoptions_is_exported():
    assert bertqa.QAOptions is QAOptions and "QAOptions" in bertqa.__all__


def test_per_call_keyword_options(qa_fp):
    q, before = "Who was the lighthouse keeper?", qa_fp.options
    assert qa_fp.answer(q, STORY).text == "Margarethe Olsen"
    # one token, "Margaret", extended to its word: alignment may pass max_answer_len's tokens
    assert qa_fp.answer(q, STORY, max_answer_len=1).text == "Margarethe"
    assert qa_fp.answer(q, STORY, max_answer_len=1, align_to_words=False).text == "Margaret"
    assert qa_fp.options == before                                   # the model's options unchanged
    answers = qa_fp.answer("Who was the lighthouse keeper?", STORY, top_k=3, max_seq_len=64,
                           doc_stride=16, max_question_len=16)
    assert len(answers) == 3 and answers[0].text == "Margarethe Olsen"
    none = qa_fp.answer("Who was the lighthouse keeper?", STORY, allow_no_answer=True,
                        null_threshold=-math.inf)
    assert none.is_impossible


def test_top_k_answers_of_the_model_are_whole_words(qa_fp):
    q = "Who was the lighthouse keeper?"
    raw = qa_fp.answer(q, STORY, top_k=5, align_to_words=False)
    words = Words(STORY)
    assert any(words.cuts_a_word(a.start, a.end) for a in raw), "the fragment this test is about"
    aligned = qa_fp.answer(q, STORY, top_k=5)
    assert not any(words.cuts_a_word(a.start, a.end) for a in aligned)
    assert len({(a.start, a.end) for a in aligned}) == 5


@pytest.mark.parametrize("kwargs, error, message", [
    ({"top_k": 0}, ValueError, "top_k must be an integer >= 1, got 0"),
    ({"top_k": True}, ValueError, "top_k must be an integer >= 1, got True"),
    ({"max_answer_len": -2}, ValueError, "max_answer_len must be an integer >= 1, got -2"),
    ({"history_turns": -1}, ValueError, "history_turns must be an integer >= 0, got -1"),
    ({"history_mode": "sometimes"}, ValueError, "history_mode must be one of always, open, best, "
                                                "open-best, got 'sometimes'"),
    ({"max_answer_length": 3}, TypeError, "unexpected keyword argument 'max_answer_length'; valid "
                                          "keywords: .*top_k.*max_answer_len, "),
])
def test_bad_per_call_values(qa_fp, kwargs, error, message):
    with pytest.raises(error, match=message):
        qa_fp.answer("Who?", STORY, **kwargs)


def test_bad_batch_keywords(qa_fp):
    with pytest.raises(TypeError, match="answer_batch\\(\\) got an unexpected keyword argument 'topk'"):
        qa_fp.answer_batch(["Who?"], STORY, topk=2)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        qa_fp.answer_batch(["Who?"], STORY, top_k=0)


def test_answer_batch_shares_one_context_string(qa_fp):
    questions = ["Who was the lighthouse keeper?", "What was the dog called?", "Since when did she live there?"]
    batched = qa_fp.answer_batch(questions, STORY, max_answer_len=10)
    assert len(batched) == 3
    for q, answers in zip(questions, batched):
        single = qa_fp.answer(q, STORY, max_answer_len=10)
        assert (answers[0].text, answers[0].start) == (single.text, single.start)


def test_dict_inputs(qa_fp):
    pair = {"question": "What was the dog called?", "context": STORY}
    one = qa_fp.answer(pair)
    assert one.text == qa_fp.answer(pair["question"], STORY).text
    two = qa_fp.answer([pair, {"question": "Who was the lighthouse keeper?", "context": STORY}])
    assert [a.text for a in two] == [one.text, "Margarethe Olsen"]
    assert [r[0].text for r in qa_fp.answer_batch([pair])] == [one.text]
    with pytest.raises(ValueError, match="give no context besides"):
        qa_fp.answer(pair, STORY)
    with pytest.raises(ValueError, match="history_turns applies to one question"):
        qa_fp.answer([pair], history=[("Who?", "Ada")], history_turns=1)
