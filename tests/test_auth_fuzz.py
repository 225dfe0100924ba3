"""Fuzzed Authorization headers: only 200 or 401 (500 without a secret), and the
comparison does the same work whatever the token."""

from __future__ import annotations

import contextlib
import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from housekeeper import auth
from housekeeper.auth import require_bearer
from housekeeper.config import load_settings
from housekeeper.errors import ConfigurationError, UnauthorizedError
from tests.support import TEST_SECRET, create_log_table

_HEADERS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=300),
    st.builds(
        lambda scheme, spaces, token: f"{scheme}{spaces}{token}",
        st.sampled_from(["Bearer", "bearer", "BEARER", "Bearer Bearer", "Basic", ""]),
        st.sampled_from([" ", "  ", "\t", "", " \x00"]),
        st.one_of(st.just(TEST_SECRET), st.text(max_size=80)),
    ),
    st.just("Bearer " + "a" * 10_000),
)


@settings(max_examples=300, deadline=None)
@given(header=_HEADERS)
def test_any_header_is_accepted_or_unauthorized_never_crashes(header):
    configured = load_settings(
        {"CRON_SECRET": TEST_SECRET, "CRON_SECRET_PREVIOUS": "x" * 8}
    )
    try:
        require_bearer(header, configured)
    except UnauthorizedError:
        return
    assert header.partition(" ")[2] in (TEST_SECRET, "x" * 8)


@settings(max_examples=100, deadline=None)
@given(header=_HEADERS)
def test_any_header_without_a_secret_configured_is_refused(header):
    with pytest.raises(ConfigurationError):
        require_bearer(header, load_settings({"CRON_SECRET": ""}))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic abc",
        "Bearer",
        "Bearer wrong",
        f"Bearer {TEST_SECRET}",
        "Bearer " + "é" * 50,
        "Bearer a b",
    ],
)
def test_every_token_costs_one_comparison_per_configured_secret(monkeypatch, header):
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((type(a).__name__, type(b).__name__))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    configured = load_settings(
        {"CRON_SECRET": TEST_SECRET, "CRON_SECRET_PREVIOUS": "old-1234"}
    )
    with contextlib.suppress(UnauthorizedError):
        require_bearer(header, configured)
    assert calls == [("bytes", "bytes"), ("bytes", "bytes")]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    header=st.text(
        alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=120
    )
)
def test_fuzzed_headers_through_the_target_answer_only_401(call, conn, header):
    reply = call(
        "cleanup_logs",
        json={"dry_run": True},
        token=None,
        headers={"Authorization": header},
    )
    assert reply.status in (200, 401)
    if reply.status == 401:
        assert reply.json["error"]["code"] == "unauthorized"


@pytest.fixture(autouse=True)
def _table(request, conn):
    if "call" in request.fixturenames:
        create_log_table(conn)
