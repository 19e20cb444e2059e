"""A property-based OpenAPI fuzzer (schemathesis) against the real service on 127.0.0.1: no
parameter, body or header reaches a 5xx other than the documented 503/507, and every status code
and content type it answers is in its OpenAPI document. Examples are bounded to keep the test
under a minute."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from live_http import running_service
from schemathesis.checks import content_type_conformance, not_a_server_error, status_code_conformance

from serving.http.settings import ServiceSettings

MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def api_schema(make_model):
    model = make_model("openapi-fuzz")
    service_settings = ServiceSettings(model=model, reload_min_interval_s=3600, watch_latest=False)
    with running_service(service_settings) as client:
        yield schemathesis.openapi.from_url(f"{client.base_url}/openapi.json")


def _check(case) -> None:
    response = case.call()
    if response.status_code in (503, 507):  # documented refusals (no store, full live corpus), never a crash
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), case.as_curl_command()
    else:
        case.validate_response(response, checks=[not_a_server_error])
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance])


def test_no_server_error_and_every_answer_is_documented(api_schema):
    # Each operation gets its own bounded Hypothesis run (schemathesis' pytest plugin is not used:
    # plain `given` over each operation's strategy keeps the test independent of pytest internals).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    bounded = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    for operation in operations:

        @bounded
        @given(case=operation.as_strategy())
        def fuzz(case):
            _check(case)

        fuzz()
