"""Every error the server answers is one JSON shape: {"error": {code, message, field, errors}}."""
from __future__ import annotations

import json

from starlette.responses import Response


class ServeError(Exception):
    """An HTTP error with a machine-readable code and, where it applies, the request field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 errors: list[dict] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.errors = errors if errors is not None else [{"field": field, "message": message}]
        self.headers = headers

    def body(self) -> bytes:
        body = {"error": {"code": self.code, "message": self.message, "field": self.field,
                          "errors": self.errors}}
        # ASCII-escaped: a field name from the request may hold a lone surrogate, which is
        # valid in JSON text but cannot be encoded as UTF-8
        return json.dumps(body, ensure_ascii=True).encode("ascii")

    def response(self, metrics=None) -> Response:
        if metrics is not None:
            metrics.errors.inc(self.code)
        return Response(self.body(), status_code=self.status, headers=self.headers,
                        media_type="application/json")

    def raw_http(self, reason: str) -> bytes:
        """The whole HTTP/1.1 response, closing the connection: for replies written below the
        ASGI app (by the connection protocol, before or without a request)."""
        body = self.body()
        head = (f"HTTP/1.1 {self.status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n")
        head += "".join(f"{k}: {v}\r\n" for k, v in (self.headers or {}).items())
        return (head + "\r\n").encode("ascii") + body


class ClientGone(Exception):
    """The client closed the connection before its answer: nothing is sent, it counts as 499."""


def field_name(loc: tuple) -> str | None:
    """A pydantic error location -> 'items[2].context'; None for the body as a whole."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None
