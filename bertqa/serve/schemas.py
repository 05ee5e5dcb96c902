"""The JSON the server reads and writes, as pydantic models (and so the OpenAPI schema).

Request models are built per ServeConfig, so the schema states the limits the server enforces
(maxLength, maximum, maxItems; the body limit in bytes is in the routes' requestBody). They are
strict: a number is not a string, "3" is not an integer, and unknown fields are errors; but 6.0
is the integer 6, as in JSON Schema. No `from __future__ import annotations` here: the
models are built inside a function and pydantic must see the real types.
"""
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator
from pydantic_core import PydanticCustomError

from bertqa.serve.config import ServeConfig


def check_text_field(value: str) -> str:
    """Whitespace-only text and lone surrogates (JSON allows "\\ud800"; UTF-8 does not) are errors."""
    if not value.strip():
        raise PydanticCustomError("whitespace_only", "Value is whitespace only")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError("invalid_unicode", "Value has a lone surrogate at character "
                                  "{at}; text must be valid Unicode", {"at": e.start}) from None
    return value


def whole_number(value):
    """6.0 -> 6 (a JSON-Schema integer); anything else is left to the strict int check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def request_models(cfg: ServeConfig):
    """(AnswerRequest, BatchRequest) with cfg's limits in their schema."""

    class Pair(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        question: Annotated[str, Field(min_length=1, max_length=cfg.max_question_chars,
                                       description="the question; its first max_question_len tokens are used")]
        top_k: Annotated[int, BeforeValidator(whole_number),
                         Field(ge=1, le=cfg.max_top_k, description="how many answers, best first")] = 1
        max_answer_len: Annotated[Annotated[int, BeforeValidator(whole_number),
                                            Field(ge=1, le=cfg.max_answer_len_limit)] | None,
                                  Field(description="longest answer in tokens (server default if null)")] = None
        allow_no_answer: Annotated[bool | None, Field(description="may answer nothing (start = -1), SQuAD v2 style")] = None

        @field_validator("question", "context", check_fields=False)
        @classmethod
        def _has_text(cls, value: str) -> str:
            return check_text_field(value)

    def pair_model(name: str, doc: str, max_context_chars: int):
        context = Annotated[str, Field(min_length=1, max_length=max_context_chars,
                                       description=f"the text to answer from; long ones are cut into "
                                                   f"overlapping windows, at most {cfg.max_windows} per request")]
        return create_model(name, __base__=Pair, __doc__=doc, context=(context, ...))

    AnswerRequest = pair_model("AnswerRequest", "One question about one context.", cfg.max_context_chars)
    BatchItem = pair_model("BatchItem", "One pair of a batch (contexts are limited so that the whole "
                           f"batch fits in {cfg.max_body_bytes} bytes).", cfg.batch_context_chars)

    class BatchRequest(BaseModel):
        """Many (question, context) pairs at once, each with its own options."""
        model_config = ConfigDict(extra="forbid", strict=True)

        items: Annotated[list[BatchItem], Field(min_length=1, max_length=cfg.max_items)]

    return AnswerRequest, BatchRequest


class AnswerOut(BaseModel):
    text: str = Field(description="a slice of the context: context[start:end]")
    score: float = Field(description="probability of the span within its window")
    start: int = Field(description="character offset in the context; -1 for no answer")
    end: int = Field(description="exclusive character offset; -1 for no answer")


class ModelInfo(BaseModel):
    model: str
    target: str
    precision: str
    time_ms: float = Field(description="server time for the request: queue, inference and decoding")


class AnswerResponse(ModelInfo):
    answers: list[AnswerOut]


class PairAnswers(BaseModel):
    answers: list[AnswerOut]


class BatchResponse(ModelInfo):
    results: list[PairAnswers] = Field(description="one entry per item, in request order")


class FieldProblem(BaseModel):
    field: str | None = Field(description="where in the request, e.g. 'context' or 'items[2].top_k'")
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="invalid_field, invalid_json, invalid_utf8, body_too_large, "
                                  "unsupported_media_type, overloaded, not_ready, timeout, not_found, "
                                  "method_not_allowed, bad_request, read_timeout, too_many_connections, "
                                  "internal")
    message: str
    field: str | None = None
    errors: list[FieldProblem] = []


class ErrorResponse(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="'ready' or 'not ready'")
    model: str
    target: str
    precision: str


class ServerInfo(BaseModel):
    """What the server runs and the limits a client should know (the page shows them)."""
    model: str
    target: str
    precision: str
    backend: str = Field(description="what runs the Linear layers")
    max_context_chars: int
    max_question_chars: int
    max_top_k: int
