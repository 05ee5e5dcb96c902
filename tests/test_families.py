"""Every encoder family against transformers, on tiny random-weight checkpoints (family_support).

Logits within 1e-4 of *ForQuestionAnswering on padded batches; int8 custom nodes in place of
every Linear (streaming prepare, then a saved model read back); answers and offsets identical
to transformers' question-answering rule (its pipeline's span search, align_to_words off: the
pipeline itself is gone from transformers 5, so the rule is written out here over transformers'
tokenizer and model); windows over a long context identical to transformers' overflowing
encodings. Random weights only: the hub is not reachable from the test machines.
"""
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency")

import bertqa  # noqa: E402
from bertqa.errors import InputError, ModelError  # noqa: E402
from bertqa.model.loading import load_model, read_config  # noqa: E402
from bertqa.qa.decode import DecodeOptions  # noqa: E402
from bertqa.qa.pipeline import QAOptions  # noqa: E402
from bertqa.qa.windows import Tokenizer, WindowOptions, collate, make_windows  # noqa: E402
from bertqa.quant import custom_nodes  # noqa: E402

from family_support import CONTEXTS, CORPUS, FAMILIES, QUESTIONS, build_family_dir  # noqa: E402

WINDOWS = WindowOptions(max_seq_len=128, doc_stride=32, max_question_len=32)
MAX_ANSWER = 15


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (directory, transformers model, transformers tokenizer), built once."""
    built = {}

    def get(family):
        if family not in built:
            d = tmp_path_factory.mktemp(family)
            built[family] = (d, *build_family_dir(family, d))
        return built[family]
    return get


def hf_forward(hf, hf_tok, **inputs):
    names = set(hf_tok.model_input_names)
    with torch.no_grad():
        out = hf(**{k: v for k, v in inputs.items() if k in names})
    return out.start_logits, out.end_logits


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_on_a_padded_batch(checkpoints, family):
    d, hf, hf_tok = checkpoints(family)
    assert read_config(d).model_type == family
    ours, tok = load_model(d), Tokenizer(d)
    ids, types, mask = collate(make_windows(tok, QUESTIONS, CONTEXTS, WINDOWS), tok.pad_id)
    assert (mask == 0).any(), "the batch should have padding"
    with torch.no_grad():
        s, e = ours(ids, types, mask)
    hs, he = hf_forward(hf, hf_tok, input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()            # padded positions: attention runs per sequence (bert.per_sequence)
    assert (s - hs)[real].abs().max() < 1e-4 and (e - he)[real].abs().max() < 1e-4
    assert s.std() > 0.1, "logits should not be degenerate"


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_nodes_replace_every_linear_and_a_saved_model_answers_the_same(checkpoints, family, tmp_path):
    d, _, _ = checkpoints(family)
    linears = [n for n, m in load_model(d).named_modules() if type(m) is torch.nn.Linear]
    assert len(linears) == 4 * 2 + 1 + (family == "electra")          # electra: embeddings.project
    qa = bertqa.load(model=str(d), target="customcpu", precision="int", options=QAOptions(windows=WINDOWS))
    assert not [m for m in qa.prepared.model.modules() if type(m) is torch.nn.Linear]
    assert sorted(n.lw.name for n in custom_nodes(qa.prepared.model)) == sorted(linears)
    answers = qa.answer_batch(QUESTIONS, CONTEXTS)
    for (a,), c in zip(answers, CONTEXTS):
        assert a.text and a.text == c[a.start:a.end] and a.text == a.text.strip()
    again = bertqa.load(model=str(qa.save(tmp_path / "saved")), options=QAOptions(windows=WINDOWS))
    assert again.answer_batch(QUESTIONS, CONTEXTS) == answers


def transformers_rule(hf, hf_tok, question: str, context: str):
    """(text, start, end) as transformers' QA pipeline picks them from one window: softmax over
    the context tokens and the first token, the first token then zeroed, argmax of
    p_start * p_end over end >= start, length <= MAX_ANSWER, both in the context."""
    enc = hf_tok(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    in_context = np.array([s == 1 for s in enc.sequence_ids(0)])
    s, e = (t[0].double().numpy() for t in hf_forward(hf, hf_tok, **enc))
    keep = in_context.copy()
    keep[0] = True

    def probs(v):
        v = np.where(keep, v, -10000.0)
        p = np.exp(v - v.max())
        p = p / p.sum()
        p[0] = 0.0
        return p
    outer = np.tril(np.triu(np.outer(probs(s), probs(e))), MAX_ANSWER - 1)
    outer[~in_context, :] = 0.0
    outer[:, ~in_context] = 0.0
    i, j = np.unravel_index(np.argmax(outer), outer.shape)
    a, b = offsets[i][0], offsets[j][1]
    return context[a:b], a, b


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_and_offsets_match_the_transformers_qa_rule(checkpoints, family):
    d, hf, hf_tok = checkpoints(family)
    # the transformers rule has no word alignment: compare the raw spans
    options = QAOptions(windows=WINDOWS, decode=DecodeOptions(n_best=WINDOWS.max_seq_len, max_answer_len=MAX_ANSWER,
                                                              align_to_words=False))
    qa = bertqa.load(model=str(d), target="cpu", precision="fp", options=options)
    tok = qa.tokenizer
    for q, c in zip(QUESTIONS, CONTEXTS):
        (_, offsets), = tok.encode_many([c])
        assert all(a < b for a, b in offsets), "a whitespace-only token would make the rules differ"
        ours = qa.answer(q, c)
        assert (ours.text, ours.start, ours.end) == transformers_rule(hf, hf_tok, q, c)
        assert ours.text == c[ours.start:ours.end] and ours.text


@pytest.mark.parametrize("family", FAMILIES)
def test_windows_over_a_long_context_match_transformers_overflow(checkpoints, family):
    d, _, hf_tok = checkpoints(family)
    context = " ".join(CORPUS * 3)
    opts = WindowOptions(max_seq_len=48, doc_stride=12, max_question_len=24)
    ours = make_windows(Tokenizer(d), [QUESTIONS[1]], [context], opts)
    enc = hf_tok(QUESTIONS[1], context, truncation="only_second", max_length=48, stride=12,
                 return_overflowing_tokens=True, return_offsets_mapping=True)
    assert len(ours) == len(enc["input_ids"]) > 5
    for k, w in enumerate(ours):
        assert w.ids == enc["input_ids"][k]
        if "token_type_ids" in enc:
            assert w.type_ids == enc["token_type_ids"][k]
        seq = enc.sequence_ids(k)
        theirs = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][k], seq)]
        assert w.offsets == theirs
    qa = bertqa.load(model=str(d), target="cpu", precision="fp", options=QAOptions(windows=opts))
    for a in qa.answer(QUESTIONS[1], context, top_k=3):
        assert a.text and a.text == context[a.start:a.end]


def test_a_roberta_window_may_be_at_most_max_positions_minus_the_padding_offset(checkpoints):
    d, _, _ = checkpoints("roberta")                 # max_position_embeddings 130, pad 1
    assert read_config(d).max_window == 128
    qa = bertqa.load(model=str(d), target="cpu", precision="fp", options=QAOptions(windows=WINDOWS))
    too_long = QAOptions(windows=WindowOptions(max_seq_len=129, doc_stride=32, max_question_len=32))
    with pytest.raises(InputError, match="128 position"):
        qa.answer(QUESTIONS[0], CONTEXTS[0], options=too_long)


def test_an_unsupported_model_type_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "albert"}')
    with pytest.raises(ModelError, match="'albert' is not supported .*bert, distilbert, roberta, "
                                         "xlm-roberta, electra"):
        read_config(tmp_path)


def test_a_checkpoint_of_another_family_is_refused_naming_the_tensor(checkpoints, tmp_path):
    d, _, _ = checkpoints("distilbert")
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((d / name).read_bytes())
    (tmp_path / "config.json").write_text((d / "config.json").read_text().replace('"distilbert"', '"roberta"'))
    with pytest.raises(ModelError, match="distilbert.*does not belong to a RoBERTa"):
        load_model(tmp_path)
