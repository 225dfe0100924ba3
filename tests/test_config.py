"""Settings: defaults, validation, and the values that count as secrets."""

from __future__ import annotations

import json

import pytest

from housekeeper.config import DEFAULT_MEDIA_SOURCES, load_settings
from housekeeper.errors import ConfigurationError


def test_defaults_match_the_design():
    settings = load_settings({})
    assert settings.logs_table == "logs"
    assert settings.logs_timestamp_column == "timestamp"
    assert settings.retention_days == 30
    assert settings.log_file_patterns == ("*.log", "*.log.*")
    assert settings.image_target_kb == 300
    assert settings.video_target_mb == 1.5
    assert settings.media_cdn_hosts == ("cdninstagram.com", "fbcdn.net")
    assert settings.media_sources == DEFAULT_MEDIA_SOURCES
    assert settings.time_budget_s < settings.function_timeout_s
    assert settings.run_lease_s > settings.function_timeout_s
    assert settings.transport is None


def test_database_url_wins_over_supabase():
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://x@h/db",
            "SUPABASE_URL": "https://p.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": "k" * 20,
        }
    )
    assert settings.transport == "postgres"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOGS_TABLE", "logs; drop table users"),
        ("LOGS_TABLE", "a.b.c"),
        ("LOGS_TIMESTAMP_COLUMN", 'ts"'),
        ("RETENTION_DAYS", "0"),
        ("RETENTION_DAYS", "thirty"),
        ("LOG_FORMAT", "xml"),
        ("FUNCTION_TIMEOUT_S", "0"),
        ("MEDIA_SOURCES", "{}"),
        ("MEDIA_SOURCES", '[{"name": "x"}]'),
    ],
)
def test_invalid_setting_is_a_configuration_error_naming_it(name, value):
    with pytest.raises(ConfigurationError, match=name.split("_")[0]):
        load_settings({name: value})


def test_time_budget_cannot_exceed_function_timeout():
    with pytest.raises(ConfigurationError, match="TIME_BUDGET_S"):
        load_settings({"FUNCTION_TIMEOUT_S": "60", "TIME_BUDGET_S": "120"})


def test_secret_values_include_the_database_password_with_special_characters():
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://app:p%40ss%3Aw%2Frd!@db.example.invalid/postgres",
            "CRON_SECRET": "cron-secret-1",
            "R2_SECRET_ACCESS_KEY": "r2-secret-1",
        }
    )
    assert "p@ss:w/rd!" in settings.secret_values()
    assert {"cron-secret-1", "r2-secret-1"} <= set(settings.secret_values())


@pytest.mark.parametrize("password", ["p@ss", "pa/ss", "pa?ss", "pa#ss"])
def test_database_url_with_an_unencoded_special_character_is_refused(password):
    with pytest.raises(ConfigurationError, match="percent-encode") as raised:
        load_settings({"DATABASE_URL": f"postgresql://app:{password}@db.invalid/x"})
    assert password not in raised.value.message


def test_media_sources_replace_the_defaults():
    sources = [
        {
            "name": "avatars",
            "table": "users",
            "url_column": "avatar_url",
            "kind": "image",
        }
    ]
    settings = load_settings({"MEDIA_SOURCES": json.dumps(sources)})
    (source,) = settings.media_sources
    assert source.table == "users"
    assert source.id_column == "id"
    assert source.key_prefix == "avatars"


def test_overdue_threshold_can_be_set_per_job():
    settings = load_settings({"OVERDUE_AFTER_H": "cleanup-logs=26,migrate-cdn-to-r2=8"})
    assert settings.overdue_after_h_for("migrate-cdn-to-r2") == 8
    assert settings.overdue_after_h_for("cleanup-logs") == 26
    assert settings.overdue_after_h_for("other") == 26


@pytest.mark.parametrize("value", ["cleanup-logs=0", "=5", "cleanup-logs=soon", "0"])
def test_invalid_overdue_threshold_names_the_setting(value):
    with pytest.raises(ConfigurationError, match="OVERDUE_AFTER_H"):
        load_settings({"OVERDUE_AFTER_H": value})
