#!/usr/bin/env python3
"""Load benchmark of `bertqa serve` against the same model called directly, in one run.

    python -m bertqa.bench.load_serve                                  # customcpu int, 8-64 clients
    python -m bertqa.bench.load_serve --target cpu --precision fp --clients 8,32 --seconds 5

First the direct API: the model loaded here, `QAModel.answer` called in a loop from 1, 2 and 4
worker threads, and from one thread per CPU thread with one CPU thread each
(`bertqa.native.set_thread_threads(1)`), and `answer_batch` of 16 pairs from one thread; the
best of these five is the reference. Then a `bertqa serve` subprocess (this script with
--serve-only, on a free loopback port) with its default workers and batching on (--max-batch
16) and off (--max-batch 1), and with one worker and batching on, each under 8-64 closed-loop
clients: each client sends its next question when the last is answered, over one
kept-alive connection, from a small asyncio HTTP client (a few µs of CPU a request, since the
client shares the machine with the server). Every answer is checked first: the slice
context[start:end], and the known answer of the first question. Printed per row: questions/s,
p50/p99 latency, 503s, requests per batch (from /metrics) and efficiency = server questions/s
/ best direct questions/s. The questions are the built-in stories' (one window each), or with
--data a SQuAD/CoQA file's (windows of mixed lengths).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KNOWN = ("Who kept the lighthouse?", "Margarethe Olsen")


def questions(data: str | None = None, limit: int = 64) -> list[tuple[str, str]]:
    """The built-in stories' questions (KNOWN first), or with `data` (a SQuAD, CoQA or bertqa
    file) the first question of `limit` contexts spread over the file: windows of mixed lengths."""
    from bertqa.data.readers import builtin_stories, read_stories
    if data is None:
        stories = builtin_stories()
        return [(KNOWN[0], stories[0].context)] + [(q, s.context) for s in stories for q in s.questions]
    from bertqa.errors import BertQAError
    if limit < 1:
        raise SystemExit(f"--questions must be >= 1, got {limit}")
    try:
        stories = [s for s in read_stories(data) if s.questions]
    except (BertQAError, OSError) as e:
        raise SystemExit(f"{data}: {e}") from None
    if not stories:
        raise SystemExit(f"{data}: no questions")
    return [(s.questions[0], s.context) for s in stories[::max(1, len(stories) // limit)]][:limit]


# -- direct -----------------------------------------------------------------------------------

def direct_qps(qa, pairs, threads: int, seconds: float, share: int | None = None) -> float:
    """Questions/s of `threads` threads calling qa.answer in a loop for `seconds`; with share,
    each computes on that many CPU threads (bertqa.native.set_thread_threads)."""
    from bertqa import native
    done, stop = [0] * threads, time.perf_counter() + seconds

    def work(k):
        if share is not None:
            native.set_thread_threads(share)
        i = k
        while time.perf_counter() < stop:
            qa.answer(*pairs[i % len(pairs)])
            done[k] += 1
            i += threads
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - t0)


def batch_qps(qa, pairs, size: int, seconds: float) -> float:
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        chunk = [pairs[(i + j) % len(pairs)] for j in range(size)]
        qa.answer_batch([q for q, _ in chunk], [c for _, c in chunk])
        n, i = n + size, i + size
    return n / (time.perf_counter() - t0)


# -- the server -------------------------------------------------------------------------------

def serve_only(args) -> None:
    import bertqa
    from bertqa.serve.app import serve
    from bertqa.serve.config import ServeConfig
    qa = bertqa.load(model="bundled", target=args.target, precision=args.precision,
                     threads=getattr(args, "threads", None))
    serve(qa, ServeConfig(port=0, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                          workers=args.workers), log_level="warning")


def start_server(args, max_batch: int, workers: int | None = None):
    cmd = [sys.executable, "-m", "bertqa.bench.load_serve", "--serve-only", "--max-batch", str(max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--target", args.target, "--precision", args.precision]
    if workers:
        cmd += ["--workers", str(workers)]
    if getattr(args, "threads", None):
        cmd += ["--threads", str(args.threads)]
    log = Path(tempfile.mkstemp(prefix="bertqa-load-", suffix=".log")[1])
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text()):
            return proc, int(m[1]), log
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


class Connection:
    """One kept-alive HTTP/1.1 connection: POST JSON, read status and body."""

    def __init__(self, port: int):
        self.port = port

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            close = close or (name.lower() == "connection" and "close" in value.lower())
        data = await self.reader.readexactly(length)
        if close:
            self.writer.close()
            await self.open()
        return int(status_line.split()[1]), data

    def close(self):
        self.writer.close()


def metric(text: str, name: str) -> float:
    line = next((ln for ln in text.splitlines() if ln.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


async def check(port: int, pairs, known: bool = True) -> None:
    deadline = time.monotonic() + 60             # the socket is bound before uvicorn listens on it
    while True:
        try:
            conn = await Connection(port).open()
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    for i, (q, c) in enumerate(pairs[:4]):
        status, data = await conn.request("POST", "/v1/answer", json.dumps({"question": q, "context": c}).encode())
        assert status == 200, data
        a = json.loads(data)["answers"][0]
        assert a["text"] == c[a["start"]:a["end"]], a
        assert i or not known or a["text"] == KNOWN[1], f"{q!r}: got {a['text']!r}, expected {KNOWN[1]!r}"
    conn.close()


async def closed_loop(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    latencies, refused, stop = [], 0, time.perf_counter() + seconds
    conns = [await Connection(port).open() for _ in range(clients)]

    async def client(k: int, conn: Connection):
        nonlocal refused
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status, data = await conn.request("POST", "/v1/answer", bodies[i % len(bodies)])
            if status == 503:
                refused += 1
                await asyncio.sleep(0.01)
                continue
            assert status == 200, data
            latencies.append(time.perf_counter() - t0)
            i += clients
    probe = await Connection(port).open()
    before = (await probe.request("GET", "/metrics"))[1].decode()
    t0 = time.perf_counter()
    await asyncio.gather(*(client(k, c) for k, c in enumerate(conns)))
    wall = time.perf_counter() - t0
    probe.close()                                # idle past the keep-alive timeout: a new one
    probe = await Connection(port).open()
    after = (await probe.request("GET", "/metrics"))[1].decode()
    for c in [*conns, probe]:
        c.close()
    batches = metric(after, "bertqa_batch_requests_count") - metric(before, "bertqa_batch_requests_count")
    return dict(qps=len(latencies) / wall, p50=percentile(latencies, 50), p99=percentile(latencies, 99),
                refused=refused, batch=len(latencies) / batches if batches else 0.0, n=len(latencies))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1e3 if ordered else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="8,16,32,64")
    p.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    p.add_argument("--max-batch", type=int, default=16, help="windows per forward pass with batching on")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--target", default="customcpu")
    p.add_argument("--precision", default="int")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="the questions: the first of --questions contexts spread over this SQuAD/CoQA "
                        "file, windows of mixed lengths (default: the built-in stories, ~155 tokens each)")
    p.add_argument("--questions", type=int, default=64, help="with --data: how many")
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)   # the server's (ray_bench)
    p.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)   # the server's (--serve-only)
    p.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_only:
        serve_only(args)
        return 0
    import bertqa
    pairs = questions(args.data, args.questions)
    qa = bertqa.load(model="bundled", target=args.target, precision=args.precision)
    lengths = sorted(len(w.ids) for q, c in pairs for w in qa.pipeline.windows([q], [c]))
    print(f"# bertqa serve load: {os.cpu_count()} CPUs, bundled model, target {args.target} "
          f"{args.precision}, {qa.header()['linear backend']}; load average {os.getloadavg()[0]:.1f}")
    print(f"# {len(pairs)} questions from {args.data or 'the built-in stories'}: {len(lengths)} windows "
          f"of {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]})")
    assert args.data or qa.answer(*pairs[0]).text == KNOWN[1]
    ways = {f"answer() from {t} thread(s)": (t, None) for t in (1, 2, 4)}
    if qa.threads > 1:
        ways[f"answer() from {qa.threads} threads, 1 CPU thread each"] = (qa.threads, 1)
    direct = {way: direct_qps(qa, pairs, t, args.seconds, share) for way, (t, share) in ways.items()}
    direct["answer_batch(16) from 1 thread"] = batch_qps(qa, pairs, 16, args.seconds)
    best_way = max(direct, key=direct.get)
    best = direct[best_way]
    for way, q in direct.items():
        print(f"direct: {way}: {q:.1f} questions/s")
    print(f"best direct: {best:.1f} questions/s ({best_way})\n")
    qa_threads = qa.threads
    del qa
    bodies = [json.dumps({"question": q, "context": c}).encode() for q, c in pairs]
    print("| batching | workers | clients | answered | questions/s | p50 ms | p99 ms | 503s | "
          "requests/batch | efficiency | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    servers = [("on", args.max_batch, None), ("off", 1, None)]
    if qa_threads > 1:                           # the default's workers against a single one
        servers.append(("on", args.max_batch, 1))
    for label, max_batch, workers in servers:
        proc, port, log = start_server(args, max_batch, workers)
        try:
            asyncio.run(check(port, pairs, known=args.data is None))
            for clients in (int(c) for c in args.clients.split(",")):
                load = os.getloadavg()[0]
                r = asyncio.run(closed_loop(port, bodies, clients, args.seconds))
                print(f"| {label} | {workers or f'default ({qa_threads})'} | {clients} | {r['n']} | {r['qps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
                      f"{r['refused']} | {r['batch']:.1f} | {r['qps'] / best:.2f} | {load:.1f} |", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
            log.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
