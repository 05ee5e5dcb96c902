"""The /proc readings of bertqa.bench.ray_bench (no Ray needed): memory of a process, the
processes below one, and the names Ray's processes go by."""
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
    block = bytearray(64 << 20)                  # 64 MiB, written: resident
    block[::4096] = b"x" * len(block[::4096])
    assert ray_bench.memory_mb(os.getpid())[0] > rss + 50
    del block


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
