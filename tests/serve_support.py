"""Start `bertqa serve` as a user would (a subprocess on a free loopback port) and talk HTTP to it.

All traffic stays on 127.0.0.1; every wait is bounded.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 90          # torch import + model load on a busy 2-core machine
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class Server:
    """`python -m bertqa serve --model bundled --port 0 ARGS...`, started at once; `.url` waits
    until it is ready, so that several servers (and the test's own model) load side by side."""

    def __init__(self, *args: str, log_dir: Path):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bertqa-serve-", suffix=".log",
                                               dir=log_dir, delete=False)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "bertqa", "serve", "--model", "bundled", "--target", "cpu",
               "--precision", "fp", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self._url = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._wait_ready()
        return self._url

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + STARTUP_S
        url = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bertqa serve exited with {self.proc.returncode}:\n{self.output()}")
            if url is None and (m := LISTENING.search(self.output())):
                url = f"http://127.0.0.1:{m[1]}"
            if url is not None:
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"bertqa serve not ready within {STARTUP_S} s:\n{self.output()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful), then SIGKILL after `timeout`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def post(self, path: str, body, timeout: float = 30, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout, **kwargs)

    def get(self, path: str, timeout: float = 10) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def healthy(self) -> bool:
        return self.get("/healthz").status_code == 200 and self.get("/readyz").status_code == 200


def metric(text: str, name: str) -> float:
    """The value of one sample (name with its labels, exactly as printed) in Prometheus text; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def long_context(stories, repeats: int = 3) -> str:
    """A context of several windows: the built-in stories, several times over."""
    return "\n\n".join(s.context for s in stories) * repeats
