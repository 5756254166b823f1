"""Fresh store URLs of each kind for the tests (a module, so test files can import it
without depending on which ``conftest`` Python found first)."""

from __future__ import annotations

from collections.abc import Iterator
import os
import uuid

import pytest


def postgres_url() -> str:
    """The test server's URL; skips (fails in CI) when there is none."""
    url = os.environ.get("PIPEKIT_TEST_POSTGRES_URL")
    if url:
        return url
    reason = "no PostgreSQL server: set PIPEKIT_TEST_POSTGRES_URL (bash .ci/postgres.sh starts one)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must test the postgresql store")
    pytest.skip(reason)


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


def _drop_namespace(base: str, namespace: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as db:
        for table in ("pipekit_items", "pipekit_outputs", "pipekit_leases", "pipekit_checkpoints"):
            db.execute(f"DELETE FROM {table} WHERE pipeline = %s", (namespace,))
