#!/usr/bin/env python3
"""Load benchmark of `bertqa serve`: questions/s and latency p50/p99 at 1, 8 and 32 concurrent
clients, with dynamic batching off (--max-batch 1) and on, for the bundled model and for
BERT-large shapes with random weights.

    python bench/load_serve.py                          # everything, a few minutes on 2 cores
    python bench/load_serve.py --models bundled --clients 1,8

Each (model, batching) pair gets its own server subprocess on a free loopback port (this script
with --serve-only; a random-weight model cannot be named on the bertqa CLI). Closed loop: each
client sends its next question when the last is answered. Results are checked before timing:
every answer must be the slice context[start:end], and the bundled model must find the known
answer. The mean batch (requests per forward pass) is read from the server's /metrics.
Client and server share the machine, so the client's own CPU is part of every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# per model: the question set, and how many requests each client count sends
SHORT = "Margarethe Olsen kept the lighthouse on Skarv Island for thirty-one years."
MODELS = {"bundled": {"requests": {1: 40, 8: 96, 32: 192}},
          "bert-large": {"requests": {1: 6, 8: 24, 32: 64}}}


def serve_only(args) -> None:
    """The server side: the model of args.models, on args.port, printing its URL."""
    from bertqa.serve.app import serve
    from bertqa.serve.config import ServeConfig
    if args.models == "bundled":
        import bertqa
        qa = bertqa.load(model="bundled", target=args.target, precision=args.precision)
    else:
        from bertqa.api import from_module
        from bertqa.model.bert import BertConfig, random_model
        from bertqa.model.loading import BUNDLED_DIR
        qa = from_module(random_model(BertConfig.bert_large()), BUNDLED_DIR, "bert-large shapes, random weights",
                         args.target, args.precision)
    serve(qa, ServeConfig(port=0, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                          max_queue=1024, timeout_s=600), log_level="warning")


def questions(model: str) -> list[tuple[str, str, str | None]]:
    """(question, context, known answer or None). BERT-large gets one-sentence contexts: on 2
    cores a 160-token window takes it seconds, and the load runs must stay short."""
    from bertqa.data.readers import builtin_stories
    stories = builtin_stories()
    if model == "bert-large":
        return [(q, SHORT, None) for q in stories[0].questions[:4]]
    pairs = [(q, s.context, None) for s in stories for q in s.questions]
    return [("Who kept the lighthouse?", stories[0].context, "Margarethe Olsen")] + pairs


def start_server(args, model: str, max_batch: int):
    """-> (process, url, log path); the log is a file, so that a chatty server never blocks."""
    cmd = [sys.executable, __file__, "--serve-only", "--models", model, "--max-batch", str(max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--target", args.target, "--precision", args.precision]
    log = Path(tempfile.mkstemp(prefix=f"bertqa-bench-{model}-", suffix=".log")[1])
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if m := re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text()):
            return proc, m[1], log
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the {model} server did not start:\n{log.read_text()}")


def metric(text: str, name: str) -> float:
    line = next((ln for ln in text.splitlines() if ln.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


async def check(client, pairs) -> None:
    for q, c, known in pairs:
        r = await client.post("/v1/answer", json={"question": q, "context": c})
        assert r.status_code == 200, r.text
        a = r.json()["answers"][0]
        assert a["text"] == c[a["start"]:a["end"]], a
        assert known is None or a["text"] == known, f"{q!r}: got {a['text']!r}, expected {known!r}"


async def load(client, pairs, clients: int, total: int) -> tuple[float, list[float]]:
    """Closed loop: `clients` workers share `total` requests; -> (wall seconds, latencies)."""
    latencies, next_i = [], iter(range(total))

    async def worker():
        for i in next_i:
            q, c, _ = pairs[i % len(pairs)]
            t0 = time.perf_counter()
            r = await client.post("/v1/answer", json={"question": q, "context": c})
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - t0, latencies


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: with n requests, p99 is the slowest one when n < 100."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def bench_server(url: str, model: str, clients_list: list[int]) -> list[dict]:
    import httpx
    pairs = questions(model)
    rows = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        await check(client, pairs[:3])                # correct first (and warm)
        for clients in clients_list:
            total = MODELS[model]["requests"].get(clients, 4 * clients)
            before = (await client.get("/metrics")).text
            load_avg = os.getloadavg()[0]
            wall, lat = await load(client, pairs, clients, total)
            after = (await client.get("/metrics")).text
            batches = metric(after, "bertqa_batch_requests_count") - metric(before, "bertqa_batch_requests_count")
            rows.append(dict(clients=clients, requests=total, qps=total / wall,
                             p50=percentile(lat, 50) * 1e3, p99=percentile(lat, 99) * 1e3,
                             batch=total / batches if batches else 0.0, load=load_avg))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="bundled,bert-large", help="bundled, bert-large or both")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--max-batch", type=int, default=16, help="windows per forward pass with batching on")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--target", default="cpu")
    p.add_argument("--precision", default="fp")
    p.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_only:
        serve_only(args)
        return 0
    clients_list = [int(c) for c in args.clients.split(",")]
    print(f"# bertqa serve load: {os.cpu_count()} CPUs, target {args.target} {args.precision}, "
          f"batching on = --max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}")
    print("| model | batching | clients | requests | questions/s | p50 ms | p99 ms | requests/batch | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        for label, max_batch in (("off", 1), ("on", args.max_batch)):
            proc, url, log = start_server(args, model, max_batch)
            try:
                for r in asyncio.run(bench_server(url, model, clients_list)):
                    print(f"| {model} | {label} | {r['clients']} | {r['requests']} | {r['qps']:.2f} | "
                          f"{r['p50']:.0f} | {r['p99']:.0f} | {r['batch']:.1f} | {r['load']:.1f} |", flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
                log.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
