#!/usr/bin/env python3
"""What Ray costs and gives bertqa on this machine, in one run: start time, memory, serving
throughput of 1 vs 2 replicas, and bulk QA against the single-process eval.

    python -m bertqa.bench.ray_bench --data squad-v1.1-dev-eval.json       # figures of docs/scale-out.md
    python -m bertqa.bench.ray_bench --data FILE --questions 50 --seconds 3 --json out.json

Steps (the bundled model, customcpu int, prepared once and saved, as `bertqa serve --ray` does):
  1. a plain `bertqa serve` process (bertqa.bench.load_serve's), its RSS and its questions/s and
     p50/p99 under --clients closed-loop clients: the reference without Ray, with torch's
     threads and with 1 thread (what a Ray worker that reserved 1 CPU runs with);
  2. a local Ray as the `bertqa` commands start it (bertqa.ray_cluster: --num-cpus, no
     dashboard, usage stats off, a small object store): seconds to start, the memory of its
     processes; Serve's proxy and controller; then 1 and 2 replicas (1 Ray CPU each): seconds
     until every replica answered ready, RSS and PSS of each replica, and the same closed loop
     through Ray's proxy. Answers are checked first (load_serve.check);
  3. bulk QA of --questions SQuAD questions: the single-process eval (compare.answer_questions,
     torch's threads and 1 thread) against bertqa.batch on 1 and 2 model actors; the
     predictions must be identical.
Loopback only; every wait is bounded; Ray is shut down at the end, also on failure. The
memory of a process is read from /proc (Linux): RSS counts shared pages (torch's libraries) in
every process that maps them, PSS divides them between those processes, so PSS adds up.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bertqa.bench import cpu_name, load_serve

# -- memory of processes (Linux /proc) ---------------------------------------------------------


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process in MiB, from /proc/PID/smaps_rollup."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[name] = int(rest.split()[0]) / 1024          # kB -> MiB
    return values["Rss"], values["Pss"]


def descendants(root: int) -> list[int]:
    """Every live process below `root` (a local Ray's are all below the process that started it)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])   # comm may hold spaces
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_name(pid: int) -> str:
    """The name Ray gives a process (its title, e.g. 'ray::ServeReplica:bertqa:bertqa'), else argv[0]'s."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    first = argv[0].decode(errors="replace").strip()
    if first.startswith("ray::"):
        return first.split()[0]
    for arg in argv[:4]:            # gcs_server, raylet; python -u .../log_monitor.py and the like
        base = os.path.basename(arg.decode(errors="replace"))
        if base and not base.startswith(("python", "-")):
            return base
    return os.path.basename(first) or "?"


def ray_memory(root: int) -> list[dict]:
    """name, pid, RSS and PSS of every process below `root`."""
    rows = []
    for pid in descendants(root):
        try:
            rss, pss = memory_mb(pid)
            rows.append({"name": process_name(pid), "pid": pid, "rss_mb": rss, "pss_mb": pss})
        except (OSError, KeyError):                      # gone meanwhile, or a kernel thread
            continue
    return sorted(rows, key=lambda r: -r["pss_mb"])


def replicas(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["name"].startswith("ray::ServeReplica:")]


# -- the measurements ---------------------------------------------------------------------------


def load_row(label: str, port: int, bodies, clients: int, seconds: float) -> dict:
    r = asyncio.run(load_serve.closed_loop(port, bodies, clients, seconds))
    return {"setup": label, "clients": clients, "answered": r["n"], "qps": r["qps"], "p50_ms": r["p50"],
            "p99_ms": r["p99"], "refused": r["refused"], "load_avg": os.getloadavg()[0]}


def plain_serve(args, pairs, bodies, threads: int | None) -> tuple[dict, dict]:
    """A `bertqa serve` process without Ray (torch's threads, or `threads`): (its load row, its memory)."""
    server = SimpleNamespace(max_wait_ms=args.max_wait_ms, target="customcpu", precision="int", threads=threads)
    proc, port, log = load_serve.start_server(server, args.max_batch)
    try:
        asyncio.run(load_serve.check(port, pairs))
        rss, pss = memory_mb(proc.pid)
        label = f"bertqa serve (no Ray, {threads or 'default'} thread(s))"
        return load_row(label, port, bodies, args.clients, args.seconds), {"rss_mb": rss, "pss_mb": pss}
    finally:
        proc.terminate()
        proc.wait(60)
        log.unlink()


def serve_on_ray(args, prepared: str, pairs, bodies, out: dict) -> None:
    """1 then 2 replicas on the connected Ray: ready time, memory, the closed loop."""
    from ray import serve
    from bertqa.serve import ray as ray_serve
    from bertqa.serve.config import ServeConfig
    for n in (1, 2):
        config = ServeConfig(port=ray_serve.free_port("127.0.0.1"), max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms)
        t0 = time.perf_counter()
        url, ready_s = ray_serve.deploy({"model": prepared}, config, ray_serve.RayOptions(replicas=n))
        start_s = time.perf_counter() - t0
        asyncio.run(load_serve.check(config.port, pairs))
        procs = ray_memory(os.getpid())
        assert len(replicas(procs)) == n, procs
        out["replicas"][n] = {"ready_s": ready_s, "proxy_and_ready_s": start_s, "memory": replicas(procs),
                              "processes": procs,
                              "all_ray_pss_mb": sum(p["pss_mb"] for p in procs),
                              "all_ray_rss_mb": sum(p["rss_mb"] for p in procs)}
        out["load"].append(load_row(f"Ray Serve, {n} replica(s)", config.port, bodies, args.clients,
                                    args.seconds))
        print(f"  {n} replica(s): ready in {ready_s:.1f} s; {out['load'][-1]['qps']:.1f} questions/s",
              flush=True)
        serve.shutdown()          # the next deploy starts from nothing, as a new `bertqa serve --ray`


def bulk(args, prepared: str, out: dict) -> None:
    """The single-process eval against bertqa.batch on 1 and 2 actors: same predictions, wall time."""
    import bertqa
    from bertqa import batch as bulk_qa
    from bertqa.data.pairs import read_pairs
    from bertqa.eval import compare
    pairs, squad = read_pairs(args.data, args.questions)
    assert squad is not None, f"{args.data}: --data takes a SQuAD JSON file (the eval's scores)"
    v2 = squad.version == "2.0"
    for threads in (None, 1):        # torch's default, and the one thread of a 1-CPU Ray worker
        qa = bertqa.load(model=prepared, threads=threads)
        t0 = time.perf_counter()
        run = compare.answer_questions(qa, squad.questions, v2, batch=args.batch, progress=False)
        single_s = time.perf_counter() - t0
        single = single if threads else run           # the reference: the default eval
        out["bulk"].append({"setup": f"single process ({qa.threads} thread(s))", "wall_s": single_s,
                            "qps": len(pairs) / single_s, "same_predictions": run.predictions == single.predictions,
                            "load_avg": os.getloadavg()[0],
                            **compare.score_run(run, squad)})
        del qa
    for actors in (1, 2):
        result = bulk_qa.answer_pairs(pairs, {"model": prepared}, v2, actors=actors, batch=args.batch,
                                      progress=False)
        run = bulk_qa.eval_run(result, v2)
        same = run.predictions == single.predictions
        out["bulk"].append({"setup": f"bertqa.batch, {actors} actor(s) ({result.info['threads']} thread(s) each)",
                            "wall_s": result.wall_s, "qps": result.questions_per_s, "same_predictions": same,
                            "actor_load_s": result.info["actor_load_s"], "load_avg": os.getloadavg()[0],
                            **compare.score_run(run, squad)})
        assert same, f"bertqa.batch on {actors} actor(s) answered differently from the single-process eval"
        print(f"  bulk, {actors} actor(s): {result.questions_per_s:.1f} questions/s", flush=True)


def report(out: dict) -> str:
    lines = [f"# bertqa on Ray: {out['machine']}", "",
             f"prepare (calibrate + save, once): {out['prepare_s']:.1f} s; load of the prepared dir: "
             f"{out['load_prepared_s']:.2f} s; local Ray start: {out['ray_init_s']:.1f} s; "
             f"Ray workers with 1 CPU run torch with {out['worker_threads']} thread(s)", "",
             f"plain `bertqa serve` process: RSS {out['plain_memory']['rss_mb']:.0f} MiB, "
             f"PSS {out['plain_memory']['pss_mb']:.0f} MiB", "",
             f"a local Ray, idle (before Serve): {len(out['ray_idle'])} processes, RSS "
             f"{sum(p['rss_mb'] for p in out['ray_idle']):.0f} MiB, PSS {sum(p['pss_mb'] for p in out['ray_idle']):.0f} MiB", "",
             "| Ray processes serving 1 replica | RSS MiB | PSS MiB |", "|---|---:|---:|"]
    lines += [f"| {p['name']} | {p['rss_mb']:.0f} | {p['pss_mb']:.0f} |" for p in out["replicas"][1]["processes"]]
    lines += ["", "| replicas | ready s | proxy + ready s | replica RSS MiB | replica PSS MiB | "
              "all Ray RSS MiB | all Ray PSS MiB |", "|---:|---:|---:|---|---|---:|---:|"]
    for n, r in out["replicas"].items():
        rss = ", ".join(f"{m['rss_mb']:.0f}" for m in r["memory"])
        pss = ", ".join(f"{m['pss_mb']:.0f}" for m in r["memory"])
        lines.append(f"| {n} | {r['ready_s']:.1f} | {r['proxy_and_ready_s']:.1f} | {rss} | {pss} | "
                     f"{r['all_ray_rss_mb']:.0f} | {r['all_ray_pss_mb']:.0f} |")
    lines += ["", "| setup | clients | answered | questions/s | p50 ms | p99 ms | 503s | load avg |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['setup']} | {r['clients']} | {r['answered']} | {r['qps']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['refused']} | {r['load_avg']:.1f} |" for r in out["load"]]
    lines += ["", "| bulk QA | wall s | questions/s | actor load s | EM | F1 | same predictions | load avg |",
              "|---|---:|---:|---:|---:|---:|---|---:|"]
    lines += [f"| {r['setup']} | {r['wall_s']:.1f} | {r['qps']:.1f} | {r.get('actor_load_s', '-')} | {r['em']:.2f} | "
              f"{r['f1']:.2f} | {'yes' if r['same_predictions'] else 'NO'} | {r['load_avg']:.1f} |"
              for r in out["bulk"]]
    return "\n".join(lines)


def worker_threads() -> int:
    """torch's threads in a Ray worker that reserved 1 CPU (Ray sets OMP_NUM_THREADS to it)."""
    import ray

    @ray.remote(num_cpus=1)
    def threads() -> int:
        import torch
        return torch.get_num_threads()
    return ray.get(threads.remote(), timeout=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a SQuAD JSON file (e.g. squad-v1.1-dev-eval.json)")
    p.add_argument("--questions", type=int, default=200, help="its first N questions for bulk QA")
    p.add_argument("--clients", type=int, default=16, help="closed-loop HTTP clients")
    p.add_argument("--seconds", type=float, default=8.0, help="per closed-loop measurement")
    p.add_argument("--max-batch", type=int, default=16, help="windows per forward pass in a replica")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=1, help="questions per answer_batch call in bulk QA")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs the local Ray offers")
    p.add_argument("--object-store-mb", type=int, default=200)
    p.add_argument("--json", default=None, metavar="OUT.json", help="also write the figures as JSON")
    args = p.parse_args()
    if not Path(args.data).is_file():
        p.error(f"--data {args.data} does not exist")
    import bertqa
    from bertqa import ray_cluster
    pairs = load_serve.questions()
    bodies = [json.dumps({"question": q, "context": c}).encode() for q, c in pairs]
    out = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": [], "bulk": [], "replicas": {}}
    print(f"# {out['machine']}; load average {os.getloadavg()[0]:.1f}", flush=True)
    for threads in (None, 1):        # torch's default, and the one thread of a 1-CPU Ray worker
        row, memory = plain_serve(args, pairs, bodies, threads)
        out["load"].append(row)
        out.setdefault("plain_memory", memory)
    with tempfile.TemporaryDirectory(prefix="bertqa-ray-bench-") as tmp:
        t0 = time.perf_counter()
        bertqa.load(model="bundled", target="customcpu", precision="int").save(tmp)
        out["prepare_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        bertqa.load(model=tmp)
        out["load_prepared_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray_cluster.connect(None, "ray_bench", num_cpus=args.num_cpus, object_store_bytes=args.object_store_mb << 20)
        try:
            out["ray_init_s"] = time.perf_counter() - t0
            time.sleep(2)                               # the workers Ray starts at once settle
            out["ray_idle"] = ray_memory(os.getpid())
            out["worker_threads"] = worker_threads()
            serve_on_ray(args, tmp, pairs, bodies, out)
            bulk(args, tmp, out)
        finally:
            ray_cluster.disconnect()
    print(report(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
