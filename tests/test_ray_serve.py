"""bertqa on Ray Serve: 2 replicas of the bundled model (prepared once, loaded from its directory)
behind one endpoint: the same answers and JSON errors as `bertqa serve`, 64 concurrent requests,
503 under a bounded overload, a killed replica replaced, a clean shutdown. Loopback only; every
wait is bounded."""
import asyncio
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

STORY = ("Old Tom kept the lighthouse on the north cape for forty years. Every evening he climbed "
         "the hundred and twelve steps to light the lamp, and every morning he wrote the weather "
         "in a blue notebook. His daughter Mary rowed the mail across the bay on Thursdays.")
QUESTIONS = ["Who kept the lighthouse?", "How many steps did he climb?", "Where did he write the weather?",
             "Who rowed the mail?", "When was the mail rowed across the bay?", "How long did Tom keep it?"]


def replica_names(ray):
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("SERVE_REPLICA::bertqa#"))


def running_replicas() -> int:
    from ray import serve
    return serve.status().applications["bertqa"].deployments["bertqa"].replica_states.get("RUNNING", 0)


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def post_all(url: str, bodies: list[dict], timeout_s: float = 60):
    """All bodies POSTed to /v1/answer at once; responses (or the exception) in order."""
    async def go():
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s) as client:
            return await asyncio.gather(*(client.post("/v1/answer", json=b) for b in bodies),
                                        return_exceptions=True)
    return asyncio.run(asyncio.wait_for(go(), timeout_s + 30))


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    import bertqa
    qa = bertqa.load(model="bundled", target="customcpu", precision="int")
    return qa.save(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def app(ray_local, prepared_dir):
    from bertqa.serve import ray as ray_serve
    from bertqa.serve.config import ServeConfig
    config = ServeConfig(port=ray_serve.free_port("127.0.0.1"), max_wait_ms=10)
    options = ray_serve.RayOptions(replicas=2, replica_cpus=0.5, health_check_period_s=1)
    url, ready_s = ray_serve.deploy({"model": str(prepared_dir)}, config, options)
    yield {"url": url, "config": config, "ready_s": ready_s}
    from ray import serve
    serve.shutdown()


@pytest.fixture(scope="module")
def qa_local(prepared_dir):
    import bertqa
    return bertqa.load(model=str(prepared_dir))


def test_two_replicas_ready_with_the_same_api(ray_local, app):
    assert len(replica_names(ray_local)) == 2
    url = app["url"]
    ready = httpx.get(url + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "minilm-l6-squad", "target": "customcpu",
                            "precision": "int"}
    bad = httpx.post(url + "/v1/answer", json={"question": "x"}, timeout=10)
    assert bad.status_code == 422
    assert bad.json()["error"] == {"code": "invalid_field", "message": "context: Field required",
                                   "field": "context", "errors": [{"field": "context", "message": "Field required"}]}
    wrong_type = httpx.post(url + "/v1/answer", content=b"{}", headers={"content-type": "text/plain"}, timeout=10)
    assert wrong_type.status_code == 415 and wrong_type.json()["error"]["code"] == "unsupported_media_type"
    assert httpx.get(url + "/nope", timeout=10).json()["error"]["code"] == "not_found"
    assert "bertqa_requests_total" in httpx.get(url + "/metrics", timeout=10).text
    batch = httpx.post(url + "/v1/answer:batch", timeout=30, json={
        "items": [{"question": q, "context": STORY} for q in QUESTIONS[:2]]})
    assert batch.status_code == 200 and len(batch.json()["results"]) == 2


def test_64_concurrent_requests_get_the_library_answers(app, qa_local):
    bodies = [{"question": QUESTIONS[i % len(QUESTIONS)], "context": STORY, "top_k": 1 + i % 2} for i in range(64)]
    responses = post_all(app["url"], bodies)
    assert [getattr(r, "status_code", r) for r in responses] == [200] * 64
    for body, r in zip(bodies, responses):
        want = qa_local.answer(body["question"], STORY, top_k=body["top_k"])
        want = want if isinstance(want, list) else [want]
        got = r.json()["answers"]
        assert [(a["text"], a["start"], a["end"]) for a in got] == [(a.text, a.start, a.end) for a in want]
        assert [a["score"] for a in got] == pytest.approx([a.score for a in want], rel=1e-3, abs=1e-6)


def test_a_killed_replica_is_replaced_and_nothing_hangs(ray_local, app):
    before = replica_names(ray_local)
    victim = before[0]
    ray_local.kill(ray_local.get_actor(victim, namespace="serve"), no_restart=True)
    # requests sent while the replica dies: answered, or refused with a status, all within the timeout
    responses = post_all(app["url"], [{"question": q, "context": STORY} for q in QUESTIONS * 2], timeout_s=30)
    statuses = [getattr(r, "status_code", type(r).__name__) for r in responses]
    assert all(s in (200, 500, 503) for s in statuses), statuses
    assert statuses.count(200) >= len(statuses) // 2, statuses
    wait_until(lambda: len(names := replica_names(ray_local)) == 2 and victim not in names
               and running_replicas() == 2, 90, f"a running replica replacing {victim}")
    wait_until(lambda: httpx.post(app["url"] + "/v1/answer", timeout=30,
                                  json={"question": QUESTIONS[0], "context": STORY}).status_code == 200,
               60, "an answer after the replacement")


def test_overload_is_503_with_retry_after_and_bounded(ray_local, app, prepared_dir):
    """One replica holding at most 4 requests, 1 in a batch and 2 queued, and 2 more waiting in Ray:
    40 requests at once are partly refused, by the replica or by Ray's proxy, both in JSON."""
    from dataclasses import replace
    from bertqa.serve import ray as ray_serve
    config = replace(app["config"], max_batch=1, max_queue=2, max_wait_ms=0)
    options = ray_serve.RayOptions(replicas=1, replica_cpus=0.5, max_ongoing=4, max_queued=2)
    url, _ = ray_serve.deploy({"model": str(prepared_dir)}, config, options)
    long_story = " ".join([STORY] * 12)
    t0 = time.monotonic()
    responses = post_all(url, [{"question": q, "context": long_story} for q in QUESTIONS * 7][:40], timeout_s=60)
    elapsed = time.monotonic() - t0
    statuses = [getattr(r, "status_code", type(r).__name__) for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert 0 < statuses.count(503) and 0 < statuses.count(200), statuses
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers.get("retry-after") == "1" for r in refused)
    assert all(r.headers["content-type"] == "application/json" for r in refused)
    messages = {r.json()["error"]["message"] for r in refused}
    assert {r.json()["error"]["code"] for r in refused} == {"overloaded"}, messages
    assert any("Ray Serve proxy" in m for m in messages), messages   # Ray's queue, rewritten to JSON
    assert elapsed < 60


def test_clean_shutdown(ray_local, app):
    from ray import serve
    from bertqa.serve import ray as ray_serve
    ray_serve.undeploy(started_here=True)       # serve.shutdown: replicas drain, proxy goes
    assert replica_names(ray_local) == []

    def refused():
        try:
            httpx.get(app["url"] + "/healthz", timeout=2)
            return False
        except httpx.TransportError:
            return True
    wait_until(refused, 30, "the endpoint to stop answering")
    serve.shutdown()                             # twice is harmless (the fixture does it again)
