"""Malformed, oversized and too many requests: a 4xx or 503 naming the problem, never a hang,
and the server stays healthy after each."""
import asyncio
import signal
import time

import httpx
import pytest
from serve_support import Server, long_context, metric

pytest.importorskip("fastapi")

QUESTION = "Who kept the lighthouse?"
CONTEXT = "Margarethe Olsen kept the lighthouse on the island for forty-one years."
TIGHT = ("--max-batch", "1", "--max-wait-ms", "0", "--max-queue", "2", "--max-windows", "4",
         "--max-context-chars", "20000", "--max-question-chars", "200", "--max-body-bytes", "65536",
         "--max-items", "4")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three servers, loading side by side: tight limits, a 1 s timeout, one to stop."""
    logs = tmp_path_factory.mktemp("serve-limits")
    started = {"tight": Server(*TIGHT, log_dir=logs),
               "slow": Server("--timeout-s", "1", "--max-windows", "400", "--max-batch", "1",
                              "--max-context-chars", "200000", log_dir=logs),
               "drain": Server("--max-batch", "4", log_dir=logs)}
    yield started
    for srv in started.values():
        srv.stop()


@pytest.fixture(scope="module")
def tight(servers):
    return servers["tight"]


def ok(**fields):
    return {"question": QUESTION, "context": CONTEXT, **fields}


# (what is wrong, raw body or JSON, status, error code, field)
BAD = [
    ("not JSON", b"question=who", 415, "unsupported_media_type", None),
    ("broken JSON", b'{"question": "who", ', 400, "invalid_json", None),
    ("invalid UTF-8", b'{"question": "\xff\xfe", "context": "abc"}', 400, "invalid_utf8", None),
    ("empty body", b"", 422, "invalid_field", None),
    ("an array", [QUESTION, CONTEXT], 422, "invalid_field", None),
    ("missing question", {"context": CONTEXT}, 422, "invalid_field", "question"),
    ("empty question", ok(question=""), 422, "invalid_field", "question"),
    ("whitespace-only context", ok(context=" \n\t "), 422, "invalid_field", "context"),
    ("number as question", ok(question=42), 422, "invalid_field", "question"),
    ("string as top_k", ok(top_k="3"), 422, "invalid_field", "top_k"),
    ("float as top_k", ok(top_k=2.5), 422, "invalid_field", "top_k"),
    ("string as allow_no_answer", ok(allow_no_answer="yes"), 422, "invalid_field", "allow_no_answer"),
    ("top_k 0", ok(top_k=0), 422, "invalid_field", "top_k"),
    ("top_k 1000", ok(top_k=1000), 422, "invalid_field", "top_k"),
    ("max_answer_len 0", ok(max_answer_len=0), 422, "invalid_field", "max_answer_len"),
    ("unknown field", ok(colour="blue"), 422, "invalid_field", "colour"),
    ("lone surrogate", b'{"question": "who\\ud800", "context": "abc"}', 422, "invalid_field", "question"),
    ("lone surrogate in a key", b'{"question": "who", "context": "abc", "\\udc00": 1}', 422, "invalid_field", None),
    ("1e400 as top_k", b'{"question": "who", "context": "abc", "top_k": 1e400}', 422, "invalid_field", "top_k"),
    ("deeply nested", b"{\"question\": " + b"[" * 30_000 + b"]" * 30_000 + b"}", 400, "invalid_json", None),
    ("question too long", ok(question="why " * 60), 422, "invalid_field", "question"),
    ("context too long", ok(context="word " * 4001), 422, "invalid_field", "context"),
    ("no known tokens", ok(context="\u0000\u0001\u0002"), 422, "invalid_field", "context"),
    ("body too large", ok(context="x" * 70_000), 413, "body_too_large", None),
]


def send(server, path, body, **kwargs):
    if isinstance(body, bytes):
        return httpx.post(server.url + path, content=body, timeout=30,
                          headers={"Content-Type": "text/plain" if body == b"question=who" else "application/json"},
                          **kwargs)
    return server.post(path, body, **kwargs)


@pytest.mark.parametrize("why, body, status, code, field", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_a_clear_4xx_and_the_server_stays_healthy(tight, why, body, status, code, field):
    r = send(tight, "/v1/answer", body)
    assert r.status_code == status, f"{why}: {r.status_code} {r.text}"
    error = r.json()["error"]
    assert (error["code"], error["field"]) == (code, field), f"{why}: {error}"
    assert error["message"] and error["errors"]
    assert tight.healthy()


def test_too_many_windows_names_the_context(tight, stories):
    r = tight.post("/v1/answer", ok(context=long_context(stories, 4)))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "context" and "windows" in error["message"] and "limit is 4" in error["message"]


def test_batch_errors_name_the_item(tight):
    cases = [({"items": []}, "items"), ({"items": [ok()] * 5}, "items"),
             ({"items": [ok(), ok(context="  ")]}, "items[1].context"),
             ({"items": [ok(), ok(top_k=-1)]}, "items[1].top_k"), ({"pairs": []}, "items")]
    for body, field in cases:
        r = tight.post("/v1/answer:batch", body)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (body, r.text)
    assert tight.healthy()


def test_chunked_oversized_body_is_refused(tight):
    def chunks():                       # no Content-Length: the server must count as it reads
        yield b'{"question": "who", "context": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'
    r = httpx.post(tight.url + "/v1/answer", content=chunks(), timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert tight.healthy()


def test_unknown_path_and_method_get_json_errors(tight):
    assert tight.get("/v2/answer").json()["error"]["code"] == "not_found"
    r = httpx.post(tight.url + "/v2/answer", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = tight.get("/v1/answer")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_overload_gets_503_with_retry_after_and_every_accepted_request_is_answered(tight, qa_fp):
    want = qa_fp.answer(QUESTION, CONTEXT)

    async def flood():
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=tight.url, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/answer", json=ok()) for _ in range(40)))

    t0 = time.monotonic()
    responses = asyncio.run(asyncio.wait_for(flood(), 90))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0, "a queue of 2 with batches of 1 took 40 requests at once"
    assert statuses.count(200) >= 2, statuses          # at least the queue's places
    for r in responses:
        if r.status_code == 503:
            assert r.headers["Retry-After"].isdigit() and r.json()["error"]["code"] == "overloaded"
        else:
            assert r.json()["answers"][0]["text"] == want.text
    assert time.monotonic() - t0 < 90
    assert tight.healthy()


def test_timeout_gets_504_and_the_work_is_abandoned(servers, stories):
    srv = servers["slow"]
    huge = long_context(stories, 60)                  # some 140 windows: seconds of work
    t0 = time.monotonic()
    r = srv.post("/v1/answer", ok(context=huge))
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert time.monotonic() - t0 < 10
    assert srv.healthy()
    # the worker stops the abandoned request at its next forward chunk, so a new one is served
    r = srv.post("/v1/answer", ok())
    assert r.status_code == 200, r.text
    assert 'bertqa_errors_total{code="timeout"} 1' in srv.get("/metrics").text


def test_graceful_shutdown_answers_what_is_in_flight(servers, stories):
    srv = servers["drain"]
    context = long_context(stories, 3)

    async def in_flight_then_sigterm():
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            posts = [asyncio.create_task(client.post("/v1/answer", json=ok(context=context)))
                     for _ in range(3)]
            while metric(srv.get("/metrics").text, "bertqa_requests_in_flight") < 3:
                assert not any(p.done() for p in posts), "answered before the signal: make them slower"
                await asyncio.sleep(0.01)
            srv.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*posts)

    responses = asyncio.run(asyncio.wait_for(in_flight_then_sigterm(), 60))
    assert [r.status_code for r in responses] == [200] * 3
    assert srv.proc.wait(30) == 0
    assert "stopped on SIGTERM" in srv.output()
