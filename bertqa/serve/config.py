"""What `bertqa serve` may be asked to do: batching, queueing and input limits, validated once."""
from __future__ import annotations

import math
from dataclasses import dataclass


# JSON around one batch item's texts: keys, quotes, commas, the largest option values
ITEM_OVERHEAD = 128


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # dynamic batching
    max_batch: int = 16                 # windows per forward pass; 1 turns batching off
    max_batch_tokens: int = 1024        # tokens per forward pass (real if packed; one window always fits)
    max_wait_ms: float = 5.0            # how long a batch waits for company after its first request
    workers: int | None = None          # inference threads (None: as many as the model's CPU
                                        # threads on CPU targets, one on a GPU; see Batcher)
    max_queue: int = 64                 # requests waiting for the model; beyond it: 503 + Retry-After
    timeout_s: float = 30.0             # per request, queue + inference; beyond it: 504
    # input limits (each one a 4xx naming the field)
    max_body_bytes: int = 1 << 20
    max_question_chars: int = 2_000
    max_context_chars: int = 50_000
    max_windows: int = 64               # windows of one request, all its pairs together
    max_items: int = 16                 # pairs in one /v1/answer:batch request
    max_top_k: int = 20
    max_answer_len_limit: int = 512     # the largest max_answer_len (tokens) a request may ask
    shutdown_grace_s: float | None = None   # None: timeout_s + 5, so in-flight requests finish
    # connections (the edge, below the app)
    read_timeout_s: float = 10.0        # from a request's first byte to the end of its body; then 408
    max_connections: int = 512          # open connections; more get 503 at once (kept below the file limit)

    def __post_init__(self):
        ints = ("max_batch", "max_queue", "max_body_bytes", "max_question_chars",
                "max_context_chars", "max_windows", "max_items", "max_top_k", "max_answer_len_limit",
                "max_connections", "max_batch_tokens")
        for name in ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{_option(name)} must be >= 1, got {getattr(self, name)}")
        # written so that NaN fails too (every comparison with NaN is false)
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if not 0 <= self.max_wait_ms < math.inf:
            raise ValueError(f"--max-wait-ms must be a finite number >= 0, got {self.max_wait_ms}")
        if not 0 < self.timeout_s < math.inf:
            raise ValueError(f"--timeout-s must be a finite number > 0, got {self.timeout_s}")
        if self.shutdown_grace_s is not None and not 0 <= self.shutdown_grace_s < math.inf:
            raise ValueError(f"shutdown_grace_s must be a finite number >= 0, got {self.shutdown_grace_s}")
        if not 0 < self.read_timeout_s < math.inf:
            raise ValueError(f"--read-timeout-s must be a finite number > 0, got {self.read_timeout_s}")
        if self.batch_context_chars < 1:
            raise ValueError(f"--max-items {self.max_items} with --max-question-chars "
                             f"{self.max_question_chars} leaves no room for contexts in "
                             f"--max-body-bytes {self.max_body_bytes}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535 (0: any free port), got {self.port}")

    @property
    def batch_context_chars(self) -> int:
        """maxLength of a batch item's context: so that any batch the schema admits (with ASCII
        text) fits in max_body_bytes, instead of a valid request that always gets 413."""
        per_item = self.max_body_bytes // self.max_items - self.max_question_chars - ITEM_OVERHEAD
        return min(self.max_context_chars, per_item)

    @property
    def drain_bytes(self) -> int:
        """How much of a refused body is read and dropped so that its client gets the error."""
        return max(8 << 20, 4 * self.max_body_bytes)

    @property
    def grace_s(self) -> float:
        return self.timeout_s + 5 if self.shutdown_grace_s is None else self.shutdown_grace_s


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")
