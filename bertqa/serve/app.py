"""The HTTP API over a loaded QAModel: routes, error replies, startup and graceful shutdown.

    POST /v1/answer        {question, context, top_k?, max_answer_len?, allow_no_answer?}
    POST /v1/answer:batch  {items: [ ...the same objects... ]}
    GET  /healthz  /readyz  /metrics  /info, and / (a page to try it; see page.py)

A request takes its place in the queue before its body is read (guard.py), and gives it up
when its client closes the connection: its windows are then dropped, queued or not.

No `from __future__ import annotations` here: FastAPI reads the route annotations, and the
request models are built inside create_app from the config.
"""
import asyncio
import logging
import os
import resource
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertqa.api import QAModel
from bertqa.errors import BertQAError, InputError
from bertqa.qa.windows import make_windows
from bertqa.serve.batcher import Batcher, Job
from bertqa.serve.config import ServeConfig
from bertqa.serve.connections import edge_protocol, quiet_logs
from bertqa.serve.errors import ClientGone, ServeError, field_name
from bertqa.serve.guard import RETRY_AFTER_S, TICKET, BodyGuard, CountRequests
from bertqa.serve.metrics import CONTENT_TYPE, ServeMetrics
from bertqa.serve.page import add_page
from bertqa.serve.schemas import (AnswerOut, AnswerResponse, BatchResponse, ErrorResponse, Health,
                                  PairAnswers, Readiness, request_models)

log = logging.getLogger("bertqa.serve")
PATHS = {"/v1/answer", "/v1/answer:batch", "/healthz", "/readyz", "/metrics", "/info", "/"}
FD_HEADROOM = 64           # files the server may open besides its connections (logs, threads, libs)
ERRORS = {status: {"model": ErrorResponse, "description": why} for status, why in [
    (400, "the body is not JSON, or not UTF-8, or the HTTP request is malformed"),
    (408, "the request did not arrive within the read timeout"),
    (413, "the body is too large"), (415, "the body is not application/json"),
    (422, "a field is missing, of the wrong type, empty, too long, or unknown"),
    (503, "the queue is full, the model is not loaded, or the server holds too many connections: "
          "retry after Retry-After seconds"),
    (504, "not answered within the per-request timeout")]}


