"""Ray's own HTTP errors in the JSON of `bertqa serve`: a middleware for Ray Serve's proxy.

Ray's proxy answers some requests before any replica sees them, in text/plain: 503 "Request
dropped due to backpressure" when max_queued_requests are already waiting, 503 while no
replica is up, 404 before the application is deployed, 500 when a replica died with the
request, 408 on its own request timeout. This
middleware rewrites those (text/plain, status >= 400) into the {"error": {...}} body that the
replicas send, keeping the status and headers (Retry-After). The replicas' own answers are JSON
(or /metrics text with status 200) and pass unchanged.

Ray reads it from the environment of its processes, when the proxy starts:
    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=bertqa.serve.ray_proxy:middlewares
bertqa.ray_cluster sets this for the local Ray it starts; on a cluster, set it for `ray start`.
"""
from __future__ import annotations

from starlette.middleware import Middleware

from bertqa.serve.errors import ServeError

CALLBACK = "bertqa.serve.ray_proxy:middlewares"


def error_code(status: int, text: str) -> str:
    """The bertqa error code for one of Ray's text replies."""
    if status in (429, 503) and "backpressure" in text:
        return "overloaded"
    return {503: "not_ready", 404: "not_found", 408: "timeout", 504: "timeout"}.get(status, "internal")


class JSONRayErrors:
    """Pure ASGI: buffers a text/plain error reply and sends it as bertqa's JSON error."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held = {}

        async def send_json_errors(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"text/plain"):
                    held.update(start=message, body=b"")
                    return
            elif held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body", False):
                    return
                start, text = held.pop("start"), held.pop("body").decode("utf-8", "replace").strip()
                keep = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers") or []
                        if k.lower() not in (b"content-type", b"content-length")}
                error = ServeError(start["status"], error_code(start["status"], text),
                                   f"{text or 'Ray Serve refused the request'} (Ray Serve proxy); retry later"
                                   if start["status"] in (429, 503) else text, headers=keep)
                return await error.response()(scope, receive, send)
            await send(message)

        await self.app(scope, receive, send_json_errors)


def middlewares() -> list:
    return [Middleware(JSONRayErrors)]
