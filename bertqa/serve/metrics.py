"""Counters, gauges and histograms in the Prometheus text format (version 0.0.4).

A few dozen lines instead of a prometheus_client dependency: the server needs counters with
labels, histograms with fixed buckets and gauges read at scrape time, all updated from the event
loop and from the batching thread, hence one lock per metric.
"""
from __future__ import annotations

import bisect
import threading
from typing import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(names: tuple[str, ...], values: tuple) -> str:
    def escape(v) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    parts = [f'{n}="{escape(v)}"' for n, v in zip(names, values)]
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels, by: float = 1.0) -> None:
        assert len(labels) == len(self.label_names), f"{self.name} takes labels {self.label_names}"
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + by

    def value(self, *labels) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def samples(self):
        with self._lock:
            items = sorted(self._values.items())
        return [(self.name + _labels(self.label_names, k), v) for k, v in items]


class Gauge:
    """A value read when scraped (`read`), or set and moved by hand."""
    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], float] | None = None):
        self.name, self.help, self._read = name, help, read
        self._value = 0.0
        self._lock = threading.Lock()

    def add(self, by: float) -> None:
        with self._lock:
            self._value += by

    def value(self) -> float:
        if self._read is not None:
            return float(self._read())
        with self._lock:
            return self._value

    def samples(self):
        return [(self.name, self.value())]


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        assert list(buckets) == sorted(buckets), f"{name}: buckets must be increasing"
        self.name, self.help, self.buckets = name, help, tuple(buckets)
        self._counts = [0] * (len(buckets) + 1)        # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.buckets, v)         # first bucket with le >= v
        with self._lock:
            self._counts[i] += 1
            self._sum += v

    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def samples(self):
        with self._lock:
            counts, total = list(self._counts), self._sum
        out, running = [], 0
        for le, c in zip([*map(_number, self.buckets), "+Inf"], counts):
            running += c
            out.append((f'{self.name}_bucket{{le="{le}"}}', running))
        return out + [(f"{self.name}_sum", total), (f"{self.name}_count", running)]


SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """Everything /metrics reports. queue_depth is read from the batcher when scraped."""

    def __init__(self, queue_depth: Callable[[], float] = lambda: 0):
        self.requests = Counter("bertqa_requests_total", "HTTP requests answered, by path and status code",
                                ("path", "code"))
        self.errors = Counter("bertqa_errors_total", "Requests answered with an error, by error code",
                              ("code",))
        self.in_flight = Gauge("bertqa_requests_in_flight", "Answer requests being handled now")
        self.forward_windows = Counter("bertqa_forward_windows_total", "Windows run through the model")
        self.dropped_windows = Counter("bertqa_dropped_windows_total",
                                       "Windows not run: their client closed the connection or timed out")
        self.queue_depth = Gauge("bertqa_queue_depth", "Requests waiting for the model", queue_depth)
        self.batch_requests = Histogram("bertqa_batch_requests", "Requests per forward batch", SIZES)
        self.batch_windows = Histogram("bertqa_batch_windows", "Windows (model inputs) per forward batch", SIZES)
        self.queue_seconds = Histogram("bertqa_queue_seconds", "Time a request waited for its batch", SECONDS)
        self.inference_seconds = Histogram("bertqa_inference_seconds",
                                           "Time of one batch: forward passes and decoding", SECONDS)

    def all(self):
        return [self.requests, self.errors, self.in_flight, self.forward_windows, self.dropped_windows,
                self.queue_depth, self.batch_requests,
                self.batch_windows, self.queue_seconds, self.inference_seconds]

    def render(self) -> str:
        lines = []
        for m in self.all():
            lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}"]
            lines += [f"{name} {_number(v)}" for name, v in m.samples()]
        return "\n".join(lines) + "\n"
