"""schemathesis against the server's OpenAPI schema: no generated request gets a 5xx (bounded: a few
examples per operation, as an organiser and as a participant)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (test extra)")
from hypothesis import HealthCheck, Phase, given, settings

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_no_server_errors_on_generated_requests(world, tmp_path):
    from _server_fixtures import drain, predictions_csv, upload

    c = world["client"]
    upload(c, world["a"], world["phase"], predictions_csv(tmp_path / "a.csv"))
    drain(world["cfg"])
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", c.app)
    failures = []

    def run(op, person, n):
        @given(case=op.as_strategy())
        @settings(max_examples=n, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=person.headers)
            if response.status_code >= 500:
                failures.append(f"{person.name} {op.method.upper()} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        check()

    for person, n in ((world["org"], 4), (world["a"], 2)):
        for result in schema.get_all_operations():
            run(result.ok(), person, n)
    assert not failures, "\n".join(sorted(set(failures))[:20])
