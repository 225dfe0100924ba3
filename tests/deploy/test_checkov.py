"""checkov over terraform/: zero failed checks, and every skip explained in place."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import pytest

from tests.deploy import configs

CHECKOV = configs.REPO / ".local" / "tools-venv" / "bin" / "checkov"

# `#checkov:skip=CKV_X_1:reason` as the first line inside a resource block.
_SKIP = re.compile(r"^\s*#checkov:skip=(?P<check>CKV2?_[A-Z]+_\d+):(?P<reason>.*)$")
_RESOURCE = re.compile(r'^resource "(?P<type>[\w-]+)" "(?P<name>[\w-]+)" \{$')


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run `make tools` (`make test` does)")
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(configs.TERRAFORM_DIR),
         "--framework", "terraform", "--output", "json", "--compact",
         # Offline: no platform download, no version check.
         "--skip-download"],
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
             "BC_SKIP_MAPPING": "TRUE"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert isinstance(document, dict), "expected one framework's report"
    return document


def _skips_in_source() -> dict[tuple[str, str], str]:
    """(check id, resource address) -> reason, for every skip comment."""
    skips: dict[tuple[str, str], str] = {}
    for path in sorted(configs.TERRAFORM_DIR.glob("*.tf")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            match = _SKIP.match(line)
            if match is None:
                continue
            opener = _RESOURCE.match(lines[number - 1]) if number else None
            assert opener is not None, (
                f"{path.name}:{number + 1}: a checkov skip must be the first line "
                "inside the resource it concerns"
            )
            address = f"{opener['type']}.{opener['name']}"
            skips[(match["check"], address)] = match["reason"].strip()
    return skips


def test_checkov_reports_zero_failed_checks(report):
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0
    assert summary["resource_count"] > 0


def test_every_checkov_skip_sits_in_its_resource_with_a_reason():
    for (check, address), reason in _skips_in_source().items():
        assert len(reason.split()) >= 8, f"{check} on {address}: give the reason"


def test_every_checkov_skip_silences_a_check_that_applies(report):
    skipped = {
        (c["check_id"], c["resource"].split("[")[0])
        for c in report["results"]["skipped_checks"]
    }
    assert set(_skips_in_source()) == skipped
