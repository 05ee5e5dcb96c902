"""Dynamic batching: requests queue here; inference worker threads (see Batcher) run them
through the model together.

A batch starts with the oldest waiting request and takes the following ones, in order, while
their windows fit in max_batch; it leaves when full, when the next request does not fit, or
when its oldest request has waited max_wait. Windows of long contexts therefore share forward
passes with other requests' windows (grouped by length where the model pads a batch, so that
short windows are not padded to long ones; see forward_chunks). Each request is decoded with
its own options (top_k, max_answer_len, allow_no_answer) after the shared forward pass.

The queue is bounded by admission tickets: the HTTP edge takes one (admit) before it reads or
parses anything, so that a full queue is refused before any work; the ticket is given back when
its request leaves the queue for a batch, or fails before it. Inference never runs on the event
loop: results go back to it with call_soon_threadsafe, so health checks are answered while the
model computes. A request whose caller gave up (timeout, or the client closed the connection)
is skipped if still queued, and its windows are dropped from the forward passes still to run.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field

from bertqa.qa.decode import DecodeOptions
from bertqa.qa.pipeline import QAPipeline, decode_pairs
from bertqa.qa.windows import Window
from bertqa.serve.metrics import ServeMetrics

log = logging.getLogger("bertqa.serve")


def forward_chunks(lengths: list[int], max_batch: int, max_padding: float = 0.25,
                   max_tokens: int | None = None, packed: bool = False) -> list[list[int]]:
    """Windows (by index) grouped into forward passes: longest first, at most max_batch a pass,
    at most max_tokens tokens a pass (one window always fits).

    A padded pass costs about its padded tokens, so one 384-token window among fifteen 60-token
    ones would make it nearly five times dearer: such a pass closes before padding to its
    longest window would add more than max_padding of its real tokens (a pass of its own costs
    little), and max_tokens counts padded tokens. With `packed` (a model that runs a batch as
    its real tokens only, bertqa.model.packing) padding costs nothing: no such rule, and
    max_tokens counts real tokens. The token budget keeps passes short: on the 2-core machine
    of docs/serve.md, passes of 16 windows of 155 tokens ran 3x slower per window than single
    windows while other processes took cores (an OpenMP region waits for its slowest thread),
    passes of 4-6 did not."""
    assert max_batch >= 1 and max_padding >= 0
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks, chunk, real = [], [], 0
    for i in order:
        if chunk:
            tokens = real + lengths[i] if packed else (len(chunk) + 1) * lengths[chunk[0]]
            if (len(chunk) == max_batch or (max_tokens is not None and tokens > max_tokens) or
                    (not packed and tokens > (1 + max_padding) * (real + lengths[i]))):
                chunks.append(chunk)
                chunk, real = [], 0
        chunk.append(i)
        real += lengths[i]
    return chunks + [chunk] if chunk else chunks


class Overloaded(Exception):
    """The queue is full, or the batcher is shutting down."""


class Ticket:
    """A place in the queue, held from admission until the request's batch starts (or it fails)."""

    def __init__(self, batcher: "Batcher"):
        self.batcher, self.released = batcher, False

    def release(self) -> None:
        self.batcher._release(self)


@dataclass(eq=False)
class Job:
    """One HTTP request: its pairs' windows (window.example indexes contexts) and decode options."""
    contexts: list[str]
    windows: list[Window]
    decodes: list[DecodeOptions]
    top_ks: list[int]
    future: asyncio.Future             # resolved on its event loop with list[list[Answer]]
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False            # set by the caller that stopped waiting
    ticket: Ticket | None = None       # its place in the queue (Batcher.submit sets it)

    def _settle(self, result=None, error: BaseException | None = None) -> None:
        def settle():
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        try:
            self.future.get_loop().call_soon_threadsafe(settle)
        except RuntimeError:           # the loop is closed: nobody is waiting any more
            pass


