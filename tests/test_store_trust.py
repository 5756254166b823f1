"""Stores that read without creating, migrations that finish, and text every store keeps."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from pipekit.state.open import open_store_url
from pipekit.testing import PipeTester


PIPELINE = '''
    from pipekit import phase

    @phase(1)
    def research(item_id):
        return f"notes on {item_id}"
'''


def test_status_of_a_missing_sqlite_store_names_it_and_creates_nothing(pipetester: PipeTester, tmp_path: Path) -> None:
    pipetester.make_pipeline(PIPELINE)
    missing = tmp_path / "typo" / "state.db"
    result = pipetester.run("status", "pipeline.py", "--store", f"sqlite:{missing}")
    assert result.ret == 4, result
    assert f"sqlite store {missing} does not exist" in result.stderr
    assert not missing.parent.exists()
    # a run still creates it, and then status reads it
    assert pipetester.run("pipeline.py", "--item", "a", "--store", f"sqlite:{missing}").ret == 0
    shown = pipetester.run("status", "pipeline.py", "--store", f"sqlite:{missing}")
    assert shown.ret == 0, shown


def test_status_of_a_postgres_database_without_pipekit_tables_creates_none(
    pipetester: PipeTester, postgres_store_url: str
) -> None:
    import psycopg

    pipetester.make_pipeline(PIPELINE)
    base = postgres_store_url.split("?")[0]
    with psycopg.connect(base, autocommit=True) as db:
        db.execute("CREATE SCHEMA IF NOT EXISTS empty_for_status")
    url = f"{base}?options=-csearch_path%3Dempty_for_status&pipeline=p"
    try:
        result = pipetester.run("status", "pipeline.py", "--store", url)
        assert result.ret == 4, result
        assert "holds no pipekit state" in result.stderr
        with psycopg.connect(base, autocommit=True) as db:
            tables = db.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'empty_for_status'"
            ).fetchone()
        assert tables == (0,)
    finally:
        with psycopg.connect(base, autocommit=True) as db:
            db.execute("DROP SCHEMA empty_for_status CASCADE")
