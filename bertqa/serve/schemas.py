"""The JSON the server reads and writes, as pydantic models (and so the OpenAPI schema).

Request models are built per ServeConfig, so the schema states the limits the server enforces
(maxLength, maximum, maxItems). They are strict: a number is not a string, "3" is not an
integer, and unknown fields are errors. No `from __future__ import annotations` here: the
models are built inside a function and pydantic must see the real types.
"""
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
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


def request_models(cfg: ServeConfig):
    """(AnswerRequest, BatchRequest) with cfg's limits in their schema."""

    class AnswerRequest(BaseModel):
        """One question about one context."""
        model_config = ConfigDict(extra="forbid", strict=True)

        question: Annotated[str, Field(min_length=1, max_length=cfg.max_question_chars,
                                       description="the question; its first max_question_len tokens are used")]
        context: Annotated[str, Field(min_length=1, max_length=cfg.max_context_chars,
                                      description=f"the text to answer from; long ones are cut into "
                                                  f"overlapping windows, at most {cfg.max_windows} per request")]
        top_k: Annotated[int, Field(ge=1, le=cfg.max_top_k, description="how many answers, best first")] = 1
        max_answer_len: Annotated[int | None, Field(ge=1, le=cfg.max_answer_len_limit,
                                                    description="longest answer in tokens (server default if null)")] = None
        allow_no_answer: Annotated[bool | None, Field(description="may answer nothing (start = -1), SQuAD v2 style")] = None

        @field_validator("question", "context")
        @classmethod
        def _has_text(cls, value: str) -> str:
            return check_text_field(value)

    class BatchRequest(BaseModel):
        """Many (question, context) pairs at once, each with its own options."""
        model_config = ConfigDict(extra="forbid", strict=True)

        items: Annotated[list[AnswerRequest], Field(min_length=1, max_length=cfg.max_items)]

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
                                  "method_not_allowed, internal")
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
