from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from store_urls import store_url_fixture


if TYPE_CHECKING:
    from dask_cluster import DaskCluster

    from pipekit.testing import PipeTester

pytest_plugins = ["pipekit.testing"]

#: The stores the core tests run against (``--store`` URL schemes).
STORES = ["json", "sqlite", "postgresql"]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A fresh store URL of each kind (None for the default JSON directory)."""
    yield from store_url_fixture(request.param, tmp_path_factory)


@pytest.fixture
def postgres_store_url() -> Iterator[str | None]:
    """A fresh namespace on the test PostgreSQL server."""
    yield from store_url_fixture("postgresql")


@pytest.fixture
def any_store(pipetester: PipeTester, store_url: str | None, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Runs of ``pipetester`` use each store in turn (through ``PIPEKIT_STORE``)."""
    if store_url is not None:
        monkeypatch.setenv("PIPEKIT_STORE", store_url)
    return store_url


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A Dask scheduler and two single-threaded workers started as separate
    processes (the second with ``--resources GPU=1``), shared by the tests of a
    module and stopped at its end."""
    from dask_cluster import DaskCluster

    cluster = DaskCluster(tmp_path_factory.mktemp("dask-cluster"), workers=2, threads=1, gpu_workers=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
