"""The serve package without HTTP: metrics text, batch forming, config checks, CLI errors."""
import asyncio
import dataclasses
import socket
import sys

import numpy as np
import pytest

from bertqa.serve.config import ServeConfig
from bertqa.serve.metrics import Counter, Histogram, ServeMetrics


def test_metrics_text_format():
    c = Counter("x_total", "things", ("path", "code"))
    c.inc("/a", "200")
    c.inc("/a", "200")
    c.inc('/"b"', "500")
    assert c.samples() == [('x_total{path="/\\"b\\"",code="500"}', 1.0), ('x_total{path="/a",code="200"}', 2.0)]
    h = Histogram("t_seconds", "time", (0.1, 1))
    for v in (0.05, 0.1, 0.5, 3):
        h.observe(v)
    assert h.samples() == [('t_seconds_bucket{le="0.1"}', 2), ('t_seconds_bucket{le="1"}', 3),
                           ('t_seconds_bucket{le="+Inf"}', 4), ("t_seconds_sum", 3.65), ("t_seconds_count", 4)]
    text = ServeMetrics(queue_depth=lambda: 7).render()
    assert "# TYPE bertqa_batch_windows histogram\n" in text and "bertqa_queue_depth 7\n" in text


def test_config_rejects_nonsense():
    assert ServeConfig().host == "127.0.0.1"                       # loopback unless asked
    for bad in ({"max_batch": 0}, {"max_queue": 0}, {"timeout_s": 0}, {"max_wait_ms": -1},
                {"port": 70000}, {"max_windows": 0}, {"workers": 0}):
        with pytest.raises(ValueError, match="must be"):
            ServeConfig(**bad)
    assert ServeConfig(timeout_s=10).grace_s == 15


def test_field_name():
    from bertqa.serve.errors import field_name
    assert field_name(("body", "items", 2, "context")) == "items[2].context"
    assert field_name(("body", "top_k")) == "top_k"
    assert field_name(("body",)) is None


def test_forward_chunks_group_windows_by_length():
    from bertqa.serve.batcher import forward_chunks
    assert forward_chunks([60] * 5, 4) == [[0, 1, 2, 3], [4]]
    # one long window among short ones gets a pass of its own instead of padding them all
    assert forward_chunks([60, 384, 60, 60, 384], 8) == [[1, 4], [0, 2, 3]]
    assert forward_chunks([100, 90, 80], 8) == [[0, 1, 2]]                  # little padding: one pass
    assert sorted(i for c in forward_chunks([5, 300, 7, 120, 64, 9], 2) for i in c) == list(range(6))
    assert forward_chunks([], 4) == []


def make_jobs(qa_fp, stories, loop):
    """Four requests (one of several windows) with different decode options."""
    from bertqa.qa.windows import make_windows
    from bertqa.serve.batcher import Job
    long = " ".join(s.context for s in stories) * 2
    pairs = [(stories[0].questions[0], stories[0].context, 3, {}),
             (stories[1].questions[0], long, 1, {}),
             (stories[2].questions[0], stories[2].context, 2, {"max_answer_len": 2}),
             (stories[0].questions[1], stories[0].context, 1, {})]
    jobs = [Job([c], make_windows(qa_fp.tokenizer, [q], [c], qa_fp.options.windows),
                [qa_fp.options.with_decode(**opts).decode], [k], loop.create_future())
            for q, c, k, opts in pairs]
    return pairs, jobs


def test_batches_are_first_in_first_out_and_skip_cancelled_requests(qa_fp, stories):
    from bertqa.serve.batcher import Batcher

    async def form():
        _, jobs = make_jobs(qa_fp, stories, asyncio.get_running_loop())
        cancelled = dataclasses.replace(jobs[0], future=asyncio.get_running_loop().create_future(),
                                        cancelled=True)
        batcher = Batcher(qa_fp.pipeline, max_batch=4, max_wait_s=0, max_queue=16, metrics=ServeMetrics())
        for job in [jobs[0], cancelled, *jobs[1:]]:          # the worker is not started: form by hand
            batcher.submit(job)
        batches = [batcher._next_batch(), batcher._next_batch()]
        assert batcher.depth() == 0
        return jobs, batches

    jobs, batches = asyncio.run(form())
    assert [len(j.windows) for j in jobs] == [1, 3, 1, 1]
    assert batches == [[jobs[0], jobs[1]], [jobs[2], jobs[3]]]


