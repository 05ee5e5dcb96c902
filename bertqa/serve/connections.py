"""Below the ASGI app: the HTTP connection itself (uvicorn's h11 protocol, extended), and a quiet log.

uvicorn bounds neither the time a client may take to send its headers and body nor the number
of open connections, and answers malformed HTTP with plain text. The protocol here:

  - gives each request read_timeout_s from its first byte (or from the connection's opening) to
    the end of its body; then 408 (JSON) and the connection is closed. Idle keep-alive
    connections are closed by uvicorn's keep-alive timeout as before;
  - refuses connections beyond max_connections with 503 (JSON) as soon as they open, so that
    idle sockets can never use up the file limit (serve() keeps the cap below it);
  - answers malformed HTTP with the documented JSON error: 400 `bad_request` with h11's reason,
    413 `body_too_large` for a Content-Length too long to parse.

The log: every condition of the edge and of asyncio's accept loop is one line, at most one per
condition every RATE_S seconds, with the count of those left out; no tracebacks.
"""
from __future__ import annotations

import logging
import re
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from bertqa.serve.errors import ServeError
from bertqa.serve.guard import EDGE_STATUS
from bertqa.serve.metrics import ServeMetrics

log = logging.getLogger("bertqa.serve.edge")
RATE_S = 10.0
HEAD_KEPT = 16384                      # bytes of a request head kept to explain a parse error
HUGE_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*\d{19,}", re.IGNORECASE)


def edge_protocol(metrics: ServeMetrics, read_timeout_s: float, max_connections: int, max_body_bytes: int):
    """The H11Protocol class uvicorn.Config(http=...) takes, with these bounds."""

    class EdgeProtocol(H11Protocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._deadline = None              # TimerHandle of the request being read
            self._head = b""
            self._error: Exception | None = None
            next_event = self.conn.next_event

            def remember_error():              # uvicorn drops h11's reason; keep it for the reply
                try:
                    return next_event()
                except h11.RemoteProtocolError as e:
                    self._error = e
                    raise
            self.conn.next_event = remember_error

        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                warn("refusing connections: %d open, the limit is %d", len(self.connections) - 1,
                     max_connections)
                self._reply(ServeError(503, "too_many_connections",
                                       f"the server holds {max_connections} connections (the limit); "
                                       "retry later", headers={"Retry-After": "1"}), "Service Unavailable")
                return
            self._arm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()                    # the next request on a kept-alive connection
            if self.conn.their_state is h11.IDLE and len(self._head) < HEAD_KEPT:
                self._head += data[:HEAD_KEPT]
            super().data_received(data)
            if self.cycle is not None and not self.cycle.more_body:
                self._disarm()                 # all of it arrived: the app's time is not bounded here
                self._head = b""

        def on_response_complete(self):
            self._head = b""
            super().on_response_complete()

        def send_400_response(self, msg: str) -> None:
            reason = str(self._error) if self._error else msg
            if HUGE_LENGTH.search(self._head):
                error = ServeError(413, "body_too_large", f"the body is larger than {max_body_bytes} "
                                   "bytes (Content-Length)")
                warn("refused a Content-Length too long to parse")
            else:
                error = ServeError(400, "bad_request", f"malformed HTTP request: {reason}")
                warn("malformed HTTP request: %s", reason)
            self._reply(error, {400: "Bad Request", 413: "Content Too Large"}[error.status])

        # -- the read deadline ---------------------------------------------------------------
        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _read_timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
                return                          # answering: not a slow read
            warn("closed connections that sent no complete request within %g s", read_timeout_s)
            self._reply(ServeError(408, "read_timeout", f"the request (headers and body) did not arrive "
                                   f"within {read_timeout_s:g} s"), "Request Timeout")

        def _reply(self, error: ServeError, reason: str) -> None:
            """Write error as a raw response and close; a request the app was reading ends as
            disconnected (CountRequests counts it under error.status)."""
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if cycle.response_started:
                    self.transport.close()
                    return
                cycle.scope[EDGE_STATUS] = error.status
                cycle.disconnected = True
                cycle.message_event.set()
            else:
                metrics.requests.inc("other", str(error.status))
            metrics.errors.inc(error.code)
            self._disarm()
            self.transport.write(error.raw_http(reason))
            self.transport.close()

    return EdgeProtocol


# -- the log --------------------------------------------------------------------------------

class OncePerCondition(logging.Filter):
    """At most one record per (logger, message template) every `every` seconds, as one line:
    an exception becomes ': Type: message' instead of a traceback. The next record let through
    says how many were left out."""

    def __init__(self, every: float = RATE_S):
        super().__init__()
        self.every = every
        self._last: dict[tuple, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last, left_out = self._last.get(key, (-1e9, 0))
        if now - last < self.every:
            self._last[key] = (last, left_out + 1)
            return False
        self._last[key] = (now, 0)
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            message += f": {type(e).__name__}: {e}"
        if left_out:
            message += f" ({left_out} more like this in the last {now - last:.0f} s)"
        record.msg, record.args, record.exc_info, record.exc_text = message, None, None, None
        return True


QUIET = OncePerCondition()


def warn(message: str, *args) -> None:
    log.warning(message, *args)


def quiet_logs() -> None:
    """One line per condition for the edge, uvicorn's own errors and asyncio's accept loop."""
    edge = logging.getLogger("bertqa.serve.edge")
    if not edge.handlers:                  # uvicorn's look: 'WARNING:  message'
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
        edge.addHandler(handler)
        edge.propagate = False
    for name in ("bertqa.serve.edge", "uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if QUIET not in logger.filters:
            logger.addFilter(QUIET)