class Batcher:
    """workers: inference threads taking batches from the one queue, each running its forward
    passes on all of the model's CPU threads. On a small CPU two workers beat one: a forward
    pass of a few windows does not keep two threads busy (small GEMMs, softmax and LayerNorm
    wait at barriers) and its tokens' decoding is Python, so two passes side by side fill the
    cores better (docs/serve.md: measured, one CPU thread per worker did worse than all of them
    for each). A batch waits for company (max_wait) only while no other worker is idle: an
    idle one would take the next request at once, so waiting would only leave a core unused.
    Answers never depend on the worker (tests/test_serve_unit.py)."""

    def __init__(self, pipeline: QAPipeline, max_batch: int, max_wait_s: float, max_queue: int,
                 metrics: ServeMetrics, max_tokens: int | None = None, workers: int = 1):
        assert max_batch >= 1 and max_queue >= 1 and max_wait_s >= 0 and workers >= 1
        self.max_tokens = max_tokens
        self.pipeline = pipeline
        self.packed = getattr(pipeline, "packs_batches", False)   # see forward_chunks
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.metrics = metrics
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._waiting = 0                               # tickets out: admitted, not yet in a batch
        self._idle = 0                                  # workers waiting for a first request
        self._threads = [threading.Thread(target=self._work, name=f"bertqa-batcher-{k}", daemon=True)
                         for k in range(workers)]

    def depth(self) -> int:
        """Requests admitted and not yet in a batch (queued, or still being read and tokenized)."""
        return self._waiting

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def alive(self) -> bool:
        """Every worker thread is running (a dead one means a bug: the health check fails)."""
        return all(t.is_alive() for t in self._threads)

    def admit(self) -> Ticket:
        """A place in the queue, or Overloaded when max_queue requests hold one."""
        with self._cond:
            if self._closing:
                raise Overloaded("the server is shutting down")
            if self._waiting >= self.max_queue:
                raise Overloaded(f"{self._waiting} requests are waiting for the model (the limit)")
            self._waiting += 1
            return Ticket(self)

    def _release(self, ticket: Ticket) -> None:
        with self._cond:
            if not ticket.released:
                ticket.released = True
                self._waiting -= 1

    def submit(self, job: Job, ticket: Ticket | None = None) -> None:
        """Queue job on its ticket (taken now when None: Overloaded if the queue is full)."""
        ticket = ticket or self.admit()
        with self._cond:
            if self._closing and not ticket.released:
                ticket.released = True
                self._waiting -= 1
                raise Overloaded("the server is shutting down")
            job.ticket = ticket
            self._jobs.append(job)
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish the queued ones, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- the worker thread --------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as e:                      # noqa: BLE001 - every caller must hear back
                log.exception("batch of %d requests failed", len(batch))
                for job in batch:
                    job._settle(error=e)

    def _popleft(self) -> Job:
        """The oldest job, its ticket given back (the caller holds the lock)."""
        job = self._jobs.popleft()
        if job.ticket is not None and not job.ticket.released:
            job.ticket.released = True
            self._waiting -= 1
        return job

    def _pop_live(self) -> Job | None:
        while self._jobs:
            job = self._popleft()
            if not job.cancelled:
                return job
            self.metrics.dropped_windows.inc(by=len(job.windows))
        return None

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while True:
                first = self._pop_live()
                if first is not None:
                    break
                if self._closing:
                    return None
                self._idle += 1
                try:
                    self._cond.wait()
                finally:
                    self._idle -= 1
            batch, size = [first], len(first.windows)
            deadline = first.enqueued + self.max_wait_s
            while size < self.max_batch:
                while self._jobs and self._jobs[0].cancelled:
                    self.metrics.dropped_windows.inc(by=len(self._popleft().windows))
                if self._jobs:
                    if size + len(self._jobs[0].windows) > self.max_batch:
                        break                           # first in, first out: no overtaking
                    job = self._popleft()
                    batch.append(job)
                    size += len(job.windows)
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._closing or self._idle:
                    break                               # an idle worker takes what comes next
                self._cond.wait(remaining)
            return batch

    def _run(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        for job in batch:
            self.metrics.queue_seconds.observe(t0 - job.enqueued)
        windows = [w for job in batch for w in job.windows]
        self.metrics.batch_requests.observe(len(batch))
        self.metrics.batch_windows.observe(len(windows))
        owner = [job for job in batch for _ in job.windows]
        logits = [None] * len(windows)
        for chunk in forward_chunks([len(w.ids) for w in windows], self.max_batch,
                                    max_tokens=self.max_tokens, packed=self.packed):
            live = [i for i in chunk if not owner[i].cancelled]      # a gone client's windows: dropped
            self.metrics.dropped_windows.inc(by=len(chunk) - len(live))
            if not live:
                continue
            for i, lg in zip(live, self.pipeline.logits([windows[i] for i in live], len(live))):
                logits[i] = lg
            self.metrics.forward_windows.inc(by=len(live))
        at = 0
        for job in batch:
            mine, at = logits[at:at + len(job.windows)], at + len(job.windows)
            if job.cancelled:
                continue
            try:
                job._settle(decode_pairs(job.contexts, job.windows, mine, job.decodes, job.top_ks))
            except Exception as e:                      # noqa: BLE001 - one bad decode fails one job
                job._settle(error=e)
        self.metrics.inference_seconds.observe(time.perf_counter() - t0)
