"""`bertqa serve`."""
from __future__ import annotations

import argparse

from bertqa.cli.registry import subcommand
from bertqa.cli.common import add_model_options, load_from_args, print_header
from bertqa.cli.values import non_negative_float, positive_float
from bertqa.errors import BertQAError

# -- serve --------------------------------------------------------------------------------------

def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from bertqa.serve.config import ServeConfig
    d = ServeConfig()
    add_model_options(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default=d.host,
                   help="address to listen on (default: loopback only; 0.0.0.0 exposes the server)")
    g.add_argument("--port", type=int, default=d.port, help="0 picks a free port (printed at start)")
    g.add_argument("--max-batch", type=int, default=d.max_batch,
                   help="windows per forward pass across requests; 1 turns dynamic batching off")
    g.add_argument("--max-batch-tokens", type=int, default=d.max_batch_tokens,
                   help="tokens per forward pass: real ones where the model packs a batch (CPU "
                        "targets), padded ones otherwise; one window always fits")
    g.add_argument("--max-wait-ms", type=non_negative_float, default=d.max_wait_ms,
                   help="how long a batch waits for more requests after its first one")
    g.add_argument("--workers", type=int, default=d.workers,
                   help="inference threads taking batches from the queue (default: as many as the "
                        "model's CPU threads on CPU targets, one on a GPU)")
    g.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests waiting for the model; more get 503 with Retry-After")
    g.add_argument("--timeout-s", type=positive_float, default=d.timeout_s, help="per request; then 504")
    g.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    g.add_argument("--max-question-chars", type=int, default=d.max_question_chars)
    g.add_argument("--max-context-chars", type=int, default=d.max_context_chars)
    g.add_argument("--max-windows", type=int, default=d.max_windows, help="windows per request")
    g.add_argument("--max-items", type=int, default=d.max_items, help="pairs per /v1/answer:batch request")
    g.add_argument("--read-timeout-s", type=float, default=d.read_timeout_s,
                   help="time a request may take to arrive (headers and body); then 408")
    g.add_argument("--max-connections", type=int, default=d.max_connections,
                   help="open connections; more get 503 (kept below the open-file limit)")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    r = p.add_argument_group("Ray Serve (needs bertqa[ray]; docs/scale-out.md)")
    r.add_argument("--ray", action="store_true", help="serve with Ray Serve: replicas behind one endpoint")
    n = r.add_mutually_exclusive_group()
    n.add_argument("--replicas", type=int, default=1, help="replicas of the model (default 1)")
    n.add_argument("--autoscale", default=None, metavar="MIN:MAX",
                   help="let Ray scale between MIN and MAX replicas with the load")
    r.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (e.g. auto, HEAD_IP:6379); default: start a local Ray")
    r.add_argument("--replica-cpus", type=float, default=1.0, help="Ray CPUs each replica reserves")
    r.add_argument("--max-ongoing", type=int, default=None,
                   help="requests one replica holds (default: --max-queue + --max-batch)")
    r.add_argument("--max-queued", type=int, default=None,
                   help="requests waiting for any replica, per Ray proxy (default: --max-queue)")


@subcommand("serve", "answer questions over HTTP with dynamic batching (needs bertqa[serve])",
            add_serve_arguments)
def run_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise BertQAError(f"bertqa serve needs fastapi and uvicorn ({e.name} is not installed): "
                          "pip install 'bertqa[serve]'") from None
    from bertqa.serve.app import serve
    from bertqa.serve.config import ServeConfig
    try:
        config = ServeConfig(host=args.host, port=args.port, max_batch=args.max_batch,
                             max_batch_tokens=args.max_batch_tokens,
                             max_wait_ms=args.max_wait_ms, workers=args.workers,
                             max_queue=args.max_queue,
                             timeout_s=args.timeout_s, max_body_bytes=args.max_body_bytes,
                             max_question_chars=args.max_question_chars,
                             max_context_chars=args.max_context_chars,
                             max_windows=args.max_windows, max_items=args.max_items,
                             read_timeout_s=args.read_timeout_s, max_connections=args.max_connections)
    except ValueError as e:
        raise BertQAError(str(e)) from None
    if args.ray:
        from bertqa.cli.serve_ray import run_serve_ray
        return run_serve_ray(args, config)
    if args.replicas != 1 or args.autoscale or args.ray_address:
        raise BertQAError("--replicas, --autoscale and --ray-address need --ray")
    qa = load_from_args(args)
    print_header(qa, "bertqa serve")
    serve(qa, config, args.log_level)
    return 0

