"""The SQLite backend's own behaviour: WAL, its migrations from every older version, and
reading a queue an older daemon still runs. What every backend does is in
test_store_contract.py."""

from __future__ import annotations

import sqlite3

import pytest

from watcherd.store import CLAIM_ORDER, MIGRATIONS, Store, open_store


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path / "jobs.db")
    yield store
    store.close()


def add(store: Store, path: str = "/in/talk.m4a", sha: str = "aaa", size: int = 10, mtime: int = 1):
    return store.enqueue(path, size=size, mtime_ns=mtime, sha256=sha)


def test_schema_is_versioned_and_in_wal_mode(store, tmp_path):
    assert store.schema_version == len(MIGRATIONS)
    assert store.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Reopening does not run the migrations again.
    again = open_store(tmp_path / "jobs.db")
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_job_row_has_every_documented_column(store):
    columns = {row["name"] for row in store.rows("PRAGMA table_info(jobs)")}
    assert {
        "path",
        "size",
        "sha256",
        "state",
        "attempts",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "audio_seconds",
        "processing_seconds",
        "progress",
        "outputs",
        "model",
    } <= columns


def test_a_database_from_a_newer_watcherd_is_refused(store, tmp_path):
    store.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this watcherd knows"):
        open_store(tmp_path / "jobs.db")


def test_a_version_1_database_gets_every_migration_and_keeps_its_jobs(tmp_path):
    import sqlite_utils

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO jobs (path, path_key, size, mtime_ns, sha256, created_at) "
        "VALUES ('/in/old.mp3', '/in/old.mp3', 1, 1, 'o', 0)"
    )
    db.close()
    store = open_store(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert store.get(1).priority == 0
        urgent, _ = store.enqueue("/in/u.mp3", size=1, mtime_ns=1, sha256="u", priority=1)
        assert [store.claim().id, store.claim().id] == [urgent.id, 1]
        plan = " ".join(r[3] for r in store.rows(
            "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'queued' AND not_before <= 0 "
            f"ORDER BY {CLAIM_ORDER} LIMIT 1"))  # fmt: skip
        assert "jobs_claim" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        store.close()


def _queue_before_hooks(path, monkeypatch) -> None:
    """A queue as the release before hooks left it (every migration before theirs), with
    some history."""
    from watcherd.store import sqlite as store_module

    monkeypatch.setattr(
        store_module, "MIGRATIONS", MIGRATIONS[: MIGRATIONS.index(store_module._migration_3)]
    )
    old = open_store(path)
    for n, state in enumerate(["done", "failed", "queued", "cancelled", "done"], start=1):
        old.execute(
            "INSERT INTO jobs (path, path_key, size, mtime_ns, sha256, state, created_at,"
            " outputs, priority) VALUES (?, ?, 10, 1, ?, ?, ?, ?, ?)",
            [f"/in/{n}.mp3", f"/in/{n}.mp3", str(n), state, 1000.0 + n, f'["/in/{n}.txt"]',
             n % 2],
        )  # fmt: skip
    old.execute("DELETE FROM jobs WHERE id = 5")  # the sequence is ahead of the rows
    old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)


def _indexes(conn) -> dict:
    """The jobs table's indexes: name, uniqueness, origin (created, UNIQUE), and columns
    with their order (the claim's index has `priority DESC`)."""
    return {
        name: (
            unique,
            origin,
            [(c[2], c[3]) for c in conn.execute(f"PRAGMA index_xinfo('{name}')") if c[5]],
        )  # fmt: skip
        for _, name, unique, origin, _ in conn.execute("PRAGMA index_list(jobs)").fetchall()
    }


