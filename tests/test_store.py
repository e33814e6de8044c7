"""The job queue: one row per file content, atomic claims, crash recovery, migrations."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from watcherd.store import CLAIM_ORDER, CLAIMED, DECODED, DECODING, MIGRATIONS, STATES, Store


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "jobs.db")
    yield store
    store.close()


def add(store: Store, path: str = "/in/talk.m4a", sha: str = "aaa", size: int = 10, mtime: int = 1):
    return store.enqueue(path, size=size, mtime_ns=mtime, sha256=sha)


def test_schema_is_versioned_and_in_wal_mode(store, tmp_path):
    assert store.schema_version == len(MIGRATIONS)
    assert store.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Reopening does not run the migrations again.
    again = Store(tmp_path / "jobs.db")
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


def test_state_check_constraint_rejects_unknown_states(store):
    add(store)
    with pytest.raises(sqlite3.IntegrityError):
        store.execute("UPDATE jobs SET state = 'lost'")


def test_same_content_at_same_path_is_queued_once(store):
    job, created = add(store)
    again, created_again = add(store, mtime=2)  # touched, same bytes
    assert created and not created_again
    assert again.id == job.id
    assert store.is_known("/in/talk.m4a", 10, 2), "the new stat is remembered"
    assert store.counts()["queued"] == 1


def test_changed_content_at_same_path_is_a_new_job(store):
    first, _ = add(store, sha="aaa")
    second, created = add(store, sha="bbb", size=11, mtime=5)
    assert created and second.id != first.id


def test_claim_takes_the_oldest_and_marks_it_running(store):
    first, _ = add(store, "/in/a.mp3", "1")
    add(store, "/in/b.mp3", "2")
    job = store.claim(pid=4242)
    assert job.id == first.id and job.state == "running" and job.attempts == 1
    assert store.get(first.id).state == "running"
    assert store.claim().path == "/in/b.mp3"
    assert store.claim() is None


def _claimer(db_path: str, queue) -> None:
    store = Store(db_path)
    claimed = []
    while (job := store.claim()) is not None:
        claimed.append(job.id)
    store.close()
    queue.put(claimed)


def test_concurrent_claims_from_several_processes_never_share_a_job(store, tmp_path):
    for n in range(60):
        add(store, f"/in/{n}.mp3", str(n))
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [
        multiprocessing.get_context("spawn").Process(target=_claimer, args=(str(store.path), queue))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == sorted(set(claimed)), "a job was claimed twice"
    assert len(claimed) == 60


def test_recover_requeues_jobs_a_crash_left_running_behind_the_others(store):
    add(store, "/in/a.m4a", "a")
    add(store, "/in/b.m4a", "b")
    job = store.claim()
    assert store.recover(poison_after=3) == (1, 0)
    again = store.get(job.id)
    assert (again.state, again.interrupted, again.stalls) == ("queued", 1, 0)
    assert store.claim().path == "/in/b.m4a", "the interrupted job waits behind the others"


def save(store: Store, job_id: int, until: int) -> None:
    store.save_checkpoint(job_id, "aaa", {"until": until, "segments": "[]"})


def test_a_job_that_keeps_making_progress_is_never_given_up(store):
    add(store)
    for crash in range(10):
        job = store.claim()
        store.set_stage(job.id, DECODING)  # dies while the engine works on it, each time
        save(store, job.id, 16_000 * (crash + 1))  # but a second further on
        assert store.recover(poison_after=3) == (1, 0)
    assert store.get(job.id).stalls == 0


def crash_while(store: Store, stage: int) -> tuple[int, int]:
    """Claim the next job, let it get to `stage` in this run, and die there."""
    job = store.claim()
    store.set_stage(job.id, stage)
    return store.recover(poison_after=2)


def test_a_suspect_that_dies_in_the_engine_without_progress_is_given_up(store):
    job, _ = add(store)
    assert crash_while(store, DECODING) == (1, 0)  # first interruption: not yet a suspect
    assert crash_while(store, DECODING) == (1, 0)  # now run alone: the crash is laid at its door
    assert store.get(job.id).stalls == 1
    assert crash_while(store, DECODING) == (0, 1)
    failed = store.get(job.id)
    assert failed.state == "failed"
    assert failed.error.startswith("/in/talk.m4a: the daemon died 2 times in a row")
    store.retry(job.id)
    again = store.get(job.id)
    assert (again.state, again.interrupted, again.stalls) == ("queued", 0, 0)


def test_only_a_crash_while_the_engine_works_on_a_file_counts_against_it(store):
    job, _ = add(store)
    crash_while(store, DECODING)
    for _ in range(5):  # before the engine took the file: nothing learnt about it
        assert crash_while(store, CLAIMED) == (1, 0)
    crash_while(store, DECODING)
    assert store.get(job.id).stalls == 1
    crash_while(store, DECODED)  # the engine got through it: the file is fine
    assert store.get(job.id).stalls == 0
    assert crash_while(store, DECODING) == (1, 0)


def test_requeue_on_clean_stop_does_not_count_the_attempt(store):
    add(store)
    job = store.claim()
    store.requeue(job.id)
    again = store.get(job.id)
    assert again.state == "queued" and again.attempts == 0


def test_fail_with_retry_requeues_after_a_backoff(store):
    add(store)
    job = store.claim()
    assert store.fail(job.id, "busy", retry_after=60) == "queued"
    assert store.claim() is None, "not due yet"
    assert store.get(job.id).error == "busy"


def test_fail_without_retry_ends_failed(store):
    add(store)
    job = store.claim()
    assert store.fail(job.id, "/in/talk.m4a: empty file") == "failed"
    assert store.get(job.id).state == "failed"


def test_finish_records_outcome_and_outputs(store):
    add(store)
    job = store.claim()
    store.set_progress(job.id, 40)
    assert store.get(job.id).progress == 40
    store.finish(
        job.id,
        outputs=["/in/talk.txt"],
        audio_seconds=60,
        processing_seconds=6,
        model="tiny.en",
        language="en",
    )
    done = store.get(job.id)
    assert (done.state, done.progress, done.outputs) == ("done", 100, ["/in/talk.txt"])
    assert done.speed == pytest.approx(10)
    assert store.output_owner("/in/talk.txt") == "/in/talk.m4a"
    assert store.output_owner("/in/other.txt") is None


def test_cancel_stops_progress_reports_and_retry_requeues(store):
    add(store)
    job = store.claim()
    assert store.cancel(job.id).state == "cancelled"
    assert store.set_progress(job.id, 50) is False, "the worker learns it was cancelled"
    assert (
        store.finish(
            job.id, outputs=[], audio_seconds=1, processing_seconds=1, model="m", language="en"
        )
        is False
    )
    retried = store.retry(job.id)
    assert retried.state == "queued" and retried.attempts == 0


def test_counts_name_every_state(store):
    add(store)
    assert set(store.counts()) == set(STATES)
    assert store.counts()["queued"] == 1


def test_new_content_supersedes_the_older_version_still_queued(store):
    old, _ = add(store, sha="aaa")
    new, _ = add(store, sha="bbb", size=11, mtime=5)
    assert store.get(old.id).state == "cancelled" and "superseded" in store.get(old.id).error
    assert store.get(new.id).state == "queued"


def test_a_database_from_a_newer_watcherd_is_refused(store, tmp_path):
    store.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this watcherd knows"):
        Store(tmp_path / "jobs.db")


def test_a_file_reached_through_a_linked_folder_is_one_job(store, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    add(store, str(real / "a.mp3"))
    _, created = add(store, str(tmp_path / "link" / "a.mp3"))
    assert not created


# --- priorities ------------------------------------------------------------------------


def test_claim_takes_the_highest_priority_first_and_the_oldest_among_equals(store):
    low, _ = store.enqueue("/in/low.mp3", size=1, mtime_ns=1, sha256="l", priority=-1)
    first, _ = add(store, "/in/first.mp3", "1")
    second, _ = add(store, "/in/second.mp3", "2")
    urgent, _ = store.enqueue("/in/urgent.mp3", size=1, mtime_ns=1, sha256="u", priority=1)
    assert store.next_job().id == urgent.id, "status names the job claim takes"
    order = [store.claim().id for _ in range(4)]
    assert order == [urgent.id, first.id, second.id, low.id]


def test_bump_puts_a_job_ahead_of_every_other_queued_job(store):
    ids = [add(store, f"/in/{n}.mp3", str(n))[0].id for n in range(3)]
    urgent, _ = store.enqueue("/in/u.mp3", size=1, mtime_ns=1, sha256="u", priority=1)
    bumped = store.bump(ids[2])
    assert bumped.priority == 2 and bumped.state == "queued"
    assert store.bump(ids[2]).priority == 2, "bumping the first job again changes nothing"
    assert [store.claim().id for _ in range(4)] == [ids[2], urgent.id, ids[0], ids[1]]


def test_bump_leaves_a_job_that_is_not_queued_alone(store):
    add(store)
    running = store.claim()
    assert store.bump(running.id) == store.get(running.id)
    with pytest.raises(KeyError):
        store.bump(999)


def test_a_high_priority_job_waiting_its_backoff_does_not_hold_up_the_queue(store):
    urgent, _ = store.enqueue("/in/u.mp3", size=1, mtime_ns=1, sha256="u", priority=1)
    store.fail(store.claim().id, "disk full", retry_after=60)
    normal, _ = add(store, "/in/n.mp3", "n")
    assert store.claim().id == normal.id
    assert store.get(urgent.id).priority == 1, "the retry keeps its priority"


def _claim_all(db_path: str, queue) -> None:
    store = Store(db_path)
    claimed = []
    while (job := store.claim()) is not None:
        claimed.append((job.priority, job.id))
    store.close()
    queue.put(claimed)


def test_concurrent_claimers_take_every_job_once_and_high_priorities_first(store):
    for n in range(40):
        store.enqueue(f"/in/{n}.mp3", size=1, mtime_ns=1, sha256=str(n), priority=n % 3 - 1)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_claim_all, args=(str(store.path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    claimed = [job_id for result in results for _, job_id in result]
    assert sorted(claimed) == list(range(1, 41)), "every job claimed exactly once"
    for result in results:  # each claimer saw the queue in its order
        assert [priority for priority, _ in result] == sorted(
            (priority for priority, _ in result), reverse=True
        )


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
    store = Store(path)
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


# --- skipped jobs and hooks ------------------------------------------------------------


def _queue_before_hooks(path, monkeypatch) -> None:
    """A queue as the release before hooks left it (every migration before theirs), with
    some history."""
    from watcherd import store as store_module

    monkeypatch.setattr(
        store_module, "MIGRATIONS", MIGRATIONS[: MIGRATIONS.index(store_module._migration_3)]
    )
    old = Store(path)
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

    from watcherd import store as store_module

    through_hooks = MIGRATIONS[: MIGRATIONS.index(store_module._migration_3) + 1]
    monkeypatch.setattr(store_module, "MIGRATIONS", through_hooks)  # the later ones apart
    store = Store(path)
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


# --- what status shows of the queue ------------------------------------------------------


def test_the_outlook_sums_the_waiting_audio_and_the_recent_speed(store):
    store.enqueue("/in/a.mp3", size=1, mtime_ns=1, sha256="a", audio_seconds=60)
    store.enqueue("/in/b.mp3", size=1, mtime_ns=1, sha256="b", audio_seconds=30)
    store.enqueue("/in/c.mp3", size=1, mtime_ns=1, sha256="c")  # no declared length
    assert store.outlook().speed is None, "no job has finished yet"
    job = store.claim()
    store.execute("UPDATE jobs SET started_at = started_at - 6 WHERE id = ?", [job.id])
    store.finish(job.id, outputs=[], audio_seconds=60, processing_seconds=5, model="m",
                 language="en")  # fmt: skip
    outlook = store.outlook()
    assert (outlook.waiting, outlook.waiting_audio_seconds, outlook.unknown_length) == (2, 30, 1)
    # Wall clock from claim to finish (about 6 s), not the engine's 5 s alone.
    assert outlook.speed == pytest.approx(10, rel=0.05) and outlook.speed_jobs == 1


def test_a_running_job_estimates_its_rest_from_its_own_pace_once_it_has_one(store):
    store.enqueue("/in/a.mp3", size=1, mtime_ns=1, sha256="a", audio_seconds=100)
    job = store.claim()
    now = job.started_at + 2
    assert job.remaining_seconds(speed=20, now=now) == pytest.approx(3), "100 s at 20x, less 2"
    assert job.remaining_seconds(speed=20, now=now + 10) == 0, "any moment now"
    now = job.started_at + 10
    store.set_progress(job.id, 40)
    job = store.get(job.id)
    assert job.remaining_seconds(speed=20, now=now) == pytest.approx(15), "40% in 10 s"


def test_status_reads_a_queue_that_a_daemon_from_before_hooks_still_runs(tmp_path, monkeypatch):
    path = tmp_path / "jobs.db"
    _queue_before_hooks(path, monkeypatch)
    reader = Store(path, readonly=True)
    try:
        jobs = reader.jobs(limit=10)
        assert [j.id for j in jobs] == [4, 3, 2, 1] and all(j.hook_state is None for j in jobs)
        assert reader.get(1).state == "done" and reader.schema_version < len(MIGRATIONS)
    finally:
        reader.close()


def test_a_skipped_job_keeps_its_reason_and_can_be_retried(store):
    add(store)
    job = store.claim()
    assert store.skip(job.id, "it has subtitles already: talk.srt")
    skipped = store.get(job.id)
    assert (skipped.state, skipped.error) == ("skipped", "it has subtitles already: talk.srt")
    assert store.counts()["skipped"] == 1
    assert store.retry(job.id).state == "queued"


def _finish(store, job_id, **kwargs):
    return store.finish(job_id, outputs=["/in/talk.txt"], audio_seconds=60,
                        processing_seconds=6, model="tiny.en", language="en", **kwargs)  # fmt: skip


def test_a_done_job_with_a_hook_records_it_due_with_its_input(store):
    add(store)
    job = store.claim()
    assert _finish(store, job.id, hook_input='{"text": "hi"}')
    (due,) = store.due_hooks()
    assert (due.job.id, due.event, due.attempts, due.input) == (job.id, "done", 0, '{"text": "hi"}')
    assert due.job.state == "done" and due.job.outputs == ["/in/talk.txt"]
    assert store.get(job.id).hook_state == "pending"


def test_a_hook_interrupted_by_a_crash_stays_due_and_counts_its_attempts(store):
    add(store)
    job = store.claim()
    _finish(store, job.id, hook_input="{}")
    assert store.start_hook(job.id) == 1
    (due,) = store.due_hooks()  # the daemon died here: at the next start it is still due
    assert due.attempts == 1 and due.input == "{}"
    assert store.start_hook(job.id) == 2
    store.end_hook(job.id, "done", exit_code=0)
    assert store.due_hooks() == [], "recorded as ended: never again"
    done = store.get(job.id)
    assert (done.hook_state, done.hook_attempts, done.hook_error) == ("done", 2, None)
    assert store.rows("SELECT input FROM hooks")[0][0] is None, "its input is not kept"


def test_a_failed_hook_is_recorded_with_its_error(store):
    add(store)
    job = store.claim()
    _finish(store, job.id, hook_input="{}")
    store.start_hook(job.id)
    store.end_hook(job.id, "timed_out", exit_code=-9, error="timed out after 60 s (killed)")
    assert store.due_hooks() == []
    listed = store.jobs()[0]
    assert (listed.state, listed.hook_state) == ("done", "timed_out")
    assert listed.hook_error == "timed out after 60 s (killed)"


def test_a_done_job_without_a_hook_has_no_hook_row(store):
    add(store)
    job = store.claim()
    _finish(store, job.id)
    assert store.due_hooks() == [] and store.get(job.id).hook_state is None


def test_the_failed_hook_is_due_only_when_the_job_fails_for_good(store):
    add(store)
    job = store.claim()
    assert store.fail(job.id, "busy", retry_after=0, hook=True) == "queued"
    assert store.due_hooks() == [], "retried: not failed yet"
    job = store.claim()
    assert store.fail(job.id, "/in/talk.m4a: empty file", hook=True) == "failed"
    (due,) = store.due_hooks()
    assert (due.event, due.input, due.job.error) == ("failed", None, "/in/talk.m4a: empty file")


def test_a_job_transcribed_again_runs_its_hook_again(store):
    add(store)
    job = store.claim()
    _finish(store, job.id, hook_input="{}")
    store.start_hook(job.id)
    store.end_hook(job.id, "done", exit_code=0)
    store.retry(job.id)
    again = store.claim()
    _finish(store, again.id, hook_input='{"v": 2}')
    (due,) = store.due_hooks()
    assert (due.attempts, due.input) == (0, '{"v": 2}')


def test_a_cancelled_job_gets_no_hook(store):
    add(store)
    job = store.claim()
    store.cancel(job.id)
    assert not _finish(store, job.id, hook_input="{}")
    assert store.due_hooks() == []


def test_a_migration_that_rebuilds_the_jobs_table_keeps_the_hooks_of_its_jobs(
    tmp_path, monkeypatch
):
    """A later step that widens the CHECK again rebuilds the table the hooks reference:
    the hooks stay, and foreign keys are enforced again afterwards."""
    from watcherd import store as store_module

    first = Store(tmp_path / "jobs.db")
    add(first)
    job = first.claim()
    _finish(first, job.id, hook_input="{}")
    first.close()
    widen = lambda db: store_module._allow_state(db, "archived")  # noqa: E731
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, widen])
    again = Store(tmp_path / "jobs.db")
    try:
        assert again.schema_version == len(MIGRATIONS) + 1
        assert [d.job.id for d in again.due_hooks()] == [job.id]
        assert again.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            again.execute("INSERT INTO hooks (job_id, event, created_at) VALUES (99, 'done', 0)")
        again.execute("UPDATE jobs SET state = 'archived'")
    finally:
        again.close()
