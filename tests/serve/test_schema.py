"""schemathesis generates requests from the server's own OpenAPI schema, ones that follow it and
ones that break it, against a real `loom serve`: none may get a 5xx, and the server keeps serving.

(schemathesis' pytest plugin does not load under this pytest, so each operation's strategy is
drawn with Hypothesis directly.)"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error


def operations(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in found} >= {"POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models",
                                          "POST /v1/feedback", "GET /health"}
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_generated_request_gets_a_server_error(server, mode):
    seen = {}
    for operation in operations(server):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(base_url=server.url, timeout=120)
            case.validate_response(response, checks=[not_a_server_error])
            seen[response.status_code] = seen.get(response.status_code, 0) + 1

        try:
            check()
        except Unsatisfiable:  # an operation with no parameters and no body has nothing to break
            assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET", operation.label
    assert all(status < 500 for status in seen), seen
    assert (200 in seen) if mode is GenerationMode.POSITIVE else any(400 <= s < 500 for s in seen), seen
    assert server.get("/health")[0] == 200
