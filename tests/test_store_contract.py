"""The store's contract, on each backend: SQLite (one machine) and PostgreSQL (a real
server, `postgres_cluster`). One row per file content, atomic claims, crash recovery and
the rule that gives up a file that kills its worker, leases and the fleet, checkpoints,
pause, priorities, hooks, and what `status` reads."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from watcherd.store import CLAIMED, DECODED, DECODING, STATES, Store, open_store


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str:
    """A fresh, empty queue: a SQLite file, or a database on the test server."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return request.getfixturevalue("postgres_url")


# The tests' files are in one inbox, which every worker mounts at /in.
INBOXES = {"in": Path("/in")}


@pytest.fixture
def store(database):
    store = open_store(database, worker="mac-1", inboxes=INBOXES)
    yield store
    store.close()


@pytest.fixture
def other(database, store):
    """A second worker on the same queue (another machine, where the backend is shared)."""
    other = open_store(database, worker="mac-2", inboxes=INBOXES)
    yield other
    other.close()


def source(store: Store) -> str:
    """What `open_store` opens the same queue from, in another process."""
    return getattr(store, "url", None) or str(store.path)


def add(store: Store, path: str = "/in/talk.m4a", sha: str = "aaa", size: int = 10, mtime: int = 1):
    return store.enqueue(path, size=size, mtime_ns=mtime, sha256=sha)


def test_state_check_constraint_rejects_unknown_states(store):
    add(store)
    with pytest.raises(store.errors):
        store.run("UPDATE jobs SET state = 'lost'")


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


def _claimer(source: str, queue) -> None:
    store = open_store(source, worker=f"claimer-{os.getpid()}", inboxes=INBOXES)
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
        multiprocessing.get_context("spawn").Process(target=_claimer, args=(source(store), queue))
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


def _claim_all(source: str, queue) -> None:
    store = open_store(source, worker=f"claimer-{os.getpid()}", inboxes=INBOXES)
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
    procs = [context.Process(target=_claim_all, args=(source(store), queue)) for _ in range(3)]
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


# --- what status shows of the queue ------------------------------------------------------


def test_the_outlook_sums_the_waiting_audio_and_the_recent_speed(store):
    store.enqueue("/in/a.mp3", size=1, mtime_ns=1, sha256="a", audio_seconds=60)
    store.enqueue("/in/b.mp3", size=1, mtime_ns=1, sha256="b", audio_seconds=30)
    store.enqueue("/in/c.mp3", size=1, mtime_ns=1, sha256="c")  # no declared length
    assert store.outlook().speed is None, "no job has finished yet"
    job = store.claim()
    store.run("UPDATE jobs SET started_at = started_at - 6 WHERE id = ?", [job.id])
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
    assert store.rows("SELECT input FROM hooks")[0]["input"] is None, "its input is not kept"


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


# --- versioned schema --------------------------------------------------------------------


def test_the_schema_is_versioned_and_migrated_once(store, database):
    assert store.schema_version == len(store.migrations) >= 1
    add(store)
    again = open_store(database)  # reopening runs no step again, and keeps the jobs
    try:
        assert again.schema_version == len(store.migrations)
        assert again.counts()["queued"] == 1
    finally:
        again.close()


def test_a_database_from_a_newer_watcherd_is_refused_by_both(store, database):
    if database.startswith("postgresql://"):
        store.run("UPDATE watcherd_schema SET version = version + 1")
    else:
        store.run(f"PRAGMA user_version = {len(store.migrations) + 1}")
    with pytest.raises(RuntimeError, match="newer than this watcherd knows"):
        open_store(database)


# --- checkpoints and pause ---------------------------------------------------------------


def test_checkpoints_are_kept_in_order_dropped_for_other_content_and_cleared_when_done(store):
    add(store)
    job = store.claim()
    for until in (32_000, 16_000, 16_000):  # the same checkpoint twice is saved once
        store.save_checkpoint(job.id, "aaa", {"until": until, "segments": f"[{until}]"})
    assert [r["until"] for r in store.checkpoints(job.id, "aaa")] == [16_000, 32_000]
    assert store.checkpoints(job.id, "bbb") == [], "the file changed: its old work is dropped"
    store.save_checkpoint(job.id, "aaa", {"until": 8_000, "segments": "[]", "language": "en",
                                          "probability": 0.9})  # fmt: skip
    (saved,) = store.checkpoints(job.id, "aaa")
    assert (saved["language"], saved["probability"]) == ("en", 0.9)
    _finish(store, job.id)
    assert store.checkpoints(job.id, "aaa") == []


def test_pause_is_kept_in_the_database(store, database):
    assert not store.paused()
    store.set_paused(True)
    again = open_store(database)
    try:
        assert again.paused(), "another process (or machine) sees it"
        again.set_paused(False)
        assert not store.paused()
    finally:
        again.close()


