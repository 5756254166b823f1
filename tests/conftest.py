from __future__ import annotations

from collections.abc import Iterator
import os
from typing import TYPE_CHECKING
import uuid

import pytest


if TYPE_CHECKING:
    from dask_cluster import DaskCluster

    from pipekit.testing import PipeTester

pytest_plugins = ["pipekit.testing"]

#: The stores the core tests run against (``--store`` URL schemes).
STORES = ["json", "sqlite", "postgresql"]


def postgres_url() -> str:
    """The test server's URL; skips (fails in CI) when there is none."""
    url = os.environ.get("PIPEKIT_TEST_POSTGRES_URL")
    if url:
        return url
    reason = "no PostgreSQL server: set PIPEKIT_TEST_POSTGRES_URL (bash .ci/postgres.sh starts one)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must test the postgresql store")
    pytest.skip(reason)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A fresh store URL of each kind (None for the default JSON directory)."""
    yield from store_url_fixture(request.param, tmp_path_factory)


def store_url_fixture(kind: str, tmp_path_factory: pytest.TempPathFactory | None = None) -> Iterator[str | None]:
    """A fresh store of ``kind``, emptied afterwards."""
    if kind == "json":
        yield None
    elif kind == "sqlite":
        assert tmp_path_factory is not None
        yield f"sqlite:{tmp_path_factory.mktemp('sqlite')}/state.db"
    else:
        namespace = f"t_{uuid.uuid4().hex}"
        base = postgres_url()
        yield f"{base}{'&' if '?' in base else '?'}pipeline={namespace}"
        _drop_namespace(base, namespace)


@pytest.fixture
def postgres_store_url() -> Iterator[str | None]:
    """A fresh namespace on the test PostgreSQL server."""
    yield from store_url_fixture("postgresql")


def _drop_namespace(base: str, namespace: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as db:
        for table in ("pipekit_items", "pipekit_outputs", "pipekit_leases", "pipekit_checkpoints"):
            db.execute(f"DELETE FROM {table} WHERE pipeline = %s", (namespace,))


@pytest.fixture
def any_store(pipetester: PipeTester, store_url: str | None, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Runs of ``pipetester`` use each store in turn (through ``PIPEKIT_STORE``)."""
    if store_url is not None:
        monkeypatch.setenv("PIPEKIT_STORE", store_url)
    return store_url


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A Dask scheduler and two single-threaded workers started as separate
    processes, shared by the tests of a module and stopped at its end."""
    from dask_cluster import DaskCluster

    cluster = DaskCluster(tmp_path_factory.mktemp("dask-cluster"), workers=2, threads=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
