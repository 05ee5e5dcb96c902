"""An int8 window's logits are bit-for-bit the ones it gets alone, whatever it is batched with:
attention runs per sequence at its own length (bertqa.model.bert.per_sequence), and every other
part of an int8 forward works row by row."""
import numpy as np
import pytest
import torch

import bertqa
from bertqa.model.bert import BertConfig, per_sequence, random_model, sdpa_attention

QUESTIONS = ["Who rowed the mail?", "What did the keeper's daughter do every evening before the storm?",
             "When?"]


@pytest.fixture(scope="module")
def qa_int():
    return bertqa.load(model="bundled", target="customcpu", precision="int", attention="fp32")


def alone_and_batched(qa, questions, context):
    windows = qa.pipeline.windows(questions, [context] * len(questions))
    alone = [qa.pipeline.logits([w], batch_size=1)[0] for w in windows]
    return alone, qa.pipeline.logits(windows, batch_size=len(windows)), windows


def test_int8_logits_do_not_depend_on_the_batch(qa_int, stories):
    alone, batched, windows = alone_and_batched(qa_int, QUESTIONS, stories[0].context)
    assert len({len(w.ids) for w in windows}) > 1                     # the batch pads some
    for (s1, e1), (s2, e2) in zip(alone, batched):
        assert np.array_equal(s1, s2) and np.array_equal(e1, e2)


def test_answers_in_a_mixed_batch_are_the_answers_alone(qa_int, stories):
    story = stories[0].context
    together = qa_int.answer_batch(QUESTIONS, [story] * len(QUESTIONS), top_k=2)
    for q, got in zip(QUESTIONS, together):
        want = qa_int.answer(q, story, top_k=2)
        assert [(a.text, a.start, a.score) for a in got] == [(a.text, a.start, a.score) for a in want]


def test_per_sequence_pads_with_zeros_and_falls_back_for_other_masks():
    torch.manual_seed(0)
    qkv = torch.randn(2, 5, 3 * 8)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mask = (1.0 - keep[:, None, None, :].float()) * torch.finfo(torch.float32).min
    out = per_sequence(sdpa_attention, qkv, mask, 2)
    assert torch.equal(out[1, 3:], torch.zeros(2, 8))
    assert torch.equal(out[1, :3], sdpa_attention(qkv[1:2, :3].contiguous(), mask[1:2, ..., :3], 2)[0])
    holes = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0]])           # not right padding
    mask = (1.0 - holes[:, None, None, :].float()) * torch.finfo(torch.float32).min
    assert torch.equal(per_sequence(sdpa_attention, qkv, mask, 2), sdpa_attention(qkv, mask, 2))


def test_fp32_model_still_matches_its_batched_self_closely():
    torch.manual_seed(0)
    model = random_model(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64,
                                    max_position_embeddings=16)).eval()
    ids = torch.randint(1, 50, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        s, e = model(ids, torch.zeros_like(ids), mask)
        s1, e1 = model(ids[1:, :7], torch.zeros_like(ids[1:, :7]), mask[1:, :7])
    assert torch.allclose(s[1, :7], s1[0], atol=1e-5) and torch.allclose(e[1, :7], e1[0], atol=1e-5)
