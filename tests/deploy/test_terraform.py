"""terraform/: formatting, parsing, conventions, and the rules the jobs must follow.

Everything here runs without a cloud account and without `terraform init`:
HCL is parsed by python-hcl2, and where a Terraform binary is present it
checks formatting and evaluates the provider-free variables.tf + locals.tf.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, available_timezones

import pytest
from croniter import croniter

from housekeeper.config import SETTINGS
from tests.deploy import configs

needs_terraform = pytest.mark.skipif(
    configs.terraform_binary() is None,
    reason="no terraform binary on PATH: fmt and offline evaluation skipped; "
    "the python-hcl2 checks still ran",
)

SECRET_SETTINGS = set(configs.locals_()["secret_settings"])
PLAIN_SETTINGS = set(configs.locals_()["plain_settings"])


# Files, formatting, parsing --------------------------------------------------------


@needs_terraform
def test_terraform_fmt_check_passes():
    result = subprocess.run(
        [configs.terraform_binary(), "fmt", "-check", "-diff", "-recursive", "."],
        cwd=configs.TERRAFORM_DIR, env=configs.terraform_env(),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@needs_terraform
def test_tfvars_example_is_formatted(tmp_path):
    # fmt only reads *.tfvars, so check a copy under that name.
    copy = tmp_path / "example.tfvars"
    copy.write_text(configs.TFVARS_EXAMPLE.read_text())
    result = subprocess.run(
        [configs.terraform_binary(), "fmt", "-check", "-diff", str(copy)],
        env=configs.terraform_env(), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", configs.TERRAFORM_FILES)
def test_every_terraform_file_parses_with_hcl2(name):
    document = configs.load_hcl(configs.TERRAFORM_DIR / name)
    assert document, f"{name} parsed to nothing"


def test_no_stray_terraform_file_escapes_the_checks():
    on_disk = {path.name for path in configs.TERRAFORM_DIR.glob("*.tf")}
    assert on_disk == set(configs.TERRAFORM_FILES)


def test_tfvars_example_parses_and_names_only_declared_variables():
    example = configs.load_hcl(configs.TFVARS_EXAMPLE)
    assert set(example) <= set(configs.variables())
    assert {"project_id", "alert_email"} <= set(example)


# Conventions (STYLE.md item 10) -----------------------------------------------------


def test_provider_versions_are_pinned_with_a_range():
    terraform_block = configs.terraform()["versions.tf"]["terraform"][0]
    assert re.fullmatch(r">= [\d.]+, < [\d.]+", terraform_block["required_version"])
    providers = terraform_block["required_providers"][0]
    assert set(providers) == {"google", "archive", "random"}
    for name, spec in providers.items():
        assert spec["source"] == f"hashicorp/{name}"
        assert re.fullmatch(r">= [\d.]+, < [\d.]+", spec["version"]), name


@pytest.mark.parametrize("name", sorted(configs.variables()))
def test_every_variable_is_typed_and_described_in_a_sentence(name):
    spec = configs.variables()[name]
    assert "type" in spec, f"{name} has no type"
    description = spec.get("description", "")
    assert description[:1].isupper(), name
    assert description.rstrip().endswith("."), name


@pytest.mark.parametrize("name", sorted(configs.outputs()))
def test_every_output_is_described_in_a_sentence(name):
    description = configs.outputs()[name].get("description", "")
    assert description[:1].isupper(), name
    assert description.rstrip().endswith("."), name


def test_secret_variables_are_sensitive_and_default_to_null():
    secret_inputs = {
        "cron_secret", "cron_secret_previous", "database_url", "supabase_url",
        "supabase_service_role_key", "r2_access_key_id", "r2_secret_access_key",
    }  # fmt: skip
    assert {name.upper() for name in secret_inputs} == SECRET_SETTINGS
    for name in secret_inputs:
        spec = configs.variables()[name]
        assert spec.get("sensitive") is True, name
        assert spec.get("default", "required") is None, name


def test_not_set_is_null_never_an_empty_string():
    for name, spec in configs.variables().items():
        assert spec.get("default") != "", name


def test_boolean_variables_read_enable():
    for name, spec in configs.variables().items():
        if configs.expression(spec["type"]) == "bool":
            assert name.startswith("enable_"), name


@pytest.mark.parametrize(
    "name",
    ["project_id", "region", "scheduler_region", "name_prefix", "jobs",
     "environment", "cron_secret", "database_url", "ingress_settings",
     "alert_email", "source_archive_retention_days"],
)  # fmt: skip
def test_closed_domain_variables_are_validated(name):
    assert configs.variables()[name].get("validation"), f"{name} has no validation"


def test_no_output_exposes_a_secret_value():
    for name, spec in configs.outputs().items():
        value = str(spec["value"])
        assert "random_password" not in value, name
        assert "secret_version" not in value, name
        assert "local.cron_secret" not in value, name
        for secret in SECRET_SETTINGS:
            assert f"var.{secret.lower()}" not in value, name
    assert "google_secret_manager_secret.setting" in str(
        configs.outputs()["cron_secret_id"]["value"]
    )


# Attempt deadlines: a Python check here, a Terraform validation and precondition there


def test_default_jobs_attempt_deadlines_fit_timeout_and_30_minutes():
    assert configs.deadline_problems(configs.default_jobs()) == []


def test_attempt_deadline_above_function_timeout_fails_validation():
    bad = {"slow": {"entry_point": "cleanup_logs", "timeout_s": 60,
                    "attempt_deadline_s": 120}}  # fmt: skip
    assert configs.deadline_problems(bad) == [
        "slow: attempt deadline 120s exceeds its function timeout 60s"
    ]


def test_attempt_deadline_above_30_minutes_fails_validation():
    bad = {"long": {"timeout_s": 3600, "attempt_deadline_s": 2400}}
    assert configs.deadline_problems(bad) == [
        "long: attempt deadline 2400s exceeds Cloud Scheduler's 1800s limit"
    ]


def test_long_timeout_without_deadline_is_capped_at_30_minutes():
    assert configs.deadline_problems({"long": {"timeout_s": 3600}}) == []
    assert configs.effective_deadline_s({"timeout_s": 3600}) == 1800


BAD_DEADLINE_TFVARS = """
jobs = {
  "cleanup-logs" = {
    entry_point        = "cleanup_logs"
    schedule           = "0 3 * * *"
    timeout_s          = 60
    attempt_deadline_s = 120
  }
}
"""


@needs_terraform
def test_terraform_validation_rejects_attempt_deadline_above_timeout():
    result = configs.plan_variables(BAD_DEADLINE_TFVARS)
    assert result.returncode != 0
    assert "at most the job's timeout_s" in " ".join(result.stderr.split())


@needs_terraform
def test_terraform_validation_rejects_attempt_deadline_above_30_minutes():
    tfvars = BAD_DEADLINE_TFVARS.replace("60\n", "3600\n").replace("120", "2400")
    result = configs.plan_variables(tfvars)
    assert result.returncode != 0
    assert "from 15 to 1800 seconds" in " ".join(result.stderr.split())


@needs_terraform
def test_terraform_validation_accepts_the_defaults_and_the_example():
    defaults = configs.plan_variables(None)
    assert defaults.returncode == 0, defaults.stderr
    example = configs.plan_variables(configs.TFVARS_EXAMPLE.read_text(), {})
    assert example.returncode == 0, example.stderr


@needs_terraform
def test_terraform_validation_rejects_a_job_without_a_database():
    result = configs.plan_variables(
        None, {k: v for k, v in configs.PLAN_VARIABLES.items() if k != "database_url"}
    )
    assert result.returncode != 0
    assert "the jobs need a database" in " ".join(result.stderr.split())


def test_scheduler_job_has_a_deadline_precondition_against_the_function():
    job = configs.resources("google_cloud_scheduler_job")["job"]
    condition = job["lifecycle"][0]["precondition"][0]["condition"]
    assert "each.value.attempt_deadline_s <=" in condition
    assert "service_config[0].timeout_seconds" in condition
    assert "local.scheduler_max_deadline_s" in condition
    assert configs.locals_()["scheduler_max_deadline_s"] == 1800
    assert configs.expression(job["attempt_deadline"]) == (
        "${each.value.attempt_deadline_s}s"
    )


@needs_terraform
def test_terraform_derives_deadline_and_time_budget_like_the_python_check():
    evaluated = configs.evaluate_locals(["jobs", "function_environment"])
    for job_id, job in configs.default_jobs().items():
        deadline_s = evaluated["jobs"][job_id]["attempt_deadline_s"]
        assert deadline_s == configs.effective_deadline_s(job)
        environment = evaluated["function_environment"][job_id]
        assert environment["FUNCTION_TIMEOUT_S"] == str(job["timeout_s"])
        # The run stops with status partial before Cloud Scheduler stops waiting.
        assert 0 < int(environment["TIME_BUDGET_S"]) < deadline_s


# Schedules and time zones ---------------------------------------------------------


@pytest.mark.parametrize("job_id", sorted(configs.default_jobs()))
def test_schedule_parses_as_five_field_cron(job_id):
    schedule = configs.default_jobs()[job_id]["schedule"]
    assert len(schedule.split()) == 5
    assert croniter.is_valid(schedule), schedule


@pytest.mark.parametrize("job_id", sorted(configs.default_jobs()))
def test_time_zone_is_a_valid_iana_name(job_id):
    zone = configs.default_jobs()[job_id].get("time_zone", "Etc/UTC")
    assert zone in available_timezones()
    ZoneInfo(zone)


def test_time_zone_defaults_to_etc_utc():
    jobs_type = configs.expression(configs.variables()["jobs"]["type"])
    assert 'time_zone = optional(string, "Etc/UTC")' in jobs_type


@pytest.mark.parametrize("job_id", sorted(configs.default_jobs()))
def test_overdue_alert_is_looser_than_the_longest_gap_between_runs(job_id):
    job = configs.default_jobs()[job_id]
    times = configs.fire_times(
        job["schedule"], job.get("time_zone", "Etc/UTC"),
        datetime(2026, 1, 1, tzinfo=UTC), days=400,
    )  # fmt: skip
    longest_gap_s = max(
        (b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)
    )
    assert job["overdue_after_s"] > longest_gap_s + job["timeout_s"]


# What the scheduler sends, and to what -----------------------------------------------


def test_scheduler_posts_json_with_the_bearer_secret():
    job = configs.resources("google_cloud_scheduler_job")["job"]
    target = job["http_target"][0]
    assert configs.expression(target["http_method"]) == (
        "local.scheduler_requests[each.key].http_method"
    )
    assert configs.expression(target["body"]) == (
        "base64encode(local.scheduler_requests[each.key].body)"
    )
    assert target["headers"]["Authorization"] == "Bearer ${local.cron_secret}"
    assert configs.expression(target["headers"]["Content-Type"]) == (
        "local.scheduler_requests[each.key].content_type"
    )
    assert configs.expression(target["uri"]) == (
        "google_cloudfunctions2_function.fn[each.key].url"
    )
    # Cloud Scheduler's own OIDC/OAuth token would claim the Authorization header.
    assert "oidc_token" not in target
    assert "oauth_token" not in target
    assert job["retry_config"][0]["retry_count"] == "${each.value.retry_count}"


@needs_terraform
def test_scheduler_request_as_terraform_computes_it():
    evaluated = configs.evaluate_locals(["scheduler_requests"])["scheduler_requests"]
    for job_id, job in configs.default_jobs().items():
        request = evaluated[job_id]
        assert request["http_method"] == "POST"
        assert request["content_type"] == "application/json"
        assert request["body"].encode() == configs.scheduler_body(job)


@pytest.mark.parametrize("job_id", sorted(configs.default_jobs()))
def test_scheduler_params_are_ones_the_handler_accepts(job_id):
    params = configs.job_params(configs.default_jobs()[job_id])
    assert set(params) <= configs.JOB_PARAMS[job_id]


def test_functions_run_python_312_from_a_hash_named_archive():
    function = configs.resources("google_cloudfunctions2_function")["fn"]
    assert function["build_config"][0]["runtime"] == "python312"
    obj = configs.resources("google_storage_bucket_object")["source"]
    assert "data.archive_file.source.output_sha256" in obj["name"]
    archive = configs.terraform()["main.tf"]["data"][0]["archive_file"]["source"]
    assert archive["source_dir"] == "${path.module}/../functions"


def test_function_gets_its_own_timeout_as_function_timeout_s():
    environment = " ".join(str(configs.locals_()["function_environment"]).split())
    # Merged last, so nothing a user sets can contradict the real timeout.
    assert environment.endswith("{FUNCTION_TIMEOUT_S = tostring(job.timeout_s)})}}")


# Entry points and settings --------------------------------------------------------


def _available_jobs() -> list[str]:
    from housekeeper.jobs import available_jobs

    return available_jobs()


@pytest.mark.parametrize("job_id", sorted(configs.default_jobs()))
def test_every_terraform_entry_point_exists_in_functions_main(job_id):
    entry_point = configs.default_jobs()[job_id]["entry_point"]
    if job_id not in _available_jobs() and entry_point not in (
        configs.entry_points_in_main()
    ):
        pytest.skip(f"job {job_id} is not built yet (no {entry_point} in main.py)")
    assert entry_point in configs.entry_points_in_main()


def test_health_entry_point_exists_in_functions_main():
    assert '"health"' in str(configs.locals_()["health"])
    assert "health" in configs.entry_points_in_main()


def test_every_setting_terraform_passes_is_documented_in_config():
    documented = {doc.name for doc in SETTINGS}
    passed = set(SECRET_SETTINGS) | PLAIN_SETTINGS
    passed |= set(re.findall(r"\b([A-Z][A-Z0-9_]+) = ", str(configs.locals_())))
    passed |= set(re.findall(r"'([A-Z][A-Z0-9_]+)': ", str(configs.locals_())))
    for job in configs.default_jobs().values():
        passed |= set(job.get("environment", {})) | set(job.get("secrets") or [])
    assert passed - documented == set()


def test_every_documented_setting_can_be_set_through_terraform():
    documented = {doc.name for doc in SETTINGS}
    reachable = SECRET_SETTINGS | PLAIN_SETTINGS | {"FUNCTION_TIMEOUT_S"}
    missing = documented - reachable
    assert missing == set(), (
        f"add {sorted(missing)} to plain_settings (or secret_settings) in "
        "terraform/locals.tf"
    )


def test_secrets_never_travel_as_plain_environment_variables():
    assert SECRET_SETTINGS.isdisjoint(PLAIN_SETTINGS)
    assert "FUNCTION_TIMEOUT_S" not in PLAIN_SETTINGS
    function = configs.resources("google_cloudfunctions2_function")["fn"]
    service = function["service_config"][0]
    secret_block = service["dynamic"][0]["secret_environment_variables"]
    assert configs.expression(secret_block["for_each"]) == "each.value.secrets"


# Least privilege and the bucket ---------------------------------------------------


def test_runtime_accounts_hold_no_project_role():
    for member in configs.resources("google_project_iam_member").values():
        assert "google_service_account.build" in member["member"]
    grants = configs.resources("google_secret_manager_secret_iam_member")["runtime"]
    assert grants["role"] == "roles/secretmanager.secretAccessor"
    assert configs.expression(grants["for_each"]) == "local.secret_grants"


def test_cleanup_logs_never_receives_the_r2_keys():
    secrets = configs.default_jobs()["cleanup-logs"]["secrets"]
    assert "CRON_SECRET" in secrets
    assert not {"R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"} & set(secrets)


def test_source_bucket_is_private_uniform_and_ages_out_old_archives():
    bucket = configs.resources("google_storage_bucket")["source"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    rule = bucket["lifecycle_rule"][0]
    assert rule["action"][0]["type"] == "Delete"
    assert "days_since_noncurrent_time" in rule["condition"][0]


def test_public_invocation_is_switchable_and_ingress_is_a_variable():
    function = configs.resources("google_cloudfunctions2_function")["fn"]
    service = function["service_config"][0]
    assert configs.expression(service["ingress_settings"]) == "var.ingress_settings"
    invoker = configs.resources("google_cloud_run_service_iam_member")["public_invoker"]
    assert "var.enable_public_invoker" in invoker["for_each"]


# Monitoring -------------------------------------------------------------------------


def test_failed_runs_metric_matches_the_handler_summary_line():
    metric = configs.resources("google_logging_metric")["failed_runs"]
    # A heredoc comes back with its quotes escaped.
    assert 'jsonPayload.status="failed"' in metric["filter"].replace('\\"', '"')
    assert metric["label_extractors"]["job_id"] == "EXTRACT(jsonPayload.job)"


def test_alerts_go_to_the_email_channel_variable():
    channel = configs.resources("google_monitoring_notification_channel")["email"]
    assert channel["type"] == "email"
    assert channel["labels"]["email_address"] == "${var.alert_email}"
    for policy in configs.resources("google_monitoring_alert_policy").values():
        assert policy["notification_channels"] == [
            "${google_monitoring_notification_channel.email.id}"
        ]


def test_every_job_has_an_overdue_alert_over_its_own_window():
    overdue = configs.resources("google_monitoring_alert_policy")["overdue"]
    assert configs.expression(overdue["for_each"]) == "local.jobs"
    query = overdue["conditions"][0]["condition_prometheus_query_language"][0]["query"]
    assert query.startswith("absent_over_time(")
    assert "[${each.value.overdue_after_s}s]" in query
    assert 'job_id=\\"${each.key}\\"' in query or 'job_id="${each.key}"' in query


@needs_terraform
def test_python_derivation_of_function_environment_matches_terraform():
    evaluated = configs.evaluate_locals(["function_environment"])
    for job_id, job in configs.default_jobs().items():
        assert evaluated["function_environment"][job_id] == (
            configs.function_environment(job)
        )


def _one_job(**fields: str) -> str:
    job_id = fields.pop("_id", "cleanup-logs")
    job = {"entry_point": '"cleanup_logs"', "schedule": '"0 3 * * *"', **fields}
    body = "\n".join(f"    {key} = {value}" for key, value in job.items())
    return f'jobs = {{\n  "{job_id}" = {{\n{body}\n  }}\n}}\n'


@needs_terraform
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"schedule": '"0 3 * *"'}, "five-field cron expression"),
        ({"_id": "health"}, "neither health nor build"),
        ({"time_zone": '"Mars/Olympus_Mons"'}, "IANA time zone name"),
        ({"entry_point": '"cleanup-logs"'}, "Python function name"),
        ({"timeout_s": "4000"}, "from 15 to 3600"),
        ({"retry_count": "6"}, "from 0 to 5"),
        ({"memory_mb": "300"}, "must be one of 128"),
        ({"params": '{ media_type = "videos" }'}, "Job params out of range"),
        ({"params": "{ retention_days = 0 }"}, "Job params out of range"),
        ({"secrets": '["DATABASE_URL"]'}, "must include CRON_SECRET"),
        ({"environment": '{ CRON_SECRET = "x" }'}, "only plain settings"),
        ({"environment": '{ TIME_BUDGET_S = "540" }'}, "below its attempt deadline"),
        ({"environment": '{ RUN_LEASE_S = "60" }'}, "at least its timeout_s"),
    ],
    ids=lambda value: value if isinstance(value, str) else next(iter(value)),
)
def test_terraform_validation_rejects_a_bad_job(fields, message):
    result = configs.plan_variables(_one_job(**fields))
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split())


@needs_terraform
def test_terraform_validation_accepts_a_job_in_another_time_zone():
    result = configs.plan_variables(_one_job(time_zone='"America/Argentina/Salta"'))
    assert result.returncode == 0, result.stderr


@needs_terraform
def test_terraform_validation_keeps_timeout_bound_settings_per_job():
    tfvars = 'environment = { TIME_BUDGET_S = "300" }\n'
    result = configs.plan_variables(tfvars)
    assert result.returncode != 0
    assert "set them in a job's environment" in " ".join(result.stderr.split())
    fine = _one_job(environment='{ TIME_BUDGET_S = "300", RUN_LEASE_S = "900" }')
    assert configs.plan_variables(fine).returncode == 0
