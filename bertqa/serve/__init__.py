"""`bertqa serve`: the QA model behind an HTTP API with dynamic batching (needs bertqa[serve]).

    config.py   ServeConfig: batching, queue, timeout and input limits
    schemas.py  request and response models (pydantic; the OpenAPI schema)
    guard.py    the HTTP edge: request counting, body size, media type, UTF-8
    batcher.py  the bounded queue and the worker thread that runs batches through the model
    metrics.py  Prometheus text
    app.py      routes, error replies, lifespan; serve() runs it on uvicorn

Only config is imported here, so that `import bertqa.serve` works without fastapi.
"""
from bertqa.serve.config import ServeConfig

__all__ = ["ServeConfig"]
