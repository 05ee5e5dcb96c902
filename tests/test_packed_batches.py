"""Packed batches (bertqa.model.packing): a right-padded CPU batch runs as its real tokens only.
Each window's int8 logits are bit for bit the ones it gets alone, fp32 ones within rounding;
the Linear layers see only the real rows; with packing off (BertForQA.pack_batches) the padded
batch gives the same int8 logits."""
import warnings

import pytest
import torch
from torch import nn

import bertqa
from bertqa.api import from_module
from bertqa.model.bert import BertConfig, random_model
from bertqa.model.loading import BUNDLED_DIR
from bertqa.model.packing import PADDED_LOGIT, pack
from bertqa.qa.pipeline import QAOptions
from bertqa.qa.windows import WindowOptions, collate
from bertqa.quant import custom_nodes

SMALL = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
OPTIONS = QAOptions(windows=WindowOptions(max_seq_len=128, doc_stride=48, max_question_len=32))
QUESTIONS = ["Who rowed the mail?", "What did the keeper's daughter do every evening before the storm?",
             "When?", "Where was the lighthouse?"]


@pytest.fixture(scope="module")
def bundled_int():
    return bertqa.load(model="bundled", target="customcpu", precision="int")


@pytest.fixture(scope="module")
def small_int():
    return from_module(random_model(SMALL, seed=4), BUNDLED_DIR, "small", "customcpu", "int",
                       options=OPTIONS)


@pytest.fixture(scope="module")
def small_fp():
    return from_module(random_model(SMALL, seed=4), BUNDLED_DIR, "small", "cpu", "fp", options=OPTIONS)


def mixed_windows(qa, stories):
    """Windows of different lengths: short and long questions about a short context and about
    a story that takes several windows (at the options' max_seq_len)."""
    contexts = [stories[0].context[:150], stories[0].context, stories[1].context, stories[2].context[:400]]
    windows = qa.pipeline.windows(QUESTIONS, contexts, options=OPTIONS)
    assert len({len(w.ids) for w in windows}) > 2 and len(windows) > len(QUESTIONS)
    return windows


def batch_of(qa, windows):
    """The windows as one padded batch (ids, types, mask), in their order."""
    return collate(windows, qa.tokenizer.pad_id)


def forward(model, batch):
    with torch.inference_mode():
        return model(*batch)


def alone(qa, window):
    return forward(qa.prepared.model, batch_of(qa, [window]))


def rows_seen(model):
    """Forward pre-hooks on every Linear (nn.Linear or custom node) recording how many rows
    each call gets; -> (the list they fill, a function that removes the hooks)."""
    seen = []
    linears = [m for m in model.modules() if type(m) is nn.Linear] + custom_nodes(model)
    assert linears
    handles = [m.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])) for m in linears]
    return seen, lambda: [h.remove() for h in handles]


@pytest.mark.parametrize("which", ["bundled_int", "small_int"])
def test_int8_logits_of_each_window_in_a_packed_batch_are_those_it_gets_alone(request, which, stories):
    qa = request.getfixturevalue(which)
    windows = mixed_windows(qa, stories)
    batch = batch_of(qa, windows)
    assert pack(batch[2]) is not None
    start, end = forward(qa.prepared.model, batch)
    for i, w in enumerate(windows):
        s1, e1 = alone(qa, w)
        n = len(w.ids)
        assert torch.equal(start[i, :n], s1[0]), f"window {i} ({n} tokens)"
        assert torch.equal(end[i, :n], e1[0]), f"window {i} ({n} tokens)"
        assert (start[i, n:] == PADDED_LOGIT).all() and (end[i, n:] == PADDED_LOGIT).all()


def test_the_pipeline_batches_pack_and_give_the_logits_alone(bundled_int, stories):
    qa = bundled_int
    windows = mixed_windows(qa, stories)
    together = qa.pipeline.logits(windows, batch_size=3)
    for w, (s, e) in zip(windows, together):
        (s1, e1), = qa.pipeline.logits([w], batch_size=1)
        assert (s == s1).all() and (e == e1).all()


