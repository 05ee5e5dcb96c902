"""The HTTP edge, before any routing: request counting, admission, body size, media type, UTF-8.

Pure ASGI middlewares, so that a full queue is refused before the body is read or parsed, an
oversized body is refused without keeping it (by Content-Length, or as soon as the chunks read
pass the limit), and the status of every response, errors included, is counted: a client that
closed the connection before its answer counts as 499, not as a server error.

A refused body is read and thrown away (at most drain_bytes) before the error is sent: a client
that sends its whole body before reading (urllib, requests) would otherwise see a connection
reset instead of the JSON error, since closing a socket with unread data resets it.
"""
from __future__ import annotations

from typing import Callable

from starlette.datastructures import Headers

from bertqa.serve.batcher import Overloaded, Ticket
from bertqa.serve.errors import ServeError
from bertqa.serve.metrics import ServeMetrics

BODY_METHODS = ("POST", "PUT", "PATCH")
EDGE_STATUS = "bertqa.edge_status"     # scope key: a status the connection protocol answered with
TICKET = "bertqa.ticket"               # scope key: the request's place in the batcher's queue
RETRY_AFTER_S = 1


class CountRequests:
    """bertqa_requests_total{path, code} for every request, and bertqa_requests_in_flight for the
    answering ones (/v1/...). Unknown paths count as 'other', so that scanners cannot grow the
    label set. No response and a disconnect seen: 499; no response otherwise: 500."""

    def __init__(self, app, metrics: ServeMetrics, paths: set[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status, gone = None, False

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receive_watching():
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        path = scope["path"] if scope["path"] in self.paths else "other"
        answering = 1 if path.startswith("/v1/") else 0
        self.metrics.in_flight.add(answering)
        try:
            await self.app(scope, receive_watching, send_status)
        finally:
            self.metrics.in_flight.add(-answering)
            if status is None:
                status = scope.get(EDGE_STATUS) or (499 if gone else 500)
            self.metrics.requests.inc(path, str(status))


class BodyGuard:
    """Requests to `paths` take a place in the queue first (else 503 at once); their bodies must
    be JSON (application/json or application/*+json), at most max_bytes, valid UTF-8. The
    ticket goes to the route in scope[TICKET] and is given back when the request ends. Other
    paths go straight to routing (and its 404/405)."""

    def __init__(self, app, max_bytes: int, metrics: ServeMetrics, paths: set[str],
                 admit: Callable[[], Ticket], drain_bytes: int):
        self.app, self.max_bytes, self.metrics, self.paths = app, max_bytes, metrics, paths
        self.admit, self.drain_bytes = admit, drain_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        body = Body(receive)
        try:
            ticket = self.admit()
        except Overloaded as e:
            return await self._refuse(ServeError(503, "overloaded", f"{e}; retry later",
                                                 headers={"Retry-After": str(RETRY_AFTER_S)}),
                                      body, scope, receive, send)
        try:
            try:
                data = await self._read(scope, body)
            except ServeError as e:
                return await self._refuse(e, body, scope, receive, send)
            if data is None:                               # the client went away
                return
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}

            scope[TICKET] = ticket
            await self.app(scope, replay, send)
        finally:
            ticket.release()

    async def _refuse(self, error: ServeError, body: "Body", scope, receive, send):
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        expects_continue = "100-continue" in headers.get("expect", "").lower()   # has sent nothing yet
        if not expects_continue and not (length.isdigit() and int(length) > self.drain_bytes):
            if not await body.drain(self.drain_bytes):
                return                                     # gone while we read
        await error.response(self.metrics)(scope, receive, send)

    async def _read(self, scope, body: "Body") -> bytes | None:
        headers = Headers(scope=scope)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            raise ServeError(415, "unsupported_media_type",
                             f"the body must be JSON with Content-Type: application/json, got "
                             f"{media or 'no Content-Type'}")
        too_large = ServeError(413, "body_too_large", f"the body is larger than {self.max_bytes} bytes")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise too_large
        chunks, total = [], 0
        while not body.complete:
            chunk = await body.next()
            if chunk is None:
                return None
            total += len(chunk)
            if total > self.max_bytes:
                raise too_large
            chunks.append(chunk)
        data = b"".join(chunks)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ServeError(400, "invalid_utf8", f"the body is not valid UTF-8 (byte {e.start}: "
                             f"{e.reason})") from None
        return data


class Body:
    """The request body as it arrives, remembering whether it is complete or the client left."""

    def __init__(self, receive):
        self.receive, self.complete, self.gone = receive, False, False

    async def next(self) -> bytes | None:
        """The next chunk; None once the client has gone."""
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.gone = True
            return None
        self.complete = not message.get("more_body", False)
        return message.get("body", b"")

    async def drain(self, limit: int) -> bool:
        """Read and drop the rest of the body, up to limit bytes; False if the client left."""
        dropped = 0
        while not self.complete and not self.gone and dropped <= limit:
            dropped += len(await self.next() or b"")
        return not self.gone
