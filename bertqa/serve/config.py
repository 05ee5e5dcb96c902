"""What `bertqa serve` may be asked to do: batching, queueing and input limits, validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # dynamic batching
    max_batch: int = 16                 # windows per forward pass; 1 turns batching off
    max_wait_ms: float = 5.0            # how long a batch waits for company after its first request
    max_queue: int = 64                 # requests waiting for the model; beyond it: 503 + Retry-After
    timeout_s: float = 30.0             # per request, queue + inference; beyond it: 504
    # input limits (each one a 4xx naming the field)
    max_body_bytes: int = 1 << 20
    max_question_chars: int = 2_000
    max_context_chars: int = 50_000
    max_windows: int = 64               # windows of one request, all its pairs together
    max_items: int = 64                 # pairs in one /v1/answer:batch request
    max_top_k: int = 20
    max_answer_len_limit: int = 512     # the largest max_answer_len (tokens) a request may ask
    shutdown_grace_s: float | None = None   # None: timeout_s + 5, so in-flight requests finish

    def __post_init__(self):
        ints = ("max_batch", "max_queue", "max_body_bytes", "max_question_chars",
                "max_context_chars", "max_windows", "max_items", "max_top_k", "max_answer_len_limit")
        for name in ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{_option(name)} must be >= 1, got {getattr(self, name)}")
        # written so that NaN fails too (every comparison with NaN is false)
        if not 0 <= self.max_wait_ms < math.inf:
            raise ValueError(f"--max-wait-ms must be a finite number >= 0, got {self.max_wait_ms}")
        if not 0 < self.timeout_s < math.inf:
            raise ValueError(f"--timeout-s must be a finite number > 0, got {self.timeout_s}")
        if self.shutdown_grace_s is not None and not 0 <= self.shutdown_grace_s < math.inf:
            raise ValueError(f"shutdown_grace_s must be a finite number >= 0, got {self.shutdown_grace_s}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535 (0: any free port), got {self.port}")

    @property
    def grace_s(self) -> float:
        return self.timeout_s + 5 if self.shutdown_grace_s is None else self.shutdown_grace_s


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")
