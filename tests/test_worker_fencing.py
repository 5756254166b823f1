"""A worker process's writes for an item are fenced by its driver's lease (PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import os
from pathlib import Path
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from pipekit.execution import workerstores
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import execute_call
from pipekit.state.holder import LeaseLostError
from pipekit.state.open import open_store_url
from pipekit.testing import PipeTester


def test_a_worker_store_fenced_by_the_drivers_lease_cannot_write_once_another_driver_took_it(
    postgres_store_url: str,
) -> None:
    driver = open_store_url(f"{postgres_store_url}&lease=0.5")
    rival = open_store_url(f"{postgres_store_url}&lease=0.5")
    url = driver.reopen_url()
    assert url is not None
    worker = open_store_url(url)  # as a worker process opens the run's store
    try:
        assert driver.try_lock("a") is not None
        token = driver.fencing_token("a")
        assert token is not None and rival.fencing_token("a") is None
        worker.fence_as("a", token)
        worker.save_checkpoint("a", "p", "k", "worker")  # the driver holds the lease: it lands
        assert rival.load_checkpoints("a", "p") == {"k": "worker"}
        driver._stop.set()  # type: ignore[attr-defined]  # stop renewing, as a paused driver does
        time.sleep(1)
        assert rival.try_lock("a") is not None
        rival.save("a", {"item_id": "a", "by": "rival"})
        rival.save_checkpoint("a", "p", "k", "rival")
        for write in (
            lambda: worker.save("a", {"item_id": "a", "by": "worker"}),
            lambda: worker.save_many([("a", {"item_id": "a", "by": "worker"})]),
            lambda: worker.save_group([("a", {"item_id": "a", "by": "worker"})], [("a", "p")]),
            lambda: worker.save_checkpoint("a", "p", "k", "worker, late"),
            lambda: worker.save_checkpoints("a", "p", {"k": "worker, many"}),
            lambda: worker.drop_checkpoints("a", "p"),
        ):
            with pytest.raises(LeaseLostError) as caught:
                write()
            assert caught.value.item_ids == ["a"]
        # the worker reports it to its driver as itself
        crossed = pickle.loads(pickle.dumps(caught.value))
        assert isinstance(crossed, LeaseLostError) and str(crossed) == str(caught.value)
        assert (crossed.item_ids, crossed.released) == (["a"], False)
        assert rival.load("a") == {"item_id": "a", "by": "rival"}
        assert rival.load_checkpoints("a", "p") == {"k": "rival"}
        worker.close()  # never took the lease, so never frees the rival's
        assert open_store_url(postgres_store_url).try_lock("a") is None
    finally:
        for store in (worker, driver, rival):
            store.close()


PIPELINE = '''
    import os, time
    from pipekit import phase

    def wait_for(name):
        while not os.path.exists(name):
            time.sleep(0.02)

    @phase(1)
    def research(item_id, ctx):
        if os.environ.get("RIVAL"):
            ctx.checkpoint("step", lambda: "rival")
            open("rival-in-research", "w").close()
            wait_for("rival-go")
            return "notes by the rival"
        ctx.checkpoint("start", lambda: "paused")
        open("in-research", "w").close()
        wait_for("go")  # the worker runs on while its driver is stopped
        try:
            ctx.checkpoint("step", lambda: "paused")
        finally:
            open("worker-wrote", "w").close()
        return "notes by the paused driver"
'''


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_worker_of_a_driver_paused_past_its_lease_does_not_overwrite_the_new_holders_checkpoint(
    pipetester: PipeTester, postgres_store_url: str
) -> None:
    pipetester.make_pipeline(PIPELINE)
    folder = pipetester.path
    command = [
        sys.executable, "-m", "pipekit", "pipeline.py", "--item", "a",
        "--store", f"{postgres_store_url}&lease=1", "--executor", "processes", "-j", "1",
    ]
    paused = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rival: subprocess.Popen[str] | None = None
    store = open_store_url(postgres_store_url)
    try:
        wait_for(folder / "in-research")
        paused.send_signal(signal.SIGSTOP)  # the driver only: its worker runs on
        time.sleep(2.5)  # its lease (1 s) expires
        rival = subprocess.Popen(
            command, cwd=folder, env={**os.environ, "RIVAL": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        wait_for(folder / "rival-in-research")
        (folder / "go").touch()
        wait_for(folder / "worker-wrote")  # its driver still stopped, the rival holding the item
        step = str(store.load_checkpoints("a", "research")["step"])
        assert "rival" in step and "paused" not in step, step
    finally:
        (folder / "rival-go").touch()
        paused.send_signal(signal.SIGCONT)
        if rival is not None:
            rival.communicate(timeout=120)
        store.close()
    _, stderr = paused.communicate(timeout=120)
    assert "lease on item 'a' expired and another driver took it over" in stderr, stderr
    assert paused.returncode == 0, stderr
    assert rival.returncode == 0
    store = open_store_url(postgres_store_url)
    try:
        document = store.load("a")
    finally:
        store.close()
    assert document is not None and document["phase_outputs"] == {"1": "notes by the rival"}, document


TWO_DRIVERS = '''
    import os, time
    from pipekit import phase

    @phase(1)
    def research(item_id, ctx):
        folder, who = ctx.metadata["folder"], ctx.metadata["who"]
        if who == "rival":
            ctx.checkpoint("step", lambda: "rival")
            return "rival"
        ctx.checkpoint("start", lambda: who)
        open(os.path.join(folder, "in-research"), "w").close()
        while not os.path.exists(os.path.join(folder, "go")):
            time.sleep(0.02)
        ctx.checkpoint("step", lambda: who)
        return who
'''


def test_two_drivers_calls_for_one_item_in_one_worker_each_write_under_their_own_lease(
    postgres_store_url: str, tmp_path: Path
) -> None:
    # A shared Dask cluster: the call of a driver paused past its lease runs on in a
    # worker process, which then runs the new holder's call for the same item.
    module = tmp_path / "pipeline.py"
    module.write_text(textwrap.dedent(TWO_DRIVERS))
    driver = open_store_url(f"{postgres_store_url}&lease=0.5")
    rival = open_store_url(f"{postgres_store_url}&lease=0.5")
    url = driver.reopen_url()

    def call(store: Any, who: str) -> RemoteCall:
        context = {
            "item_id": "a", "metadata": {"folder": str(tmp_path), "who": who}, "attempt": 1,
            "output_dir": str(tmp_path), "executor": "processes", "store_url": url,
            "fencing_token": store.fencing_token("a"), "idempotency_key": who,
        }
        return RemoteCall(str(module), "research", "handler", {"item_id": "a"}, context)

    try:
        assert driver.try_lock("a") is not None
        with ThreadPoolExecutor(1) as pool:
            paused = pool.submit(execute_call, call(driver, "paused"))
            wait_for(tmp_path / "in-research")
            driver._stop.set()  # type: ignore[attr-defined]
            time.sleep(1)
            assert rival.try_lock("a") is not None
            assert execute_call(call(rival, "rival")).error is None
            (tmp_path / "go").touch()
            outcome = paused.result(timeout=60)
        assert isinstance(outcome.error, LeaseLostError), outcome.error
        assert "rival" in str(rival.load_checkpoints("a", "research")["step"])
    finally:
        (tmp_path / "go").touch()
        driver.close()
        rival.close()


def test_a_worker_keeps_few_idle_stores_open_and_never_closes_one_in_use(tmp_path: Path) -> None:
    # One store per driver's token: a worker serving many runs must not keep a connection for each.
    url = f"json:{tmp_path}"
    in_use = workerstores.take_store(url, "first driver")
    for run in range(workerstores.KEEP_IDLE + 3):
        workerstores.take_store(url, f"driver {run}")
        workerstores.give_back_store(url, f"driver {run}")
    try:
        kept = [key for key in workerstores._open if key[0] == url]
        assert (url, "first driver") in kept and len(kept) <= workerstores.KEEP_IDLE + 1, kept
        in_use.save_checkpoint("a", "p", "k", 1)  # still open
    finally:
        workerstores.give_back_store(url, "first driver")