def test_migrating_a_queue_to_hooks_keeps_every_row_index_and_constraint(tmp_path, monkeypatch):
    path = tmp_path / "jobs.db"
    _queue_before_hooks(path, monkeypatch)
    before = sqlite3.connect(path)
    rows_before = before.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    indexes_before = _indexes(before)
    before.close()

    from watcherd.store import sqlite as store_module

    through_hooks = MIGRATIONS[: MIGRATIONS.index(store_module._migration_3) + 1]
    monkeypatch.setattr(store_module, "MIGRATIONS", through_hooks)  # the later ones apart
    store = open_store(path)
    try:
        assert store.schema_version == len(through_hooks)
        columns = [r["name"] for r in store.rows("PRAGMA table_info(jobs)")]
        rows_after = [tuple(r) for r in store.rows(f"SELECT {', '.join(columns)} FROM jobs")]
        assert rows_after == [tuple(r) for r in rows_before], "every row, every value"
        assert _indexes(store.conn) == indexes_before, "claim, stat and UNIQUE, as they were"
        assert len(indexes_before) == 3
        assert store.execute("PRAGMA foreign_keys").fetchone()[0] == 1, "still enforced"
        assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.execute("PRAGMA foreign_key_check").fetchall() == []
        plan = store.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'queued' AND not_before <= 0"
            " ORDER BY priority DESC, not_before, id"  # the claim's order at that version
        ).fetchall()
        assert "jobs_claim" in " ".join(str(tuple(r)) for r in plan)
        job, created = add(store, "/in/new.mp3", "new")
        assert created and job.id == 6, "AUTOINCREMENT goes on after the deleted row 5"
        _, again = add(store, "/in/new.mp3", "new")
        assert not again, "UNIQUE (path_key, sha256) still holds"
        store.execute("UPDATE jobs SET state = 'skipped' WHERE id = 6")
        with pytest.raises(sqlite3.IntegrityError):
            store.execute("UPDATE jobs SET state = 'lost' WHERE id = 6")
    finally:
        store.close()


def test_status_reads_a_queue_that_a_daemon_from_before_hooks_still_runs(tmp_path, monkeypatch):
    path = tmp_path / "jobs.db"
    _queue_before_hooks(path, monkeypatch)
    reader = open_store(path, readonly=True)
    try:
        jobs = reader.jobs(limit=10)
        assert [j.id for j in jobs] == [4, 3, 2, 1] and all(j.hook_state is None for j in jobs)
        assert reader.get(1).state == "done" and reader.schema_version < len(MIGRATIONS)
    finally:
        reader.close()


def _finish(store, job_id, **kwargs):
    return store.finish(job_id, outputs=["/in/talk.txt"], audio_seconds=60,
                        processing_seconds=6, model="tiny.en", language="en", **kwargs)  # fmt: skip


def test_a_migration_that_rebuilds_the_jobs_table_keeps_the_hooks_of_its_jobs(
    tmp_path, monkeypatch
):
    """A later step that widens the CHECK again rebuilds the table the hooks reference:
    the hooks stay, and foreign keys are enforced again afterwards."""
    from watcherd.store import sqlite as store_module

    first = open_store(tmp_path / "jobs.db")
    add(first)
    job = first.claim()
    _finish(first, job.id, hook_input="{}")
    first.close()
    widen = lambda db: store_module._allow_state(db, "archived")  # noqa: E731
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, widen])
    again = open_store(tmp_path / "jobs.db")
    try:
        assert again.schema_version == len(MIGRATIONS) + 1
        assert [d.job.id for d in again.due_hooks()] == [job.id]
        assert again.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            again.execute("INSERT INTO hooks (job_id, event, created_at) VALUES (99, 'done', 0)")
        again.execute("UPDATE jobs SET state = 'archived'")
    finally:
        again.close()


def test_the_lease_columns_and_the_workers_table_come_with_migration_5(store):
    columns = {row["name"] for row in store.rows("PRAGMA table_info(jobs)")}
    assert {"worker", "worker_pid", "heartbeat_at"} <= columns
    assert store.rows("SELECT name FROM sqlite_master WHERE name = 'workers'")
