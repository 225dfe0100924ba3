"""The demo that `make run` seeds: the job keeps every row newer than the cutoff."""

from __future__ import annotations

from datetime import datetime

from devstack.demo import seed_log_folder, seed_log_table


def test_demo_purge_keeps_every_row_newer_than_cutoff(
    call, conn, pg, env, set_env, tmp_path, clean_ledger
):
    seed_log_table(pg.url, rows=20_000)
    logs, outside = tmp_path / "demo-logs", tmp_path / "outside"
    seed_log_folder(logs, outside)
    set_env(LOG_DIR=str(logs))
    conn.execute("drop table if exists demo_snapshot")
    conn.execute('create table demo_snapshot as select id, "timestamp" from logs')

    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 200, reply.text
    results = reply.json["results"]
    cutoff = datetime.fromisoformat(results["database"]["cutoff"])
    assert results["database"]["deleted"] > 0
    assert results["files"]["deleted_files"] > 0
    remaining_old = conn.execute(
        'select count(*) from logs where "timestamp" < %s', (cutoff,)
    ).fetchone()[0]
    assert remaining_old == 0
    lost = conn.execute(
        "select count(*) from demo_snapshot s"
        ' where (s."timestamp" >= %s or s."timestamp" is null)'
        " and not exists (select 1 from logs l where l.id = s.id)",
        (cutoff,),
    ).fetchone()[0]
    assert lost == 0
    conn.execute("drop table demo_snapshot")
    assert conn.execute(
        'select count(*) from logs where "timestamp" is null'
    ).fetchone()[0]
    assert (outside / "sentinel.log").exists()
    assert (outside / "keep.log").exists()
    assert (logs / "app.log").exists()
    assert (logs / "README.txt").exists()
