"""Shared fixtures: real audio from ../shared/audio, a real model, real temp folders."""

from __future__ import annotations

import csv
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import write_config

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT.parent / "shared" / "audio"


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    """Real speech; only the tests that use it need it (the store and config tests don't)."""
    if not AUDIO.is_dir():
        pytest.fail(f"the test audio is missing: {AUDIO} (clone beside ../shared)")
    return AUDIO


@pytest.fixture(scope="session")
def manifest(audio_dir) -> dict[str, dict]:
    with (audio_dir / "MANIFEST.tsv").open(encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return {row["file"]: row for row in rows}


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One model cache for the session: the tiny.en conversion happens once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def engine(model_cache):
    from watcherd.engine import Engine

    engine = Engine("tiny.en", model_cache)
    engine.load()
    return engine


@pytest.fixture(scope="session", params=["cpu", "mlx"])
def compute(engine, request):
    """Each compute path over the same float32 tiny.en, on MLX's CPU device: `mlx` runs
    the code that Metal and CUDA run."""
    import mlx.core as mx

    from watcherd.engine import compute

    loaded = engine.load()
    if request.param == "cpu" and loaded.dtype != mx.float32:
        pytest.skip("the CPU path runs float32 weights; a GPU's model is float16")
    if loaded.compute.name == request.param:
        return loaded.compute
    return compute.create(request.param, loaded.model)


@pytest.fixture(autouse=True)
def no_thread_leaks():
    """Fail a test that leaves threads running (as watchdog's own suite does)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked: {[t.name for t in leaked]}")


@pytest.fixture
def config_file(tmp_path, model_cache) -> Path:
    return write_config(tmp_path, model_cache)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A real PostgreSQL server for the session (`pgcluster`), stopped at the end."""
    from pgcluster import Cluster, server_binaries

    bindir = server_binaries()
    if bindir is None:
        pytest.fail(
            "PostgreSQL's server is not installed: `make test-deps` installs Debian's; "
            "on a Mac, `brew install postgresql` puts initdb on PATH"
        )
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        cluster.stop()
        pytest.fail(f"cannot start a PostgreSQL cluster: {exc.stderr or exc.stdout}")
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """A fresh database on the session's server: its postgresql:// URL."""
    return postgres_cluster.create_database()