@pytest.mark.parametrize("which", ["bundled", "small"])
def test_fp32_logits_in_a_packed_batch_match_the_window_alone(request, which, qa_fp, stories):
    qa = qa_fp if which == "bundled" else request.getfixturevalue("small_fp")
    windows = mixed_windows(qa, stories)
    start, end = forward(qa.prepared.model, batch_of(qa, windows))
    for i, w in enumerate(windows):
        s1, e1 = alone(qa, w)
        n = len(w.ids)
        assert torch.allclose(start[i, :n], s1[0], atol=1e-5, rtol=0)
        assert torch.allclose(end[i, :n], e1[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["bundled_int", "small_int", "small_fp"])
def test_the_linear_layers_see_only_the_real_tokens(request, which, stories):
    qa = request.getfixturevalue(which)
    model = qa.prepared.model
    windows = mixed_windows(qa, stories)
    batch = batch_of(qa, windows)
    seen, remove = rows_seen(model)
    try:
        forward(model, batch)
        packed = list(seen)
        seen.clear()
        model.pack_batches = False
        forward(model, batch)
    finally:
        model.pack_batches = True
        remove()
    real, b, s = sum(len(w.ids) for w in windows), *batch[0].shape
    assert real < b * s
    linears = 4 * len(model.layers) + 1                 # qkv, out, up, down per layer; qa_outputs
    assert packed == [real] * linears and seen == [b * s] * linears


def test_the_padded_path_gives_the_same_int8_logits(bundled_int, stories):
    qa = bundled_int
    model = qa.prepared.model
    windows = mixed_windows(qa, stories)
    batch = batch_of(qa, windows)
    packed = forward(model, batch)
    model.pack_batches = False
    try:
        padded = forward(model, batch)
    finally:
        model.pack_batches = True
    real = batch[2].bool()
    for p, q in zip(packed, padded):
        assert torch.equal(p[real], q[real])
        assert not torch.equal(p, q)                  # padded positions: PADDED_LOGIT only packed


@pytest.mark.parametrize("family", [dict(embedding_size=32),
                                    dict(positions_from_padding=True, pad_token_id=1),
                                    dict(type_vocab_size=0)], ids=["electra", "roberta", "distilbert"])
def test_every_family_packs_to_its_logits_alone(family):
    config = BertConfig(vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=96, max_position_embeddings=40, **family)
    model = random_model(config, seed=2)
    g = torch.Generator().manual_seed(3)
    lengths = [20, 7, 13, 1]
    ids = torch.randint(5, 100, (len(lengths), max(lengths)), generator=g)
    types = torch.zeros_like(ids)
    types[:, 5:] = 1 if config.type_vocab_size > 1 else 0
    mask = (torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[mask == 0] = config.pad_token_id
    seen, remove = rows_seen(model)
    try:
        start, end = forward(model, (ids, types, mask))
    finally:
        remove()
    assert set(seen) == {sum(lengths)} and len(seen) == 4 * 2 + 1 + ("embedding_size" in family)
    for i, n in enumerate(lengths):
        s1, e1 = forward(model, (ids[i:i + 1, :n], types[i:i + 1, :n], mask[i:i + 1, :n]))
        assert torch.allclose(start[i, :n], s1[0], atol=1e-5, rtol=0)
        assert torch.allclose(end[i, :n], e1[0], atol=1e-5, rtol=0)


def test_which_batches_pack():
    right = torch.tensor([[1, 1, 1], [1, 0, 0]])
    p = pack(right)
    assert p is not None and p.lengths == (3, 1) and p.tokens == 4
    assert pack(torch.tensor([[1, 1, 1], [1, 1, 1]])) is None          # nothing padded
    assert pack(torch.tensor([[1, 1, 1], [1, 0, 1]])) is None          # a hole
    assert pack(torch.tensor([[1, 1, 1], [0, 1, 1]])) is None          # left padding
    assert pack(None) is None
    assert pack(torch.tensor([[1, 1, 0]])) is not None                 # one padded window too
    x = torch.arange(6.0).reshape(2, 3, 1)
    assert p.gather(x).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert p.scatter(p.gather(x)).flatten().tolist() == [0.0, 1.0, 2.0, 3.0] + [PADDED_LOGIT] * 2


def test_a_traced_model_runs_the_padded_batch():
    model = random_model(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=16))
    ids = torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")               # torch.jit.trace is deprecated
        traced = torch.jit.trace(model, (ids, torch.zeros_like(ids), mask), check_trace=False)
        got = traced(ids, torch.zeros_like(ids), mask)
        want = model(ids, torch.zeros_like(ids), mask)
    real = mask.bool()
    for a, b in zip(got, want):
        assert a.shape == (2, 8) and torch.allclose(a[real], b[real], atol=1e-5)
        assert (b[~real] == PADDED_LOGIT).all() and (a[~real] != PADDED_LOGIT).all()   # eager packs
