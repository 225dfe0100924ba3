"""functions/openapi.yaml matches the code, and schemathesis finds no 5xx and no
undocumented error body on the emulated targets."""

from __future__ import annotations

import ast

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.emulator import FUNCTIONS_DIR
from tests.support import TEST_SECRET, create_log_table

SPEC_PATH = FUNCTIONS_DIR / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
schema = schemathesis.openapi.from_path(str(SPEC_PATH))


def _targets() -> set[str]:
    tree = ast.parse((FUNCTIONS_DIR / "main.py").read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d).endswith("http") for d in node.decorator_list)
    }


def test_every_target_in_main_has_a_path_and_nothing_else():
    assert {path.strip("/") for path in SPEC["paths"]} == _targets()


def test_every_job_parameter_in_the_spec_is_accepted_and_others_refused(call, conn):
    create_log_table(conn)
    conn.execute("truncate housekeeper.runs")
    post = SPEC["paths"]["/cleanup_logs"]["post"]
    names = set()
    for parameter in post["parameters"]:
        if "$ref" in parameter:
            parameter = SPEC["components"]["parameters"][
                parameter["$ref"].split("/")[-1]
            ]
        names.add(parameter["name"])
    body = SPEC["components"]["schemas"]["CleanupBody"]["properties"]
    assert names == set(body)
    samples = {
        "retention_days": 30,
        "dry_run": True,
        "time_budget_s": 60,
        "trigger": "manual",
        "skip_if_succeeded_within": "6h",
    }
    assert set(samples) == names
    for name, value in samples.items():
        reply = call("cleanup_logs", json={name: value, "dry_run": True})
        assert reply.status == 200, (name, reply.text)
    assert call("cleanup_logs", json={"undocumented": 1}).status == 400


@pytest.fixture
def targets(emulator, conn, r2_env):
    create_log_table(conn)
    return {
        "/health": emulator("health").url.rstrip("/"),
        "/cleanup_logs": emulator("cleanup_logs", FUNCTION_TIMEOUT_S="3600").url.rstrip(
            "/"
        ),
        "/migrate_cdn_to_r2": emulator(
            "migrate_cdn_to_r2", FUNCTION_TIMEOUT_S="3600"
        ).url.rstrip("/"),
    }


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis_no_5xx_and_documented_errors(case, targets):
    session = requests.Session()
    response = case.call(
        base_url=targets[case.path],
        session=session,
        headers={"Authorization": f"Bearer {TEST_SECRET}"},
        timeout=30,
    )
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    if 400 <= response.status_code < 500 and response.status_code != 409:
        assert set(response.json()["error"]) >= {"code", "message"}
