"""The /proc readings of bertqa.bench.ray_bench (no Ray needed): memory of a process, the
processes below one, and the names Ray's processes go by."""
import mmap
import os
import subprocess
import sys
import time

import pytest

from bertqa.bench import ray_bench

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="reads Linux /proc")


def test_memory_of_this_process_grows_with_what_it_touches():
    rss, pss = ray_bench.memory_mb(os.getpid())
    assert 0 < pss <= rss
    # 64 MiB of fresh pages, written: resident (a bytearray could reuse freed, resident heap)
    block = mmap.mmap(-1, 64 << 20)
    for at in range(0, len(block), 4096):
        block[at] = 1
    assert ray_bench.memory_mb(os.getpid())[0] > rss + 50
    block.close()


def wait_for_child(pid: int):
    deadline = time.monotonic() + 10
    while pid not in ray_bench.descendants(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_descendants_and_the_names_ray_processes_go_by(tmp_path):
    script = tmp_path / "log_monitor.py"
    script.write_text("import time\ntime.sleep(30)\n")
    titled = subprocess.Popen(["bash", "-c", 'exec -a "ray::ServeReplica:bertqa:bertqa x" sleep 30'])
    python = subprocess.Popen([sys.executable, "-u", str(script)])
    try:
        for child in (titled, python):
            wait_for_child(child.pid)
        assert {titled.pid, python.pid} <= set(ray_bench.descendants(os.getpid()))
        assert ray_bench.process_name(titled.pid) == "ray::ServeReplica:bertqa:bertqa"
        assert ray_bench.process_name(python.pid) == "log_monitor.py"
        rows = {r["pid"]: r for r in ray_bench.ray_memory(os.getpid())}
        assert rows[python.pid]["rss_mb"] >= rows[python.pid]["pss_mb"] > 0
        assert [r["name"] for r in ray_bench.replicas(list(rows.values()))] == ["ray::ServeReplica:bertqa:bertqa"]
    finally:
        for child in (titled, python):
            child.kill()
            child.wait(10)


def test_replicas_are_the_serve_replica_processes():
    rows = [{"name": "ray::ServeReplica:bertqa:bertqa"}, {"name": "ray::ProxyActor"}, {"name": "raylet"}]
    assert ray_bench.replicas(rows) == rows[:1]


def test_report_tables_name_every_row_and_flag_different_predictions():
    proc = {"name": "ray::ServeReplica:bertqa:bertqa", "pid": 1, "rss_mb": 477.0, "pss_mb": 338.0}
    load = {"clients": 16, "answered": 96, "qps": 10.3, "p50_ms": 1499.0, "p99_ms": 1896.0, "refused": 0,
            "load_avg": 9.6}
    bulk = {"wall_s": 34.3, "qps": 5.8, "em": 70.5, "f1": 80.91, "load_avg": 8.0}
    out = {"machine": "AMD EPYC, 2 CPUs, 24 GiB", "prepare_s": 13.4, "load_prepared_s": 0.52, "ray_init_s": 25.6,
           "worker_threads": 1, "plain_memory": {"rss_mb": 370.0, "pss_mb": 288.0},
           "ray_idle": [{"name": "raylet", "pid": 2, "rss_mb": 28.0, "pss_mb": 24.0}],
           "replicas": {1: {"ready_s": 10.5, "proxy_and_ready_s": 27.2, "memory": [proc], "processes": [proc],
                            "all_ray_rss_mb": 1938.0, "all_ray_pss_mb": 1297.0}},
           "load": [{"setup": "Ray Serve, 1 replica(s)", **load}],
           "bulk": [{"setup": "single process (2 thread(s))", "same_predictions": True, **bulk},
                    {"setup": "bertqa.batch, 1 actor(s)", "same_predictions": False, "actor_load_s": 0.12, **bulk}]}
    text = ray_bench.report(out)
    assert "local Ray start: 25.6 s" in text and "1 processes, RSS 28 MiB, PSS 24 MiB" in text
    assert "| ray::ServeReplica:bertqa:bertqa | 477 | 338 |" in text
    assert "| 1 | 10.5 | 27.2 | 477 | 338 | 1938 | 1297 |" in text
    assert "| Ray Serve, 1 replica(s) | 16 | 96 | 10.3 | 1499 | 1896 | 0 | 9.6 |" in text
    assert "| single process (2 thread(s)) | 34.3 | 5.8 | - | 70.50 | 80.91 | yes | 8.0 |" in text
    assert "| bertqa.batch, 1 actor(s) | 34.3 | 5.8 | 0.12 | 70.50 | 80.91 | NO | 8.0 |" in text
