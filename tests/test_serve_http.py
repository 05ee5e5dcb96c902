"""`bertqa serve` over HTTP: the same answers as the library, batching under concurrency, metrics."""
import asyncio

import httpx
import pytest
from serve_support import long_context, metric

pytest.importorskip("fastapi")


def as_list(answers):
    return answers if isinstance(answers, list) else [answers]


def assert_same(got: list[dict], want, where: str):
    """Same spans (text and character offsets) in the same order; scores equal up to float
    rounding (a shared batch pads windows to another length)."""
    assert [(a["text"], a["start"], a["end"]) for a in got] == \
        [(a.text, a.start, a.end) for a in want], where
    assert [a["score"] for a in got] == pytest.approx([a.score for a in want], rel=1e-4, abs=1e-7), where


def test_health_ready_and_schema(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz").json()
    assert ready == {"status": "ready", "model": "minilm-l6-squad", "target": "cpu", "precision": "fp"}
    schema = server.get("/openapi.json").json()
    assert {"/v1/answer", "/v1/answer:batch", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])


def test_answers_equal_the_library(server, qa_fp, stories):
    long = long_context(stories, 2)
    cases = [(s.questions[0], s.context, {}) for s in stories] + [
        (stories[0].questions[1], stories[0].context, {"top_k": 3}),
        (stories[1].questions[2], stories[1].context, {"top_k": 2, "max_answer_len": 3}),
        ("What is the capital of Peru?", stories[2].context, {"allow_no_answer": True, "top_k": 2}),
        (stories[2].questions[1], long, {"top_k": 3}),                   # several windows
    ]
    assert len(qa_fp.pipeline.windows([cases[-1][0]], [long])) > 1
    for question, context, opts in cases:
        r = server.post("/v1/answer", {"question": question, "context": context, **opts})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["model"], body["target"], body["precision"]) == ("minilm-l6-squad", "cpu", "fp")
        assert body["time_ms"] > 0
        decode = {k: v for k, v in opts.items() if k != "top_k"}
        want = qa_fp.answer(question, context, top_k=opts.get("top_k", 1),
                         options=qa_fp.options.with_decode(**decode))
        assert_same(body["answers"], as_list(want), question)


def test_batch_endpoint_equals_the_library(server, qa_fp, stories):
    items = [{"question": s.questions[3], "context": s.context} for s in stories]
    items[0]["top_k"] = 3
    items.append({"question": stories[0].questions[5], "context": long_context(stories, 1)})
    r = server.post("/v1/answer:batch", {"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(items)
    for item, result in zip(items, results):
        want = qa_fp.answer(item["question"], item["context"], top_k=item.get("top_k", 1))
        assert_same(result["answers"], as_list(want), item["question"])


def test_100_concurrent_clients_get_correct_answers_in_shared_batches(server, qa_fp, stories):
    opening = stories[0].context[:stories[0].context.index(" In the winter")]   # short: 100 requests stay fast
    pairs = [(q, opening) for q in stories[0].questions[:4]] + \
        [(stories[1].questions[0], long_context(stories, 1))]                      # 2 windows
    requests = [pairs[i % len(pairs)] for i in range(100)]
    expected = {p: qa_fp.answer(*p) for p in pairs}
    before = server.get("/metrics").text

    async def ask_all():
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/answer", json={"question": q, "context": c})
                                          for q, c in requests))

    responses = asyncio.run(asyncio.wait_for(ask_all(), 120))
    assert [r.status_code for r in responses] == [200] * 100
    for (q, c), r in zip(requests, responses):
        assert_same(r.json()["answers"], [expected[(q, c)]], q)
    after = server.get("/metrics").text
    ok = 'bertqa_requests_total{path="/v1/answer",code="200"}'
    assert metric(after, ok) - metric(before, ok) == 100
    batches = metric(after, "bertqa_batch_requests_count") - metric(before, "bertqa_batch_requests_count")
    batched = metric(after, "bertqa_batch_requests_sum") - metric(before, "bertqa_batch_requests_sum")
    assert batched == 100
    assert batches < 100 / 2, f"100 concurrent requests ran in {batches:.0f} batches: no batching"
    singles = (metric(after, 'bertqa_batch_requests_bucket{le="1"}')
               - metric(before, 'bertqa_batch_requests_bucket{le="1"}'))
    assert singles < batches, "every batch held one request"


def test_metrics_are_prometheus_text(server):
    r = server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    for name in ("bertqa_requests_total", "bertqa_errors_total", "bertqa_batch_requests",
                 "bertqa_batch_windows", "bertqa_queue_seconds", "bertqa_inference_seconds",
                 "bertqa_queue_depth", "bertqa_requests_in_flight"):
        assert f"# TYPE {name} " in r.text, name
    assert 'bertqa_requests_total{path="/healthz",code="200"}' in r.text
