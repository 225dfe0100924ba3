"""The README's `## Deploy` section: tables that match the Terraform, a whole guide."""

from __future__ import annotations

import re

import pytest

from tests.deploy import configs

SECTION = configs.readme_section("Deploy")


def _jobs_fields() -> list[str]:
    # Attribute names at the top level of the jobs object type.
    text = configs.expression(configs.variables()["jobs"]["type"])
    inner = text[text.index("({") + 2 : text.rindex("})")]
    fields, depth = [], 0
    for token in re.finditer(r"[(){}\[\]]|\b(\w+) = ", inner):
        if token.group(0) in "({[":
            depth += 1
        elif token.group(0) in ")}]":
            depth -= 1
        elif depth == 0:
            fields.append(token.group(1))
    return fields


def test_inputs_table_matches_variables_tf():
    expected = configs.inputs_table()
    assert expected in configs.readme_tables(SECTION), (
        "README's inputs table is out of date; it should read:\n" + expected
    )


def test_outputs_table_matches_outputs_tf():
    expected = configs.outputs_table()
    assert expected in configs.readme_tables(SECTION), (
        "README's outputs table is out of date; it should read:\n" + expected
    )


def test_every_jobs_field_is_documented():
    fields = _jobs_fields()
    assert "attempt_deadline_s" in fields
    assert "params" in fields
    table = next(t for t in configs.readme_tables(SECTION) if "| field |" in t)
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert documented == fields


def test_schedule_table_matches_terraform_and_render():
    for job_id, job in configs.default_jobs().items():
        service = next(
            s for s in configs.render_services()
            if configs.render_invocation(s)[0] == job_id
        )  # fmt: skip
        row = next(line for line in SECTION.splitlines() if f"| `{job_id}` |" in line)
        assert f"`{job['schedule']}`" in row
        assert f"`{service['schedule']}`" in row


@pytest.mark.parametrize(
    "topic",
    [
        "### Prerequisites",
        "make deploy",
        "terraform -chdir=terraform init",
        "terraform -chdir=terraform apply",
        "Terraform state holds the secrets",
        "CRON_SECRET_PREVIOUS",
        "TF_VAR_cron_secret_previous",
        "ingress_settings",
        "enable_public_invoker",
        "### Render fallback (Blueprint)",
        "sync: false",
        "scripts/call-function.sh",
        "--fail-with-body",
        "gcloud scheduler jobs run",
        "health?deep=1",
    ],
)
def test_deploy_guide_covers(topic):
    assert topic in SECTION
