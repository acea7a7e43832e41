"""A bounded schemathesis run against a real gateway's OpenAPI schema, on loopback.

Every generated request, valid or not, must get a non-5xx answer, and every error must keep
the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``. Run it alone with::

    .venv/bin/python -m pytest tests/auth/test_fuzz.py
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings

from app.auth.config import generate_key, hash_key
from tests.conftest import small_config
from tests.support.procs import Proc, gateway

pytestmark = pytest.mark.e2e

KEY = generate_key()
ADMIN = "adm-fuzz-" + "z" * 32


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("fuzz")
    config = small_config()
    config["auth"] = {
        "keys": {"fuzz": {"hash": hash_key(KEY), "rate_limit": {"requests_per_minute": 100000}}}
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with gateway(path, tmp, env={"PARETO_ADMIN_KEY": ADMIN, "PARETO_WATCH_CONFIG": "false"}) as gw:
        yield gw


def check(case: schemathesis.Case) -> None:
    key = ADMIN if case.path.startswith("/admin") else KEY
    response = case.call(headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, response.text[:300]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)


def test_no_5xx_and_every_error_is_openai_shaped(fuzz_gateway: Proc) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/route", "/admin/keys"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            check(case)

        fuzz()
