"""One engine per process: `EngineProcess` starts a worker (`python -m bertqa.bench.worker FD`, a
fresh interpreter: unlike multiprocessing's spawn it never re-imports the caller's __main__) that
builds one engine of bertqa.bench.peers and then answers the parent's requests over a socket
pair, one at a time.

Separate processes keep the engines' thread pools (torch's OpenMP, ONNX Runtime's, OpenVINO's
TBB) from fighting: while one worker runs a forward the others sit blocked in `recv`. Each worker
is started with OMP_NUM_THREADS / MKL_NUM_THREADS = threads and sets torch's and customcpu's
thread counts to it as well. The timed region is the forward call inside the worker (no pipe
traffic); before it the worker sleeps `settle_s`, untimed (see bertqa.bench.model_bench).

Requests: ('build', Build) -> ('ready', label, seconds) | ('error', reason), with ('log', line)
messages before it; ('inputs', case, (ids, types, mask)) -> ('logits', start, end), or for a
list of such batches (the mixed-length case, bertqa.bench.mixed) ('logits', [start], [end]),
one forward per batch; ('time', case, settle_s) -> ('ms', ms), all of a case's forwards;
('stop',).
"""
from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def send(conn: Connection, msg) -> None:
    """Plain pickle: Connection.send's ForkingPickler would pass tensors as shared-memory file
    descriptors, which need multiprocessing's own process tree to be handed over."""
    conn.send_bytes(pickle.dumps(msg))


def recv(conn: Connection):
    return pickle.loads(conn.recv_bytes())


def forward(run, inputs) -> tuple:
    """run over one case's inputs: (start, end) for one batch, ([start], [end]) for a list."""
    if isinstance(inputs, list):
        outs = [forward(run, batch) for batch in inputs]
        return [s for s, _ in outs], [e for _, e in outs]
    start, end = run(*inputs)
    return start.float(), end.float()


def serve(conn) -> None:
    """The worker's loop."""
    import torch
    from bertqa.bench.peers import engine
    logging.getLogger().setLevel(logging.ERROR)     # quantize_dynamic's advice on every export
    run, inputs = None, {}
    while True:
        msg = recv(conn)
        kind = msg[0]
        try:
            if kind == "stop":
                return
            if kind == "build":
                name, b = msg[1], msg[2]
                torch.set_num_threads(b.threads)
                from bertqa import native
                from bertqa.backends import backend_names, register
                native.set_threads(b.threads)
                for backend_name, where in b.registered.items():   # run-time ones of the parent
                    if backend_name not in backend_names():
                        register(backend_name, where)
                b.log = lambda line: send(conn, ("log", line))
                t0 = time.perf_counter()
                with torch.inference_mode(name != "torchao-int8"):
                    run, label = engine(name).build(b)
                send(conn, ("ready", label, time.perf_counter() - t0))
            elif kind == "inputs":
                inputs[msg[1]] = msg[2]
                with torch.inference_mode():
                    start, end = forward(run, msg[2])
                send(conn, ("logits", start, end))
            elif kind == "time":
                time.sleep(msg[2])
                case = inputs[msg[1]]
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    for batch in case if isinstance(case, list) else [case]:
                        run(*batch)
                    ms = (time.perf_counter() - t0) * 1e3
                send(conn, ("ms", ms))
        except Exception as e:                  # said to the parent, which reports it per engine
            line = next((s for s in str(e).strip().splitlines() if s.strip()), type(e).__name__)
            send(conn, ("error", f"{type(e).__name__}: {line[:300]}", traceback.format_exc()))


class EngineProcess:
    """The parent's handle on one worker."""

    def __init__(self, name: str, threads: int):
        self.name = name
        ours, theirs = socket.socketpair()
        env = dict(os.environ, **{k: str(threads) for k in THREAD_ENV})   # read at the child's start
        root = str(Path(__file__).resolve().parents[2])         # this bertqa, not another install
        # this bertqa first, then the parent's path: a backend class it registered at run time
        # (e.g. one a test defines) unpickles in the worker
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in sys.path if p])
        self.proc = subprocess.Popen([sys.executable, "-m", "bertqa.bench.worker", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], env=env)
        theirs.close()
        self.conn = Connection(ours.detach())

    def request(self, *msg, log=None):
        """Send one request, return the reply; log(line) gets the worker's log lines on the way.
        A dead worker (killed for memory, crashed in native code) is an ('error', ...) reply."""
        send(self.conn, msg)
        while True:
            try:
                reply = recv(self.conn)
            except (EOFError, ConnectionResetError):
                return ("error", f"worker died (exit code {self.proc.wait(10)})", "")
            if reply[0] != "log":
                return reply
            if log:
                log(reply[1])

    def close(self) -> None:
        try:
            send(self.conn, ("stop",))
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
