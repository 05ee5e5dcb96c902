"""The HTTP edge, before any routing: request counting, body size, media type and UTF-8.

Pure ASGI middlewares, so that an oversized body is refused without reading it whole (by
Content-Length, or as soon as the chunks read pass the limit) and so that the status of every
response, errors included, is counted.
"""
from __future__ import annotations

from starlette.datastructures import Headers

from bertqa.serve.errors import ServeError
from bertqa.serve.metrics import ServeMetrics

BODY_METHODS = ("POST", "PUT", "PATCH")


class CountRequests:
    """bertqa_requests_total{path, code} for every request, and bertqa_requests_in_flight for the
    answering ones (/v1/...). Unknown paths count as 'other', so that scanners cannot grow the
    label set."""

    def __init__(self, app, metrics: ServeMetrics, paths: set[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500                                   # what the client sees if the app raises

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"] if scope["path"] in self.paths else "other"
        answering = 1 if path.startswith("/v1/") else 0
        self.metrics.in_flight.add(answering)
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.add(-answering)
            self.metrics.requests.inc(path, str(status))


class BodyGuard:
    """Bodies sent to `paths` must be JSON (application/json or application/*+json), at most
    max_bytes, valid UTF-8. Other paths go straight to routing (and its 404/405)."""

    def __init__(self, app, max_bytes: int, metrics: ServeMetrics, paths: set[str]):
        self.app, self.max_bytes, self.metrics, self.paths = app, max_bytes, metrics, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        try:
            body = await self._read(scope, receive)
        except ServeError as e:
            return await e.response(self.metrics)(scope, receive, send)
        if body is None:                               # the client went away
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, scope, receive) -> bytes | None:
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
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ServeError(400, "invalid_utf8", f"the body is not valid UTF-8 (byte {e.start}: "
                             f"{e.reason})") from None
        return body
