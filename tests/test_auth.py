"""Bearer auth as the contract gives it: every wrong header a 401, never a 500."""

from __future__ import annotations

import pytest
import requests

from housekeeper.auth import require_bearer
from housekeeper.config import load_settings
from housekeeper.errors import ConfigurationError, UnauthorizedError
from tests.support import TEST_PREVIOUS_SECRET, TEST_SECRET, create_log_table


@pytest.fixture
def table(conn):
    create_log_table(conn)


def _dry(call, headers):
    return call("cleanup_logs", json={"dry_run": True}, headers=headers, token=None)


def test_correct_secret_is_accepted(call, table, clean_ledger):
    reply = _dry(call, {"Authorization": f"Bearer {TEST_SECRET}"})
    assert reply.status == 200
    assert reply.json["status"] == "dry_run"


def test_lower_case_scheme_is_accepted_as_http_says(call, table, clean_ledger):
    reply = _dry(call, {"Authorization": f"bearer {TEST_SECRET}"})
    assert reply.status == 200


def test_previous_secret_is_accepted_during_rotation(
    call, set_env, table, clean_ledger
):
    set_env(CRON_SECRET_PREVIOUS=TEST_PREVIOUS_SECRET)
    reply = _dry(call, {"Authorization": f"Bearer {TEST_PREVIOUS_SECRET}"})
    assert reply.status == 200


@pytest.mark.parametrize(
    ("case", "header"),
    [
        ("no header", None),
        ("doubled scheme", f"Bearer Bearer {TEST_SECRET}"),
        ("basic scheme", f"Basic {TEST_SECRET}"),
        ("trailing space", f"Bearer {TEST_SECRET} "),
        ("scheme only", "Bearer"),
        ("empty token", "Bearer "),
        ("wrong token", "Bearer not-the-secret"),
        ("previous secret when none is configured", f"Bearer {TEST_PREVIOUS_SECRET}"),
        ("secret without scheme", TEST_SECRET),
        ("tab instead of space", f"Bearer\t{TEST_SECRET}"),
    ],
)
def test_wrong_authorization_is_401_with_challenge(call, conn, case, header):
    conn.execute("truncate housekeeper.runs")
    reply = _dry(call, {} if header is None else {"Authorization": header})
    assert reply.status == 401, case
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.json["error"]["code"] == "unauthorized"
    # Refused before anything ran: no ledger entry.
    assert conn.execute("select count(*) from housekeeper.runs").fetchone()[0] == 0


def test_non_ascii_token_against_ascii_secret_is_401_not_500(call, set_env):
    set_env(CRON_SECRET="s3cret")
    reply = _dry(call, {"Authorization": "Bearer s3crét"})
    assert reply.status == 401
    assert reply.json["error"]["code"] == "unauthorized"


def test_utf8_bytes_token_over_the_wire_is_401(emulator, set_env):
    set_env(CRON_SECRET="s3cret")
    emu = emulator("cleanup_logs", CRON_SECRET="s3cret")
    response = requests.post(
        emu.url, headers={"Authorization": "Bearer s3cr€t".encode()}, timeout=30
    )
    assert response.status_code == 401


def test_empty_secret_refuses_every_request_with_500(call, set_env):
    set_env(CRON_SECRET="")
    reply = _dry(call, {"Authorization": "Bearer "})
    assert reply.status == 500
    assert reply.json["error"]["code"] == "configuration_error"
    assert "CRON_SECRET" in reply.json["error"]["message"]


def test_unset_secret_refuses_even_a_matching_looking_token(call, set_env):
    set_env(CRON_SECRET=None)
    reply = _dry(call, {"Authorization": "Bearer None"})
    assert reply.status == 500


def test_require_bearer_compares_bytes_of_non_ascii_secrets():
    settings = load_settings({"CRON_SECRET": "pässwörd-123"})
    # WSGI decodes header bytes as latin-1: this is how UTF-8 on the wire arrives.
    require_bearer("Bearer " + "pässwörd-123".encode().decode("latin-1"), settings)
    with pytest.raises(UnauthorizedError):
        require_bearer("Bearer passwort-123", settings)


def test_require_bearer_without_secret_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        require_bearer("Bearer x", load_settings({}))


def test_token_is_never_echoed(call, table):
    reply = _dry(call, {"Authorization": "Bearer guessed-token-value"})
    assert "guessed-token-value" not in reply.text
