"""Span decoding from hand-made logits."""
import numpy as np

from bertqa.qa.decode import DecodeOptions, decode
from bertqa.qa.windows import Window

CONTEXT = "The cat sat on the mat."
# tokens: [CLS] q [SEP] The cat sat on the mat . [SEP]
OFFSETS = [None, None, None, (0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22), (22, 23), None]


def window(example=0):
    return Window(example, list(range(len(OFFSETS))), [0] * 3 + [1] * 8, OFFSETS)


def logits(start_at, end_at, n=len(OFFSETS), high=10.0):
    s, e = np.zeros(n), np.zeros(n)
    s[start_at], e[end_at] = high, high
    return s, e


def test_best_span_is_the_character_slice():
    s, e = logits(7, 8)
    (ans,) = decode(CONTEXT, [window()], [s], [e], DecodeOptions())
    assert ans.text == "the mat" and (ans.start, ans.end) == (15, 22)
    assert 0.9 < ans.score <= 1.0


def test_end_before_start_is_never_chosen():
    s, e = logits(8, 4)
    s[5] = 5.0                                # next best start: "sat", then end "cat" is before it
    (ans,) = decode(CONTEXT, [window()], [s], [e], DecodeOptions())
    assert ans.start <= ans.end and ans.end > ans.start


def test_question_and_special_tokens_are_never_in_an_answer():
    s, e = logits(1, 1, high=50.0)            # the question token has the highest logits
    s[4], e[5] = 5.0, 5.0
    (ans,) = decode(CONTEXT, [window()], [s], [e], DecodeOptions())
    assert ans.text == "cat sat"


def test_max_answer_len_limits_the_span():
    s, e = logits(3, 9)
    s[6], e[7] = 4.0, 4.0
    (ans,) = decode(CONTEXT, [window()], [s], [e], DecodeOptions(max_answer_len=3))
    assert len(ans.text.split()) <= 3


def test_best_span_across_windows_by_logit_sum():
    s1, e1 = logits(4, 4, high=3.0)
    s2, e2 = logits(7, 8, high=6.0)
    (ans,) = decode(CONTEXT, [window(), window()], [s1, s2], [e1, e2], DecodeOptions())
    assert ans.text == "the mat"


def test_top_k_answers_are_distinct_and_ranked():
    s, e = logits(7, 8)
    s[4], e[5] = 6.0, 6.0
    answers = decode(CONTEXT, [window()], [s], [e], DecodeOptions(), top_k=3)
    assert len(answers) == 3
    assert len({(a.start, a.end) for a in answers}) == 3
    assert answers[0].text == "the mat"


def test_no_answer_when_allowed_and_null_wins():
    s, e = logits(0, 0, high=12.0)
    s[4], e[4] = 2.0, 2.0
    (ans,) = decode(CONTEXT, [window()], [s], [e], DecodeOptions(allow_no_answer=True))
    assert ans.is_impossible and ans.text == ""
    (ans,) = decode(CONTEXT, [window()], [s], [e], DecodeOptions(allow_no_answer=False))
    assert ans.text == "cat"
    (ans,) = decode(CONTEXT, [window()], [s], [e], DecodeOptions(allow_no_answer=True, null_threshold=30.0))
    assert ans.text == "cat"
