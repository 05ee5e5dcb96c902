"""GET /: a page to try the server in a browser, and GET /info, what it runs and its stories.

The page is one static file (static/index.html: HTML, CSS and plain JavaScript, nothing loaded
from elsewhere, so it works offline). It reads /info, then posts to /v1/answer like any client.
"""
from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from bertqa.serve.config import ServeConfig
from bertqa.serve.schemas import ServerInfo


def page_html() -> str:
    return resources.files("bertqa.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def add_page(app: FastAPI, info: dict, config: ServeConfig) -> None:
    """Routes / and /info; info: model, target, precision, backend."""
    from bertqa.data.readers import builtin_stories
    html = page_html()
    stories = [{"title": s.title, "context": s.context, "questions": s.questions} for s in builtin_stories()]
    about = ServerInfo(**info, max_context_chars=config.max_context_chars,
                       max_question_chars=config.max_question_chars, max_top_k=config.max_top_k)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        # the page's own rules: no script or style from anywhere but this server
        csp = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-cache"})

    @app.get("/info")
    async def server_info() -> dict:
        """What the server runs (model, target, precision, backend), its limits, and the built-in
        stories the page offers."""
        return {**about.model_dump(), "stories": stories}
