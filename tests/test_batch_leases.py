"""The leases a run takes to send its batches (PostgreSQL): giving them up never
stops the run, as a finished item's never does (``Lease.release_soon``)."""

from __future__ import annotations

from collections import Counter
import json
from pathlib import Path
import time

import pytest

from pipekit.state.open import open_store_url
from pipekit.testing import FakeBatch
from pipekit.testing import PipeTester


PIPELINE = '''
import json, os, time
from pathlib import Path
from pipekit import phase
from pipekit.testing import FakeBatch

class Held(FakeBatch):
    """Stops where BLOCK says, the submission's lease held, until the test says go."""

    def submit(self, key, requests):
        if os.environ.get("BLOCK") == "submit":
            wait_for_go()
        return super().submit(key, requests)

    def find(self, key, requests, known=()):
        if os.environ.get("BLOCK") == "find":
            wait_for_go()
        return super().find(key, requests, known)

def wait_for_go():
    Path("blocked").touch()
    while not Path("go").exists():
        time.sleep(0.02)

BATCHES = {"fake": Held("fake.json", crash_after_submit=bool(os.environ.get("CRASH")))}

@phase(1, batch="fake")
def ask(item_id):
    return [{"custom_id": f"{item_id}-q", "body": {"about": item_id}}]

@phase(2)
def keep(item_id, ask):
    with open("kept.log", "a") as log:
        log.write(json.dumps(item_id) + "\\n")
    return sorted(ask)
'''

IDS = ["a", "b", "c"]


def kept(tester: PipeTester) -> Counter[str]:
    log = tester.path / "kept.log"
    return Counter(map(json.loads, log.read_text().splitlines())) if log.exists() else Counter()


@pytest.mark.slow
@pytest.mark.parametrize("block", ["submit", "find"])
def test_a_batch_leases_release_stuck_on_the_server_does_not_stop_the_run(
    pipetester: PipeTester, postgres_store_url: str, block: str
) -> None:
    """``submit``: a fresh submission; ``find``: the resume of one a killed run
    recorded. Either way the submission's lease is given up once its batch id is
    saved, a round trip that must not hold the run up: here the server holds it (a
    row lock), as a slow or busy server would, and the run collects the batch and
    goes on with the items' next phase meanwhile."""
    import psycopg

    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items(*IDS)
    run = ["pipeline.py", "--items", "items.txt", "-p", "no:prices", "--wait"]
    env = {"PIPEKIT_STORE": postgres_store_url}
    if block == "find":  # a run killed right after its batch reached the provider, before its id was saved
        killed = pipetester.popen(*run, env={**env, "CRASH": "1"})
        killed.communicate(timeout=60)
        assert killed.returncode == -9
    driver = pipetester.popen(*run, env={**env, "BLOCK": block})
    deadline = time.monotonic() + 60
    while not (pipetester.path / "blocked").exists():
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.02)
    store = open_store_url(postgres_store_url)
    pipeline, conninfo = store.pipeline, store.conninfo  # type: ignore[attr-defined]
    store.close()
    with psycopg.connect(conninfo) as holding:
        # Deleting the submission's lease row now waits for this transaction.
        locked = holding.execute(
            """SELECT item_id FROM pipekit_leases WHERE pipeline = %s AND item_id LIKE 'pipekit-batches-%%'
               FOR NO KEY UPDATE""",
            (pipeline,),
        ).fetchall()
        assert len(locked) == 1
        (pipetester.path / "go").touch()
        deadline = time.monotonic() + 30
        try:
            while kept(pipetester) != Counter(IDS):
                assert driver.poll() is None, driver.communicate()
                assert time.monotonic() < deadline, f"the run stopped; kept so far: {sorted(kept(pipetester))}"
                time.sleep(0.05)
        finally:
            holding.rollback()
        _, err = driver.communicate(timeout=60)
        assert driver.returncode == 0, err
        left = holding.execute("SELECT item_id FROM pipekit_leases WHERE pipeline = %s", (pipeline,)).fetchall()
        assert left == []  # the exit deleted every lease it held or had released
    assert FakeBatch(Path(pipetester.path / "fake.json")).submitted == [[f"{i}-q" for i in IDS]]