def test_batcher_answers_each_request_with_its_own_options(qa_fp, stories):
    from bertqa.serve.batcher import Batcher
    batcher = Batcher(qa_fp.pipeline, max_batch=4, max_wait_s=0.05, max_queue=16, metrics=ServeMetrics())

    async def run():
        pairs, jobs = make_jobs(qa_fp, stories, asyncio.get_running_loop())
        for job in jobs:
            batcher.submit(job)
        batcher.start()
        return pairs, [await asyncio.wait_for(j.future, 60) for j in jobs]

    try:
        pairs, results = asyncio.run(run())
    finally:
        batcher.close(10)
    assert batcher.metrics.batch_requests.count() < len(pairs)            # they shared passes
    for (q, c, k, opts), got in zip(pairs, results):
        want = qa_fp.answer(q, c, top_k=k, options=qa_fp.options.with_decode(**opts))
        want = want if isinstance(want, list) else [want]
        assert [(a.text, a.start, a.end) for a in got[0]] == [(a.text, a.start, a.end) for a in want]


def test_full_queue_is_overloaded(qa_fp):
    from bertqa.serve.batcher import Batcher, Job, Overloaded
    batcher = Batcher(qa_fp.pipeline, max_batch=1, max_wait_s=0, max_queue=2, metrics=ServeMetrics())

    async def fill():
        job = lambda: Job(["c"], [], [qa_fp.options.decode], [1], asyncio.get_running_loop().create_future())  # noqa: E731
        batcher.submit(job())
        batcher.submit(job())
        with pytest.raises(Overloaded, match="2 requests are waiting"):
            batcher.submit(job())
    asyncio.run(fill())


def test_cli_without_fastapi_says_what_to_install(monkeypatch, capsys):
    from bertqa import cli
    monkeypatch.setitem(sys.modules, "fastapi", None)              # import fastapi -> ImportError
    assert cli.main(["serve", "--model", "bundled"]) == 2
    err = capsys.readouterr().err
    assert "bertqa: error: bertqa serve needs fastapi and uvicorn" in err and "bertqa[serve]" in err