def create_app(qa: QAModel, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    AnswerRequest, BatchRequest = request_models(config)
    metrics = ServeMetrics(queue_depth=lambda: batcher.depth())
    cpu = qa.pipeline.device.type == "cpu"
    workers = config.workers or (qa.threads if cpu else 1)
    batcher = Batcher(qa.pipeline, config.max_batch, config.max_wait_ms / 1000, config.max_queue, metrics,
                      config.max_batch_tokens, workers=workers)
    info = {"model": qa.model_name, "target": qa.target, "precision": qa.precision}
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        state["ready"] = True
        yield
        # uvicorn has stopped accepting and waited for in-flight requests (up to its grace
        # period); whatever is still queued is finished before the worker stops.
        state["ready"] = False
        await asyncio.to_thread(batcher.close, config.grace_s)

    # no /docs or /redoc: they load their scripts from a CDN (blank offline); GET / is the page
    app = FastAPI(title="bertqa", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Extractive question answering: answers are slices of the context.")
    app.state.metrics = metrics
    app.add_middleware(BodyGuard, max_bytes=config.max_body_bytes, metrics=metrics,
                       paths={"/v1/answer", "/v1/answer:batch"}, admit=batcher.admit,
                       drain_bytes=config.drain_bytes)
    app.add_middleware(CountRequests, metrics=metrics, paths=PATHS)   # outermost: sees every status
    app.state.healthy = lambda: state["ready"] and batcher.alive()   # for Ray's health check

    @app.exception_handler(ServeError)
    async def serve_error(request, e: ServeError):
        return e.response(metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, e: RequestValidationError):
        problems = [{"field": field_name(err["loc"]), "message": err["msg"], "type": err["type"],
                     "ctx": err.get("ctx") or {}} for err in e.errors()]
        first = problems[0]
        if first["type"] == "json_invalid":
            at = first["field"].strip("[]") if first["field"] else "?"
            err = ServeError(400, "invalid_json", f"the body is not valid JSON: "
                             f"{first['ctx'].get('error', first['message'])} at character {at}")
        elif first["field"] is None and first["type"] == "missing":
            err = ServeError(422, "invalid_field", "the body is empty: send a JSON object")
        else:
            message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
            err = ServeError(422, "invalid_field", message, first["field"],
                             [{"field": p["field"], "message": p["message"]} for p in problems])
        return err.response(metrics)

    @app.exception_handler(ClientGone)
    async def client_gone(request, e: ClientGone):
        metrics.errors.inc("client_closed")
        return Response(status_code=499)              # never sent: counted as 499, nginx's code

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        if e.status_code == 400:        # FastAPI could not parse the body: the reason is the cause
            return ServeError(400, "invalid_json", f"the body could not be parsed as JSON: "
                              f"{parse_failure(e.__cause__)}").response(metrics)
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return ServeError(e.status_code, code, str(e.detail), headers=e.headers).response(metrics)

    @app.exception_handler(Exception)
    async def internal(request, e: Exception):
        log.exception("unexpected error")
        return ServeError(500, "internal", f"{type(e).__name__}: {e}").response(metrics)

    def windows_of(items, prefixes):
        """All windows of the request's pairs (example i = item i), checked against the limits."""
        windows = []
        for i, (item, prefix) in enumerate(zip(items, prefixes)):
            try:
                ws = make_windows(qa.tokenizer, [item.question], [item.context], qa.options.windows)
            except InputError:
                raise ServeError(422, "invalid_field", f"{prefix}context has no tokens the model knows",
                                 f"{prefix}context") from None
            for w in ws:
                w.example = i
            windows += ws
        if len(windows) > config.max_windows:
            where = "items" if len(items) > 1 else f"{prefixes[0]}context"
            raise ServeError(422, "invalid_field", f"{where} makes {len(windows)} windows of at most "
                             f"{qa.options.windows.max_seq_len} tokens; the limit is "
                             f"{config.max_windows} per request", where)
        return windows

    async def answer_items(items, prefixes, t0: float, raw: Request):
        """Windows in a thread, forward and decode in the batcher, all within the timeout and
        while the client is connected (its place in the queue was taken by BodyGuard)."""
        if not state["ready"]:
            raise ServeError(503, "not_ready", "the server is starting or stopping",
                             headers={"Retry-After": str(RETRY_AFTER_S)})
        gone = asyncio.ensure_future(disconnected(raw.receive))
        job = None
        try:
            windows = await run_in_threadpool(windows_of, items, prefixes)
            if gone.done():
                raise ClientGone()
            decodes = [qa.options.with_decode(max_answer_len=it.max_answer_len,
                                              allow_no_answer=it.allow_no_answer).decode for it in items]
            job = Job([it.context for it in items], windows, decodes, [it.top_k for it in items],
                      asyncio.get_running_loop().create_future())
            batcher.submit(job, raw.scope[TICKET])
            remaining = config.timeout_s - (time.perf_counter() - t0)
            await asyncio.wait([job.future, gone], timeout=max(remaining, 0.001),
                               return_when=asyncio.FIRST_COMPLETED)
            if job.future.done():
                return job.future.result()
            if gone.done():
                raise ClientGone()
            raise ServeError(504, "timeout", f"not answered within {config.timeout_s:g} s")
        finally:
            gone.cancel()
            if job is not None:
                job.cancelled = True    # no-op once answered; otherwise the batcher drops its windows

    def out(answers) -> list[AnswerOut]:
        return [AnswerOut(**a.to_dict()) for a in answers]

    body_limit = {"requestBody": {"description": f"JSON, at most {config.max_body_bytes} bytes (else 413)",
                                  "x-max-body-bytes": config.max_body_bytes}}

    @app.post("/v1/answer", response_model=AnswerResponse, responses=ERRORS, openapi_extra=body_limit)
    async def answer(request: AnswerRequest, raw: Request) -> AnswerResponse:
        """The top_k answers to one question about one context."""
        t0 = time.perf_counter()
        [answers] = await answer_items([request], [""], t0, raw)
        return AnswerResponse(answers=out(answers), time_ms=(time.perf_counter() - t0) * 1e3, **info)

    @app.post("/v1/answer:batch", response_model=BatchResponse, responses=ERRORS, openapi_extra=body_limit)
    async def answer_batch(request: BatchRequest, raw: Request) -> BatchResponse:
        """Answers for many (question, context) pairs; their windows share forward batches."""
        t0 = time.perf_counter()
        prefixes = [f"items[{i}]." for i in range(len(request.items))]
        results = await answer_items(request.items, prefixes, t0, raw)
        return BatchResponse(results=[PairAnswers(answers=out(a)) for a in results],
                             time_ms=(time.perf_counter() - t0) * 1e3, **info)

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=Health)
    async def healthz() -> Health:
        """The server process answers (even while the model computes)."""
        return Health(status="ok")

    @app.api_route("/readyz", methods=["GET", "HEAD"], response_model=Readiness,
                   responses={503: {"model": Readiness}})
    async def readyz():
        """The model is loaded and the batcher takes requests."""
        body = Readiness(status="ready" if state["ready"] else "not ready", **info)
        return JSONResponse(body.model_dump(), status_code=200 if state["ready"] else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text: requests, errors, batch sizes, queue time, inference time."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    add_page(app, dict(info, backend=qa.prepared.backend), config)
    return app


async def disconnected(receive) -> None:
    """Returns when the client has closed the connection (the body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def parse_failure(cause: BaseException | None) -> str:
    """Why json.loads failed on a body that is valid JSON text by grammar."""
    if isinstance(cause, RecursionError):
        return "it is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return f"a number has more digits than the limit ({str(cause).split('(')[1].split(')')[0]})"
    return f"{type(cause).__name__}: {cause}" if cause else "unknown reason"


def connection_cap(wanted: int) -> int:
    """wanted, or fewer so that connections cannot use up the open-file limit (raised to its
    hard limit first, where allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            soft = min(hard, 1 << 16) if hard != resource.RLIM_INFINITY else 1 << 16
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        except (ValueError, OSError):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 32
    return max(1, min(wanted, soft - open_now - FD_HEADROOM))


def listen(host: str, port: int) -> socket.socket:
    """A bound listening socket, so that a busy port is a clear error before uvicorn starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise BertQAError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def serve(qa: QAModel, config: ServeConfig, log_level: str = "info") -> None:
    """Run the app on uvicorn until SIGINT/SIGTERM; in-flight requests finish first."""
    import uvicorn
    app = create_app(qa, config)
    sock = listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    cap = connection_cap(config.max_connections)
    protocol = edge_protocol(app.state.metrics, config.read_timeout_s, cap, config.max_body_bytes)
    print(f"bertqa serve: listening on http://{host if ':' not in host else f'[{host}]'}:{port} "
          f"(a page to try it at /, POST /v1/answer, OpenAPI at /openapi.json; at most {cap} "
          "connections)", flush=True)
    uv = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=config.grace_s,
                        access_log=False, http=protocol)
    quiet_logs()                        # after uvicorn.Config, which configures its loggers
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # handler that was there before it: ours notes it, so that a graceful stop exits 0.
    received = []
    handled = (signal.SIGINT, signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda s, f: received.append(s)) for sig in handled} if in_main else {}
    try:
        uvicorn.Server(uv).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    how = f" on {signal.Signals(received[0]).name}" if received else ""
    print(f"bertqa serve: stopped{how}, in-flight requests answered", flush=True)
