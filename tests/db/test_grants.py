"""What the README promises about the RPC functions holds in the database, and
the README lists every function the code calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from housekeeper.db.base import FUNCTION_MIGRATIONS

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Supabase transport and migrations"


def _function(conn, name: str) -> tuple:
    rows = conn.execute(
        "select p.oid, p.prosecdef, p.proconfig from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.proname = %s",
        (name,),
    ).fetchall()
    assert len(rows) == 1, f"{name}: expected exactly one function, got {rows}"
    return rows[0]


# The purge deletes with the caller's own rights; everything else works on
# housekeeper's own schema, which the API roles cannot reach directly.
INVOKER = {
    "housekeeper_purge_prepare",
    "housekeeper_purge_batch",
    "housekeeper_purge_estimate",
}


@pytest.mark.parametrize("name", sorted(FUNCTION_MIGRATIONS))
def test_rpc_function_runs_for_service_role_only(conn, name):
    oid, security_definer, config = _function(conn, name)
    assert security_definer is (name not in INVOKER)
    assert "search_path=pg_catalog, pg_temp" in config
    allowed = {
        role: conn.execute(
            "select has_function_privilege(%s, %s::oid, 'execute')", (role, oid)
        ).fetchone()[0]
        for role in ("service_role", "anon", "authenticated")
    }
    assert allowed == {"service_role": True, "anon": False, "authenticated": False}
    public_acl = conn.execute(
        "select count(*) from pg_proc, aclexplode(proacl) a"
        " where oid = %s and a.grantee = 0",
        (oid,),
    ).fetchone()[0]
    assert public_acl == 0


def test_ledger_schema_is_closed_to_the_api_roles(conn):
    for role in ("anon", "authenticated", "service_role"):
        usage = conn.execute(
            "select has_schema_privilege(%s, 'housekeeper', 'usage')", (role,)
        ).fetchone()[0]
        assert usage is False, role


def test_readme_lists_every_rpc_function_before_the_deploy_section():
    text = README.read_text()
    assert SECTION in text
    section = text.split(SECTION, 1)[1].split("\n## ", 1)
    assert "\n## Deploy" in section[1]
    for name in FUNCTION_MIGRATIONS:
        assert f"| `{name}(" in section[0], name
    for migration in set(FUNCTION_MIGRATIONS.values()):
        assert migration in section[0], migration
