"""Read the deploy configs (Terraform, render.yaml) the way the tests check them.

Terraform is parsed with python-hcl2, so every check here works without a
Terraform binary; where one is present, `evaluate_locals` also lets Terraform
itself compute the values (offline: variables.tf and locals.tf use no provider).

`python -m tests.deploy.configs tables` prints the README's inputs and outputs
tables as variables.tf and outputs.tf define them.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import hcl2
import yaml
from croniter import croniter

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
RENDER_YAML = REPO / "render.yaml"
README = REPO / "README.md"
MAIN_PY = REPO / "functions" / "main.py"
TFVARS_EXAMPLE = TERRAFORM_DIR / "terraform.tfvars.example"

TERRAFORM_FILES = (
    "versions.tf",
    "variables.tf",
    "locals.tf",
    "main.tf",
    "secrets.tf",
    "scheduler.tf",
    "monitoring.tf",
    "outputs.tf",
)

# Cloud Scheduler waits at most 30 minutes for an HTTP target.
SCHEDULER_MAX_DEADLINE_S = 1800
SCHEDULER_MIN_DEADLINE_S = 15

# Variables Render itself reads; they configure the platform, not the handler.
RENDER_PLATFORM_ENV = frozenset({"PYTHON_VERSION"})

# What each job's handler accepts besides its own parameters (see functions/main.py).
COMMON_PARAMS = frozenset(
    {"dry_run", "time_budget_s", "trigger", "skip_if_succeeded_within"}
)
JOB_PARAMS: dict[str, frozenset[str]] = {
    "cleanup-logs": COMMON_PARAMS | {"retention_days"},
    "migrate-cdn-to-r2": COMMON_PARAMS | {"media_type", "batch_size"},
}

# Inputs the README needs to run a plan; nothing here is a real secret.
PLAN_VARIABLES = {
    "project_id": "example-project-1",
    "alert_email": "ops@example.com",
    "database_url": "postgresql://housekeeper:example@127.0.0.1:5432/app",
}

_OPTIONS = hcl2.SerializationOptions(
    strip_string_quotes=True,
    explicit_blocks=False,
    with_comments=False,
    preserve_heredocs=False,
)


def load_hcl(path: Path) -> dict[str, Any]:
    """Parse one HCL file into plain Python values, string quotes removed."""
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=_OPTIONS)


@cache
def terraform() -> dict[str, dict[str, Any]]:
    """Every Terraform file of the module, parsed, by file name."""
    return {name: load_hcl(TERRAFORM_DIR / name) for name in TERRAFORM_FILES}


def _labelled(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for document in terraform().values():
        for block in document.get(kind, []):
            found.update(block)
    return found


def variables() -> dict[str, dict[str, Any]]:
    """`variable` blocks by name."""
    return _labelled("variable")


def outputs() -> dict[str, dict[str, Any]]:
    """`output` blocks by name."""
    return _labelled("output")


def resources(kind: str) -> dict[str, dict[str, Any]]:
    """`resource "<kind>" "<name>"` blocks of one kind, by name."""
    found: dict[str, dict[str, Any]] = {}
    for block in _resource_blocks(kind):
        found.update(block)
    return found


def _resource_blocks(kind: str) -> Iterator[dict[str, Any]]:
    for document in terraform().values():
        for block in document.get("resource", []):
            if kind in block:
                yield block[kind]


def all_resources() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) for every resource of the module."""
    for document in terraform().values():
        for block in document.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    yield kind, name, body


def locals_() -> dict[str, Any]:
    """Every `locals` value, merged across files."""
    merged: dict[str, Any] = {}
    for document in terraform().values():
        for block in document.get("locals", []):
            merged.update(block)
    return merged


def expression(value: Any) -> str:
    """An HCL expression as hcl2 serialises it, without the `${...}` wrapper."""
    text = str(value)
    if text.startswith("${") and text.endswith("}"):
        return text[2:-1]
    return text


def default_jobs() -> dict[str, dict[str, Any]]:
    """The `jobs` variable's default map."""
    default: dict[str, dict[str, Any]] = variables()["jobs"]["default"]
    return default