def test_cli_rejects_bad_server_options_before_loading(capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from bertqa import cli
    assert cli.main(["serve", "--model", "bundled", "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1" in capsys.readouterr().err


def test_busy_port_is_a_clear_error():
    pytest.importorskip("fastapi")
    from bertqa.errors import BertQAError
    from bertqa.serve.app import listen
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(BertQAError, match="cannot listen on 127.0.0.1"):
            listen("127.0.0.1", taken.getsockname()[1])


def test_forward_chunks_keep_to_the_token_budget():
    from bertqa.serve.batcher import forward_chunks
    chunks = forward_chunks([155] * 16, 16, max_tokens=1024)
    assert [len(c) for c in chunks] == [6, 6, 4]
    assert forward_chunks([2000, 10], 16, max_tokens=1024) == [[0], [1]]      # a long window still runs


def test_packed_forward_chunks_mix_lengths_and_count_real_tokens():
    from bertqa.serve.batcher import forward_chunks
    # padding costs nothing when the model packs: the long windows share a pass with the short
    assert forward_chunks([60, 384, 60, 60, 384], 8, packed=True) == [[1, 4, 0, 2, 3]]
    assert forward_chunks([60, 384, 60, 60, 384], 2, packed=True) == [[1, 4], [0, 2], [3]]
    # the budget counts real tokens: 384 + 5 x 60 = 684 fits 700, a sixth 60 would not
    assert forward_chunks([384] + [60] * 6, 16, max_tokens=700, packed=True) == [[0, 1, 2, 3, 4, 5], [6]]
    assert forward_chunks([384] + [60] * 6, 16, max_tokens=700) == [[0], [1, 2, 3, 4, 5, 6]]
    assert forward_chunks([2000, 10], 16, max_tokens=1024, packed=True) == [[0], [1]]


def test_the_batcher_packs_where_the_model_does(qa_fp):
    from bertqa.serve.batcher import Batcher
    assert qa_fp.pipeline.packs_batches
    assert Batcher(qa_fp.pipeline, 4, 0, 16, ServeMetrics()).packed
    assert not Batcher(_Gate(parties=1), 4, 0, 16, ServeMetrics()).packed     # no such property
    qa_fp.pipeline.model.pack_batches = False
    try:
        assert not qa_fp.pipeline.packs_batches
    finally:
        qa_fp.pipeline.model.pack_batches = True


class _Gate:
    """A pipeline stand-in whose forward passes wait until `parties` of them run at once, and
    record the thread that ran each."""

    def __init__(self, parties: int):
        import threading
        self.barrier, self.seen, self.lock = threading.Barrier(parties, timeout=30), [], threading.Lock()

    def logits(self, windows, batch_size):
        import threading
        with self.lock:
            self.seen.append(threading.current_thread().name)
        self.barrier.wait()                                # raises if the other never comes
        return [(np.zeros(len(w.ids), np.float32), np.zeros(len(w.ids), np.float32)) for w in windows]


def test_workers_run_batches_side_by_side(qa_fp, stories):
    from bertqa.serve.batcher import Batcher
    gate = _Gate(parties=2)
    batcher = Batcher(gate, max_batch=1, max_wait_s=0, max_queue=16, metrics=ServeMetrics(), workers=2)

    async def run():
        _, jobs = make_jobs(qa_fp, stories, asyncio.get_running_loop())
        jobs = [j for j in jobs if len(j.windows) == 1][:2]          # one batch for each worker
        for job in jobs:
            batcher.submit(job)
        batcher.start()
        assert batcher.alive()
        return [await asyncio.wait_for(j.future, 60) for j in jobs]

    try:
        results = asyncio.run(run())
    finally:
        batcher.close(10)
    assert len(results) == 2 and not batcher.alive()                 # close stops every worker
    assert sorted(gate.seen) == ["bertqa-batcher-0", "bertqa-batcher-1"], gate.seen


def test_two_workers_give_the_answers_of_one(qa_fp, stories):
    from bertqa.serve.batcher import Batcher

    def answers(workers):
        batcher = Batcher(qa_fp.pipeline, max_batch=2, max_wait_s=0, max_queue=16, metrics=ServeMetrics(),
                          workers=workers)

        async def run():
            _, jobs = make_jobs(qa_fp, stories, asyncio.get_running_loop())
            batcher.start()
            for job in jobs:
                batcher.submit(job)
            return [await asyncio.wait_for(j.future, 60) for j in jobs]
        try:
            got = asyncio.run(run())
        finally:
            batcher.close(10)
        return [[(a.text, a.start, a.end, round(a.score, 6)) for a in r[0]] for r in got]

    assert answers(2) == answers(1)


def test_a_batch_leaves_at_once_while_another_worker_is_idle(qa_fp, stories):
    """max_wait keeps a lone worker's batch open for company; with a second worker idle the
    batch leaves at once (the idle worker takes whatever comes next)."""
    import time

    from bertqa.serve.batcher import Batcher

    def first_answer_seconds(workers):
        batcher = Batcher(qa_fp.pipeline, max_batch=4, max_wait_s=3.0, max_queue=16,
                          metrics=ServeMetrics(), workers=workers)

        async def run():
            _, jobs = make_jobs(qa_fp, stories, asyncio.get_running_loop())
            batcher.start()
            await asyncio.sleep(0.2)                                # every worker waiting
            t0 = jobs[0].enqueued = time.perf_counter()             # max_wait counts from here
            batcher.submit(jobs[0])
            await asyncio.wait_for(jobs[0].future, 60)
            return time.perf_counter() - t0
        try:
            return asyncio.run(run())
        finally:
            batcher.close(10)

    assert first_answer_seconds(1) >= 2.9                           # waited out max_wait
    assert first_answer_seconds(2) < 1.5                            # one window's forward
