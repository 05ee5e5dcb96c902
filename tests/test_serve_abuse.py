"""Abusive and unusual clients of `bertqa serve` (issue 14): clients that leave, trickle bytes,
hold connections, flood a full queue, send what the schema allows or bodies far too large.
Raw sockets on 127.0.0.1; every wait is bounded."""
import json
import socket
import time
import urllib.error
import urllib.request

import httpx
import pytest
from serve_support import Server, long_context, metric

pytest.importorskip("fastapi")

QUESTION = "Who kept the lighthouse?"
CONTEXT = "Margarethe Olsen kept the lighthouse on the island for forty-one years."
ARGS = ("--max-batch", "1", "--workers", "1", "--max-wait-ms", "0", "--max-queue", "2", "--max-windows", "64",
        "--max-context-chars", "200000", "--read-timeout-s", "1", "--max-connections", "12")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = Server(*ARGS, log_dir=tmp_path_factory.mktemp("serve-abuse"))
    yield server
    server.stop()


def port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def post_raw(server, body: bytes, content_type="application/json") -> socket.socket:
    """A POST /v1/answer sent whole on a new socket, its answer not read."""
    s = socket.create_connection(("127.0.0.1", port(server)), timeout=10)
    s.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: t\r\nContent-Type: " + content_type.encode() +
              b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def read_all(s: socket.socket, timeout: float = 10) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def metrics_of(server) -> str:
    return server.get("/metrics").text


def big_request(stories) -> bytes:
    return json.dumps({"question": QUESTION, "context": long_context(stories, 10)}).encode()


def test_1_4_work_of_clients_that_left_is_dropped_and_counted_as_499(srv, stories):
    before = metrics_of(srv)
    gone = [post_raw(srv, big_request(stories)) for _ in range(2)]   # the queue's 2 places, 13 windows each
    time.sleep(0.3)
    for s in gone:
        s.close()
    # the queue empties without running their windows, and a good client is answered
    wait_until(lambda: metric(metrics_of(srv), "bertqa_queue_depth") == 0, 30, "queue drained")
    r = srv.post("/v1/answer", {"question": QUESTION, "context": CONTEXT})
    assert r.status_code == 200 and r.json()["answers"][0]["text"] == "Margarethe Olsen"
    after = metrics_of(srv)
    delta = lambda name: metric(after, name) - metric(before, name)  # noqa: E731
    dropped, run = delta("bertqa_dropped_windows_total"), delta("bertqa_forward_windows_total") - 1
    assert dropped >= 13 and run < dropped, f"{run} windows of clients that left were run, {dropped} dropped"
    assert delta('bertqa_requests_total{path="/v1/answer",code="499"}') == 2
    assert delta('bertqa_requests_total{path="/v1/answer",code="500"}') == 0


def test_2_slow_senders_get_408_and_connections_are_capped(srv):
    trickle = socket.create_connection(("127.0.0.1", port(srv)), timeout=10)
    t0 = time.monotonic()
    reply = b""
    trickle.settimeout(0.3)
    for byte in b"POST /v1/answer HTTP/1.1\r\nHost: t\r\n" * 4:       # a byte every 0.3 s
        try:
            trickle.sendall(bytes([byte]))
            reply += trickle.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if reply:
            break
    reply += read_all(trickle, 5)
    assert reply.startswith(b"HTTP/1.1 408") and b'"read_timeout"' in reply, reply
    assert time.monotonic() - t0 < 5
    idle = [socket.create_connection(("127.0.0.1", port(srv)), timeout=10) for _ in range(20)]
    try:
        refused = [s for s in idle if read_all(s, 0.3).startswith(b"HTTP/1.1 503")]
        assert len(refused) >= 8, f"{len(refused)} of 20 idle connections refused with a cap of 12"
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: srv.healthy(), 10, "serving again")
    log = srv.output()
    assert log.count("refusing connections") <= 2 and "Traceback" not in log, log[-2000:]


def test_3_a_full_queue_refuses_before_reading_or_parsing(srv, stories):
    running = json.dumps({"question": QUESTION, "context": long_context(stories, 30)}).encode()
    ran = metric(metrics_of(srv), "bertqa_forward_windows_total")
    busy = [post_raw(srv, running)]                                      # some 50 windows: seconds
    try:
        wait_until(lambda: metric(metrics_of(srv), "bertqa_forward_windows_total") > ran and
                   metric(metrics_of(srv), "bertqa_queue_depth") == 0, 20, "the first one running")
        busy += [post_raw(srv, big_request(stories)) for _ in range(2)]  # the queue's 2 places
        wait_until(lambda: metric(metrics_of(srv), "bertqa_queue_depth") >= 2, 20, "a full queue")
        t0 = time.monotonic()
        refused = post_raw(srv, b'{"question": broken')                   # would be a 400 if parsed
        bad = refused.recv(65536)
        refused.settimeout(2)
        while bad.startswith(b"HTTP/1.1 503") and not bad.endswith(b"}"):   # headers, body apart
            if not (more := refused.recv(65536)):
                break
            bad += more
        assert time.monotonic() - t0 < 2, "the 503 came late"
        assert bad.startswith(b"HTTP/1.1 503") and b'"overloaded"' in bad, bad
        assert b"Retry-After: 1" in bad or b"retry-after: 1" in bad
        health = [time.monotonic()]
        for _ in range(5):
            assert srv.get("/healthz").status_code == 200
            health.append(time.monotonic())
        assert max(b - a for a, b in zip(health, health[1:])) < 1.0
    finally:
        for s in busy:
            s.close()
    wait_until(lambda: metric(metrics_of(srv), "bertqa_queue_depth") == 0, 30, "queue drained")


def test_5_schema_and_server_agree(srv):
    r = srv.post("/v1/answer", {"question": QUESTION, "context": CONTEXT, "top_k": 2.0,
                                "max_answer_len": 30.0})
    assert r.status_code == 200 and len(r.json()["answers"]) == 2, r.text
    schema = srv.get("/openapi.json").json()
    body = schema["paths"]["/v1/answer:batch"]["post"]["requestBody"]
    limit = body["x-max-body-bytes"]
    batch = schema["components"]["schemas"]["BatchRequest"]["properties"]["items"]
    item = schema["components"]["schemas"]["BatchItem"]["properties"]
    biggest = batch["maxItems"] * (item["context"]["maxLength"] + item["question"]["maxLength"] + 128)
    assert biggest <= limit, "the schema admits batches that always get 413"
    for raw, words in [(b'{"question": "who", "context": "abc", "top_k": 1' + b"0" * 5000 + b"}", "digits"),
                       (b'{"question": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested")]:
        r = httpx.post(srv.url + "/v1/answer", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    assert httpx.head(srv.url + "/healthz").status_code == 200
    s = socket.create_connection(("127.0.0.1", port(srv)), timeout=10)
    s.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000000000000000000\r\n\r\n{}")
    reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 413") and b'"body_too_large"' in reply, reply
    s = socket.create_connection(("127.0.0.1", port(srv)), timeout=10)
    s.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    reply = read_all(s)
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, reply
    assert json.loads(payload)["error"]["code"] == "bad_request"


def test_6_an_ordinary_client_sending_6_mb_gets_the_413(srv):
    request = urllib.request.Request(srv.url + "/v1/answer", data=b"x" * 6_000_000,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=30)
    assert e.value.code == 413 and json.loads(e.value.read())["error"]["code"] == "body_too_large"
