"""Fuzz the OpenAPI schema of a running `bertqa serve` with schemathesis: valid and invalid
requests drawn from the schema get no 5xx, and responses are as documented. Bounded: 15
examples per operation and mode, derandomized so that CI runs the same ones.

The schema is loaded from the running server inside the test (schemathesis.pytest.from_fixture
relies on a pytest internal that pytest 9 removed), one test per operation.
"""
import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (schemathesis brings hypothesis)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (not_a_server_error, response_schema_conformance,  # noqa: E402
                                 status_code_conformance)

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
CASES = [("POST", "/v1/answer", POSITIVE), ("POST", "/v1/answer", NEGATIVE),
         ("POST", "/v1/answer:batch", POSITIVE), ("POST", "/v1/answer:batch", NEGATIVE),
         ("GET", "/healthz", POSITIVE), ("GET", "/readyz", POSITIVE), ("GET", "/metrics", POSITIVE)]
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.mark.parametrize("method, path, mode", CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_openapi_fuzz_no_server_errors(server, method, path, mode):
    operation = schemathesis.openapi.from_url(server.url + "/openapi.json")[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(checks=CHECKS, timeout=30)

    run()