def job_params(job: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a job sends, as Terraform's for-expression keeps them."""
    return {k: v for k, v in (job.get("params") or {}).items() if v is not None}


def scheduler_body(job: Mapping[str, Any]) -> bytes:
    """The body bytes Terraform's `jsonencode` gives: sorted keys, no spaces."""
    text = json.dumps(job_params(job), sort_keys=True, separators=(",", ":"))
    return text.encode()


def effective_deadline_s(job: Mapping[str, Any]) -> float:
    """The attempt deadline Terraform derives: as given, else min(timeout, 30 min)."""
    timeout_s = job.get("timeout_s", 540)
    given = job.get("attempt_deadline_s")
    return given if given is not None else min(timeout_s, SCHEDULER_MAX_DEADLINE_S)


def function_environment(job: Mapping[str, Any]) -> dict[str, str]:
    """The plain environment Terraform gives a job's function (locals.tf, defaults)."""
    deadline_s = effective_deadline_s(job)
    return {
        "LOG_DIR": "",
        "TIME_BUDGET_S": str(int(max(deadline_s - 60, deadline_s * 0.8))),
        **job.get("environment", {}),
        "FUNCTION_TIMEOUT_S": str(job.get("timeout_s", 540)),
    }


def deadline_problems(jobs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every job whose scheduler attempt deadline breaks the rules, explained."""
    problems = []
    for job_id, job in jobs.items():
        timeout_s = job.get("timeout_s", 540)
        deadline_s = effective_deadline_s(job)
        if deadline_s > timeout_s:
            problems.append(
                f"{job_id}: attempt deadline {deadline_s}s exceeds its function "
                f"timeout {timeout_s}s"
            )
        if deadline_s > SCHEDULER_MAX_DEADLINE_S:
            problems.append(
                f"{job_id}: attempt deadline {deadline_s}s exceeds Cloud Scheduler's "
                f"{SCHEDULER_MAX_DEADLINE_S}s limit"
            )
        if deadline_s < SCHEDULER_MIN_DEADLINE_S:
            problems.append(
                f"{job_id}: attempt deadline {deadline_s}s is below Cloud Scheduler's "
                f"{SCHEDULER_MIN_DEADLINE_S}s minimum"
            )
    return problems


def fire_times(
    schedule: str, time_zone: str, start: datetime, days: int
) -> list[datetime]:
    """When a cron schedule fires in the `days` after `start`, in UTC."""
    zone = ZoneInfo(time_zone)
    cursor = croniter(schedule, start.astimezone(zone))
    end = start + timedelta(days=days)
    times = []
    while (moment := cursor.get_next(datetime)) < end:
        times.append(moment.astimezone(ZoneInfo("UTC")))
    return times


def entry_points_in_main() -> set[str]:
    """Names of the top-level functions in functions/main.py (read, not imported)."""
    tree = ast.parse(MAIN_PY.read_text(), filename=str(MAIN_PY))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


@cache
def render() -> dict[str, Any]:
    """render.yaml, parsed."""
    with RENDER_YAML.open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


def render_services() -> list[dict[str, Any]]:
    """The Render services (cron jobs) the Blueprint declares."""
    services: list[dict[str, Any]] = render()["services"]
    return services


_INVOKE = re.compile(r"python -m housekeeper invoke (?P<job>[a-z0-9-]+)(?P<rest>.*)$")


def render_invocation(service: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The job id and the `--param` values a Render start command passes."""
    match = _INVOKE.search(service["startCommand"])
    if match is None:
        raise AssertionError(f"{service['name']}: not a housekeeper invoke command")
    params = dict(
        item.split("=", 1) for item in re.findall(r"--param (\S+)", match["rest"])
    )
    return match["job"], params


def render_env(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A service's envVars by key."""
    return {entry["key"]: entry for entry in service.get("envVars", [])}


def terraform_binary() -> str | None:
    """The Terraform CLI on PATH, if any."""
    return shutil.which("terraform")


def terraform_env() -> dict[str, str]:
    """Environment for offline Terraform runs: no version check, no CLI config."""
    return {
        **os.environ,
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": os.devnull,
        "TF_IN_AUTOMATION": "1",
    }


def _offline_module(directory: Path, tfvars: str | None) -> list[str]:
    # variables.tf and locals.tf reference no provider, so Terraform can plan
    # them without `init` and without any network.
    for name in ("variables.tf", "locals.tf"):
        shutil.copy(TERRAFORM_DIR / name, directory / name)
    arguments = []
    if tfvars is not None:
        (directory / "case.tfvars").write_text(tfvars)
        arguments.append("-var-file=case.tfvars")
    return arguments


def _variable_flags(values: Mapping[str, str]) -> list[str]:
    return [f"-var={name}={value}" for name, value in values.items()]


def plan_variables(
    tfvars: str | None, values: Mapping[str, str] = PLAN_VARIABLES
) -> subprocess.CompletedProcess[str]:
    """`terraform plan` of variables.tf + locals.tf: runs every validation offline."""
    binary = terraform_binary()
    assert binary is not None, "no terraform binary"
    with tempfile.TemporaryDirectory(prefix="hk-tf-") as directory:
        arguments = _offline_module(Path(directory), tfvars)
        return subprocess.run(
            [binary, "plan", "-input=false", "-no-color", "-lock=false",
             *arguments, *_variable_flags(values)],
            cwd=directory, env=terraform_env(), capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip


def evaluate_locals(
    names: list[str],
    tfvars: str | None = None,
    values: Mapping[str, str] = PLAN_VARIABLES,
) -> dict[str, Any]:
    """Let Terraform compute `local.<name>` for each name (offline, via console)."""
    binary = terraform_binary()
    assert binary is not None, "no terraform binary"
    query = "jsonencode({" + ", ".join(f"{n} = local.{n}" for n in names) + "})\n"
    with tempfile.TemporaryDirectory(prefix="hk-tf-") as directory:
        arguments = _offline_module(Path(directory), tfvars)
        result = subprocess.run(
            [binary, "console", *arguments, *_variable_flags(values)],
            cwd=directory, env=terraform_env(), input=query, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    evaluated: dict[str, Any] = json.loads(json.loads(result.stdout))
    return evaluated


# README tables -----------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _type_cell(raw: Any) -> str:
    text = expression(raw)
    # Nested object types are documented in the prose; the cell names the shape.
    text = re.sub(r"\(\{.*\}\)", "({...})", text)
    return f"`{text}`"


def _default_cell(spec: Mapping[str, Any]) -> str:
    if "default" not in spec:
        return "required"
    value = spec["default"]
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if value in ({}, []):
        return f"`{json.dumps(value)}`"
    return "see below"


def inputs_table() -> str:
    """The README's Terraform inputs table, from variables.tf."""
    lines = ["| input | type | default | description |", "|---|---|---|---|"]
    for name, spec in variables().items():
        sensitive = " (sensitive)" if spec.get("sensitive") is True else ""
        lines.append(
            f"| `{name}` | {_type_cell(spec['type'])} | {_default_cell(spec)} "
            f"| {_one_line(spec['description'])}{sensitive} |"
        )
    return "\n".join(lines)


def outputs_table() -> str:
    """The README's Terraform outputs table, from outputs.tf."""
    lines = ["| output | description |", "|---|---|"]
    for name, spec in outputs().items():
        lines.append(f"| `{name}` | {_one_line(spec['description'])} |")
    return "\n".join(lines)


def readme_section(title: str) -> str:
    """The text of one `## ` section of the README, up to the next one."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README has no '## {title}' section"
    return match.group(1)


def readme_tables(section: str) -> list[str]:
    """Every Markdown table of a README section, as text."""
    tables, current = [], []
    for line in section.splitlines():
        if line.startswith("|"):
            current.append(line.rstrip())
        elif current:
            tables.append("\n".join(current))
            current = []
    if current:
        tables.append("\n".join(current))
    return tables


if __name__ == "__main__":
    if sys.argv[1:] == ["tables"]:
        print(inputs_table(), outputs_table(), sep="\n\n")
    else:
        sys.exit("usage: python -m tests.deploy.configs tables")
