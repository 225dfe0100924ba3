"""render.yaml: one fallback cron service per job, offset, prompted secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter

from housekeeper.config import SETTINGS
from tests.deploy import configs

SECRET_SETTINGS = set(configs.locals_()["secret_settings"])
SERVICES = {
    configs.render_invocation(service)[0]: service
    for service in configs.render_services()
}
START = datetime(2026, 1, 1, tzinfo=UTC)


def _duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


def test_one_fallback_cron_service_per_terraform_job():
    assert set(SERVICES) == set(configs.default_jobs())
    assert len(configs.render_services()) == len(SERVICES)
    for service in configs.render_services():
        assert service["type"] == "cron"
        assert service["runtime"] == "python"
        assert service["name"].endswith("-fallback")


@pytest.mark.parametrize("job_id", sorted(SERVICES))
def test_start_command_invokes_the_handler_in_process_from_the_repo_root(job_id):
    command = SERVICES[job_id]["startCommand"]
    # Render starts in the repository root; the package lives in functions/.
    assert command.startswith(f"cd functions && python -m housekeeper invoke {job_id} ")


@pytest.mark.parametrize("job_id", sorted(SERVICES))
def test_start_command_says_render_and_skips_after_a_recent_success(job_id):
    _, params = configs.render_invocation(SERVICES[job_id])
    assert params["trigger"] == "render"
    assert _duration(params["skip_if_succeeded_within"]) > timedelta(0)


@pytest.mark.parametrize("job_id", sorted(SERVICES))
def test_render_sends_the_same_parameters_as_cloud_scheduler(job_id):
    _, params = configs.render_invocation(SERVICES[job_id])
    own = {
        k: v
        for k, v in params.items()
        if k not in ("trigger", "skip_if_succeeded_within")
    }
    scheduled = configs.job_params(configs.default_jobs()[job_id])
    assert own == {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in scheduled.items()
    }
    assert set(params) <= configs.JOB_PARAMS[job_id]


def test_build_command_installs_only_the_function_requirements():
    for service in configs.render_services():
        assert service["buildCommand"] == "pip install -r functions/requirements.txt"


def test_python_version_is_set_to_the_cloud_functions_runtime():
    for service in configs.render_services():
        version = configs.render_env(service)["PYTHON_VERSION"]["value"]
        assert version.startswith("3.12."), service["name"]


def test_secrets_are_prompted_and_nothing_is_generated_or_shared():
    for service in configs.render_services():
        for key, entry in configs.render_env(service).items():
            assert "generateValue" not in entry, f"{service['name']}: {key}"
            assert "fromService" not in entry
            assert "fromGroup" not in entry
            if key in SECRET_SETTINGS:
                assert entry.get("sync") is False, f"{service['name']}: {key}"
                assert "value" not in entry, f"{service['name']}: {key}"
    assert "envVarGroups" not in configs.render()


def test_every_render_variable_is_a_documented_setting_or_render_s_own():
    documented = {doc.name for doc in SETTINGS}
    for service in configs.render_services():
        declared = set(configs.render_env(service)) - configs.RENDER_PLATFORM_ENV
        assert declared - documented == set(), service["name"]


@pytest.mark.parametrize("job_id", sorted(SERVICES))
def test_render_service_declares_the_secrets_its_job_mounts(job_id):
    declared = set(configs.render_env(SERVICES[job_id]))
    mounted = configs.default_jobs()[job_id].get("secrets") or SECRET_SETTINGS
    # The previous secret only matters to HTTP callers during a rotation.
    assert set(mounted) - {"CRON_SECRET_PREVIOUS"} <= declared


@pytest.mark.parametrize("job_id", sorted(SERVICES))
def test_render_run_uses_the_cloud_function_timeout(job_id):
    # The run lease derives from FUNCTION_TIMEOUT_S; both triggers must agree.
    value = configs.render_env(SERVICES[job_id])["FUNCTION_TIMEOUT_S"]["value"]
    assert value == str(configs.default_jobs()[job_id]["timeout_s"])


@pytest.mark.parametrize("job_id", sorted(SERVICES))
def test_render_schedule_parses_and_never_fires_with_cloud_scheduler(job_id):
    job = configs.default_jobs()[job_id]
    schedule = SERVICES[job_id]["schedule"]
    assert len(schedule.split()) == 5
    assert croniter.is_valid(schedule)
    render_times = configs.fire_times(schedule, "Etc/UTC", START, days=60)
    cloud_times = configs.fire_times(
        job["schedule"], job.get("time_zone", "Etc/UTC"), START, days=60
    )
    # At least a function timeout apart, so the primary has finished or failed.
    gap = timedelta(seconds=job["timeout_s"])
    for moment in render_times:
        assert all(abs(moment - other) > gap for other in cloud_times), moment


@pytest.mark.parametrize("job_id", sorted(SERVICES))
def test_skip_window_covers_a_healthy_primary_but_not_a_missed_one(job_id):
    job = configs.default_jobs()[job_id]
    _, params = configs.render_invocation(SERVICES[job_id])
    window = _duration(params["skip_if_succeeded_within"])
    render_times = configs.fire_times(
        SERVICES[job_id]["schedule"], "Etc/UTC", START, 60
    )
    cloud_times = configs.fire_times(
        job["schedule"], job.get("time_zone", "Etc/UTC"), START - timedelta(days=2), 62
    )
    for moment in render_times:
        latest = max(t for t in cloud_times if t <= moment)
        # The primary's run at `latest` makes this fallback skip ...
        assert moment - latest < window, moment
        # ... but one missed primary run leaves the previous success outside.
        before = max(t for t in cloud_times if t < latest)
        assert moment - before > window, moment
    # The fallback's own last success must never silence it.
    gaps = [b - a for a, b in zip(render_times, render_times[1:], strict=False)]
    assert window < min(gaps)
