"""Several pipekit processes on one state dir; locks of dead processes."""

from __future__ import annotations

from collections import Counter
import errno
import fcntl
import json
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from pipekit.outcomes import StateWriteError
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.sqlite import SqliteStore
from pipekit.testing import PipeTester


PIPELINE = '''
    import asyncio, json, os, time
    from pipekit import phase

    def log(item_id, num):
        fd = os.open("executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (json.dumps([item_id, num, os.getpid()]) + "\\n").encode())
        os.close(fd)

    @phase(1)
    async def one(item_id):
        log(item_id, 1)
        await asyncio.sleep(0.01)
        return "1"

    @phase(2)
    def two(item_id, one):
        log(item_id, 2)
        time.sleep(0.01)
        return one + "2"

    @phase(3)
    async def three(item_id, two):
        log(item_id, 3)
        return two + "3"
'''


@pytest.mark.slow
@pytest.mark.usefixtures("any_store")  # started together on a new store of each kind
def test_three_runners_on_thirty_items_execute_every_phase_exactly_once(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    ids = [f"item-{n:02d}" for n in range(30)]
    pipetester.make_items(*ids)
    procs = [pipetester.popen("pipeline.py", "--items", "items.txt", "-j", "4") for _ in range(3)]
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outs
    runs = [tuple(json.loads(line)) for line in (pipetester.path / "executions.log").read_text().splitlines()]
    executions = Counter((item_id, num) for item_id, num, _ in runs)
    assert executions == Counter({(i, n): 1 for i in ids for n in (1, 2, 3)})
    completed_by = Counter(
        json.loads(line)["item_id"]
        for out, _ in outs for line in out.splitlines()
        if json.loads(line)["event"] == "item_finish"
    )
    assert sorted(completed_by) == ids and set(completed_by.values()) == {1}
    rerun = pipetester.run("pipeline.py", "--items", "items.txt")
    assert rerun.ret == 0 and not rerun.calls("pipekit_phase_start"), rerun
    for item_id in ids:
        state = rerun.state(item_id)
        assert state.status == "completed" and state.phase_outputs[3] == "123"


def test_a_lock_held_by_a_killed_process_is_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pipekit.state.jsondir import JsonDirStore\n"
            f"lock = JsonDirStore({str(tmp_path)!r}).try_lock('a')\n"
            "print('locked' if lock else 'busy', flush=True)\n"
            "time.sleep(60)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    store = JsonDirStore(tmp_path)
    assert store.try_lock("a") is None  # held by a live process
    holder.kill()
    holder.communicate()
    lock = store.try_lock("a")
    assert lock is not None  # the lock file is still there; it does not block
    assert (tmp_path / ".locks" / "a.lock").exists()
    lock.release()


def test_a_file_system_without_locks_runs_unlocked_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    store = JsonDirStore(tmp_path)
    first, second = store.try_lock("a"), store.try_lock("b")
    assert first is not None and second is not None and not first.locked
    first.release()
    second.release()
    err = capsys.readouterr().err
    assert err.count("does not support file locks (No locks available)") == 1


def test_a_lock_that_cannot_be_created_is_a_state_write_error(tmp_path: Path) -> None:
    (tmp_path / ".locks").write_text("a file where the lock folder should be")
    with pytest.raises(StateWriteError, match="cannot write state .*a.lock"):
        JsonDirStore(tmp_path).try_lock("a")


def test_the_sqlite_lock_folder_is_made_by_the_first_lock_and_again_if_removed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "nested" / "state.db")
    locks = tmp_path / "nested" / "state.db.locks"
    assert not locks.exists()
    first = store.try_lock("a")
    assert first is not None and (locks / "a.lock").exists()
    first.release()
    shutil.rmtree(locks)  # removed mid-run (a cleanup script): the next lock makes it again
    second = store.try_lock("b")
    assert second is not None and (locks / "b.lock").exists()
    second.release()
    store.close()
