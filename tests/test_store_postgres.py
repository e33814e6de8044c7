"""What only a queue that machines share does: a job belongs to a share, not to a mount
point; machines racing to enqueue the same file make one job; each machine reads paths
through its own mounts and takes only the jobs it can reach. And its setup: a password
is never in the config, and a postgresql:// database without the extra exits 78 naming
it. (The contract both backends keep is in test_store_contract.py.)"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from helpers import cli_env, run_cli, status_json, write_config

from watcherd.store import open_store

A, B = Path("/Volumes/Media/inbox"), Path("/mnt/media/inbox")


@pytest.fixture
def macs(postgres_url):
    """Two machines mounting the share `media` at different places."""
    stores = [
        open_store(postgres_url, worker="mac-a", inboxes={"media": A}),
        open_store(postgres_url, worker="mac-b", inboxes={"media": B, "local": Path("/srv/x")}),
    ]
    yield stores
    for store in stores:
        store.close()


def test_the_same_file_seen_through_two_mount_points_is_one_job(macs):
    a, b = macs
    job, created = a.enqueue(A / "talk.wav", size=1, mtime_ns=1, sha256="s")
    same, created_again = b.enqueue(B / "talk.wav", size=1, mtime_ns=7, sha256="s")
    assert created and not created_again and same.id == job.id
    assert b.is_known(B / "talk.wav", 1, 7) and a.is_known(A / "talk.wav", 1, 7)
    assert a.counts()["queued"] == 1


def test_each_machine_reads_paths_and_outputs_through_its_own_mount(macs):
    a, b = macs
    job, _ = a.enqueue(A / "sub" / "talk.wav", size=1, mtime_ns=1, sha256="s")
    taken = b.claim()
    assert taken.path == str(B / "sub" / "talk.wav")
    assert b.plan_outputs(taken.id, [str(B / "sub" / "talk.txt")])
    b.finish(taken.id, outputs=[str(B / "sub" / "talk.txt")], audio_seconds=1,
             processing_seconds=1, model="tiny.en", language="en")  # fmt: skip
    assert a.get(job.id).outputs == [str(A / "sub" / "talk.txt")]
    assert a.output_owner(A / "sub" / "talk.txt") == str(A / "sub" / "talk.wav")


def test_a_machine_takes_only_the_jobs_of_the_shares_it_mounts(macs):
    a, b = macs
    b.enqueue("/srv/x/only-b.wav", size=1, mtime_ns=1, sha256="x")
    b.enqueue("/home/b/outside.wav", size=1, mtime_ns=1, sha256="y")  # b's own
    assert a.claim() is None
    assert {b.claim().path, b.claim().path} == {"/srv/x/only-b.wav", "/home/b/outside.wav"}


def _enqueue(url: str, mount: str, barrier, results) -> None:
    store = open_store(url, worker=mount, inboxes={"media": Path(mount)})
    barrier.wait()
    _, created = store.enqueue(Path(mount) / "talk.wav", size=1, mtime_ns=1, sha256="s")
    results.put(created)
    store.close()


def test_machines_racing_to_enqueue_one_file_make_one_job_and_one_wins(postgres_url):
    context = multiprocessing.get_context("spawn")
    mounts = [f"/mnt/m{i}" for i in range(6)]
    barrier, results = context.Barrier(len(mounts)), context.Queue()
    procs = [context.Process(target=_enqueue, args=(postgres_url, m, barrier, results))
             for m in mounts]  # fmt: skip
    for p in procs:
        p.start()
    created = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sorted(created) == [False] * 5 + [True]
    store = open_store(postgres_url)
    assert store.counts()["queued"] == 1
    store.close()


def test_a_password_in_the_database_url_is_refused(tmp_path, model_cache):
    config = write_config(tmp_path, model_cache, database="postgresql://u:secret@db/watcherd")
    for command in ("status", "run"):
        result = run_cli(command, config=config, home=tmp_path)
        assert result.returncode == 78, result.stderr
        assert "PGPASSWORD or ~/.pgpass" in result.stderr and "secret" not in result.stderr


def test_a_postgresql_database_without_the_extra_exits_78_naming_it(tmp_path, model_cache):
    blocker = tmp_path / "no-psycopg" / "psycopg"  # psycopg as if it were not installed
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named psycopg')\n")
    config = write_config(tmp_path, model_cache, database="postgresql://u@db/watcherd")
    env = cli_env(tmp_path) | {"PYTHONPATH": str(blocker.parent)}
    for command in ("status", "run"):
        result = run_cli(command, config=config, home=tmp_path, env=env)
        assert result.returncode == 78, result.stderr
        assert "watcherd[postgres]" in result.stderr, result.stderr


def test_a_worker_name_another_live_host_uses_is_refused_at_start(
    tmp_path, model_cache, postgres_url
):
    store = open_store(postgres_url)
    store.run(
        "INSERT INTO workers (name, host, pid, started_at, heartbeat_at) "
        "VALUES ('studio', 'the-other-mac', 7, 0, ?)",
        [time.time()],
    )
    store.close()
    config = write_config(tmp_path, model_cache, database=postgres_url, worker_name="studio")
    result = run_cli("run", config=config, home=tmp_path)
    assert result.returncode == 78, result.stderr
    assert "'studio' is in use by host 'the-other-mac'" in result.stderr


def test_status_marks_a_worker_silent_past_its_lease(tmp_path, model_cache, postgres_url):
    store = open_store(postgres_url)
    for name, age in (("studio", 5), ("attic", 600)):  # attic's machine died 10 minutes ago
        store.run(
            "INSERT INTO workers (name, host, pid, started_at, heartbeat_at) "
            "VALUES (?, ?, 7, 0, ?)",
            [name, f"{name}-mac", time.time() - age],
        )
    store.close()
    config = write_config(tmp_path, model_cache, database=postgres_url, lease_seconds=60)
    workers = {w["name"]: w for w in status_json(config, tmp_path)["workers"]}
    assert workers["attic"]["silent"] and not workers["studio"]["silent"]
    text = run_cli("status", config=config, home=tmp_path).stdout
    lines = {line.split()[0]: line for line in text.splitlines() if " on " in line}
    assert "silent past its lease" in lines["attic"]
    assert "silent" not in lines["studio"]
