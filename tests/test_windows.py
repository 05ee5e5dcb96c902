"""Windows and offsets: long contexts, the last window, unicode, empty and whitespace inputs."""
import pytest

from bertqa.errors import InputError
from bertqa.qa.windows import WindowOptions, collate, make_windows, question_ids


def context_tokens(window):
    return [i for i, o in enumerate(window.offsets) if o is not None]


def test_short_context_is_one_window(tokenizer):
    ws = make_windows(tokenizer, ["Who?"], ["Anna went home."], WindowOptions())
    assert len(ws) == 1
    w = ws[0]
    assert w.ids[0] == tokenizer.cls_id and w.ids[-1] == tokenizer.sep_id
    assert w.type_ids.count(1) == len(context_tokens(w)) + 1          # context + final [SEP]


def test_long_context_windows_overlap_by_doc_stride_and_cover_everything(tokenizer):
    context = " ".join(f"word{i}" for i in range(600))
    opts = WindowOptions(max_seq_len=128, doc_stride=32, max_question_len=16)
    ws = make_windows(tokenizer, ["Which word?"], [context], opts)
    assert len(ws) > 3
    assert all(len(w.ids) <= 128 for w in ws)
    spans = [[w.offsets[i] for i in context_tokens(w)] for w in ws]
    for a, b in zip(spans, spans[1:]):
        assert len(set(a) & set(b)) == 32                              # doc_stride tokens shared
    covered = {o for s in spans for o in s}
    all_tokens = {tuple(o) for o in tokenizer.encode_many([context])[0][1]}
    assert covered == all_tokens                                       # nothing falls between windows


def test_offsets_slice_the_original_text_with_accents_and_unicode(tokenizer):
    context = "Ångström visited Zürich in naïve café style — 東京 too."
    w = make_windows(tokenizer, ["Where?"], [context], WindowOptions())[0]
    pieces = [context[a:b] for a, b in (w.offsets[i] for i in context_tokens(w))]
    assert pieces[0].startswith("Ång")                                 # accents kept, not stripped
    assert "".join(pieces).replace(" ", "") == context.replace(" ", "")  # offsets cover the text


@pytest.mark.parametrize("question,context,message", [
    ("", "Some text.", "question is empty"),
    ("Who?", "", "context is empty"),
    ("   \n\t", "Some text.", "question is whitespace only"),
    ("Who?", " \n ", "context is whitespace only"),
])
def test_empty_and_whitespace_inputs_are_clear_errors(qa_fp, question, context, message):
    with pytest.raises(InputError, match=message):
        qa_fp.answer(question, context)


def test_non_string_input_is_a_clear_error(qa_fp):
    with pytest.raises(InputError, match="question must be a string"):
        qa_fp.answer(None, "text")


def test_history_fills_the_question_budget_from_the_end():
    assert question_ids([7, 8], [1, 2, 3, 4], limit=4) == [3, 4, 7, 8]
    assert question_ids([7, 8, 9], [], limit=2) == [7, 8]


def test_window_options_are_validated():
    with pytest.raises(ValueError, match="doc_stride"):
        WindowOptions(max_seq_len=64, doc_stride=60, max_question_len=16)
    with pytest.raises(ValueError, match="max_seq_len"):
        WindowOptions(max_seq_len=10, max_question_len=16)


def test_collate_pads_to_the_longest_window(tokenizer):
    ws = make_windows(tokenizer, ["Who?", "What is it that he saw there?"], ["A b.", "C d e f g."], WindowOptions())
    ids, types, mask = collate(ws, tokenizer.pad_id)
    assert ids.shape == (2, max(len(w.ids) for w in ws))
    assert mask.sum().item() == sum(len(w.ids) for w in ws)
    assert (ids[mask == 0] == tokenizer.pad_id).all()