def test_set_priority_counts_while_queued(store):
    first, _ = add(store, "/in/a.mp3", "a")
    late, _ = add(store, "/in/b.mp3", "b")
    assert store.set_priority(late.id, -1).priority == -1
    assert store.claim().id == first.id


# --- leases: jobs a dead worker held go back to the queue -------------------------------


def test_a_claimed_job_carries_its_lease(store):
    add(store)
    job = store.claim(pid=4242)
    assert (job.worker, job.worker_pid) == ("mac-1", 4242)
    assert job.heartbeat_at == pytest.approx(time.time(), abs=5)


def test_a_heartbeat_renews_the_lease_of_the_workers_own_jobs_only(store, other):
    add(store, "/in/a.mp3", "a")
    add(store, "/in/b.mp3", "b")
    mine, theirs = store.claim(), other.claim()
    store.run("UPDATE jobs SET heartbeat_at = 0")
    store.heartbeat(pid=1, model="tiny.en", job_id=mine.id, speed=None, started_at=0)
    assert store.get(mine.id).heartbeat_at == pytest.approx(time.time(), abs=5)
    assert store.get(theirs.id).heartbeat_at == 0


def test_an_expired_lease_puts_the_job_back_for_any_worker_with_its_checkpoints(store, other):
    job, _ = add(store)
    store.claim()
    store.set_stage(job.id, DECODING)
    save(store, job.id, 16_000)
    assert other.recover(poison_after=3, lease_seconds=60, mine=False) == (0, 0), "alive"
    store.run("UPDATE jobs SET heartbeat_at = heartbeat_at - 61")  # mac-1 stopped beating
    assert other.recover(poison_after=3, lease_seconds=60, mine=False) == (1, 0)
    taken = other.claim()
    assert (taken.id, taken.worker, taken.interrupted) == (job.id, "mac-2", 1)
    assert taken.attempts == 2
    assert [r["until"] for r in other.checkpoints(job.id, "aaa")] == [16_000], "resumes there"


def test_a_worker_whose_lease_was_taken_can_no_longer_touch_the_job(store, other):
    job, _ = add(store)
    store.claim()
    store.run("UPDATE jobs SET heartbeat_at = heartbeat_at - 61")
    other.recover(poison_after=3, lease_seconds=60, mine=False)
    other.claim()
    assert store.set_progress(job.id, 50) is False, "the old holder learns it lost the job"
    assert store.plan_outputs(job.id, ["/in/talk.txt"]) is False, "so it writes nothing"
    assert _finish(store, job.id) is False
    assert store.fail(job.id, "late") and store.get(job.id).state == "running"
    store.requeue(job.id)
    assert store.get(job.id).worker == "mac-2" and store.get(job.id).state == "running"
    assert _finish(other, job.id) is True


def test_at_start_a_worker_takes_back_its_own_jobs_but_not_the_live_ones_of_others(store, other):
    add(store, "/in/a.mp3", "a")
    add(store, "/in/b.mp3", "b")
    mine, theirs = store.claim(), other.claim()
    assert store.recover(poison_after=3, lease_seconds=60) == (1, 0)  # mac-1 restarted
    assert store.get(mine.id).state == "queued"
    assert store.get(theirs.id).state == "running"


def test_a_file_that_kills_every_machine_that_takes_it_is_given_up(store, other):
    """The poison rule across machines: each stall counts, whoever stalled on it."""
    job, _ = add(store)
    for worker in [store, other, store]:
        taken = worker.claim()
        assert taken.id == job.id
        worker.set_stage(job.id, DECODING)
        worker.run("UPDATE jobs SET heartbeat_at = heartbeat_at - 61")  # it died there
        requeued, failed = (other if worker is store else store).recover(
            poison_after=2, lease_seconds=60, mine=False
        )
    assert (requeued, failed) == (0, 1)
    assert store.get(job.id).state == "failed"
    assert "died 2 times in a row" in store.get(job.id).error


# --- the fleet ---------------------------------------------------------------------------


def test_each_worker_reports_itself_and_leaves_on_a_clean_stop(store, other):
    add(store)
    job = store.claim()
    store.heartbeat(pid=11, model="tiny.en", job_id=job.id, speed=None, started_at=100.0)
    other.heartbeat(pid=22, model="base", job_id=None, speed=12.5, started_at=200.0)
    store.heartbeat(pid=11, model="tiny.en", job_id=job.id, speed=3.0, started_at=100.0)
    one, two = store.workers()
    assert (one.name, one.pid, one.model, one.job_id, one.speed) == ("mac-1", 11, "tiny.en",
                                                                    job.id, 3.0)  # fmt: skip
    assert (two.name, two.model, two.job_id, two.speed) == ("mac-2", "base", None, 12.5)
    assert one.host and one.heartbeat_at == pytest.approx(time.time(), abs=5)
    other.leave()
    assert [w.name for w in store.workers()] == ["mac-1"]
