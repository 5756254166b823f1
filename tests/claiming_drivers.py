"""Drivers started on one store over the same items, for the tests of claims and locks.

``PIPELINE`` logs every phase it runs (``executions``); phase 1 of the items named
in ``BLOCK_ON`` holds its item until the test creates ``go`` (``blocked_driver``).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
import json
import subprocess
import time

from pipekit.testing import PipeTester


PIPELINE = '''
    import json, os, time
    from pathlib import Path
    from pipekit import phase

    def log(item_id, num):
        fd = os.open("executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (json.dumps([item_id, num, os.getpid()]) + "\\n").encode())
        os.close(fd)

    @phase(1)
    def one(item_id):
        log(item_id, 1)
        if item_id in os.environ.get("BLOCK_ON", "").split(","):
            Path(f"blocked-{item_id}").touch()
            while not Path("go").exists():  # the test kills this process here, or says go
                time.sleep(0.02)
        return "1"

    @phase(2)
    def two(item_id, one):
        log(item_id, 2)
        return one + "2"
'''


def executions(tester: PipeTester) -> Counter[tuple[str, int]]:
    log = tester.path / "executions.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter((item_id, num) for item_id, num, _ in map(json.loads, lines))


def drivers(tester: PipeTester, count: int, *args: str, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    return [tester.popen("pipeline.py", "--items", "items.txt", *args, env=env) for _ in range(count)]


def blocked_driver(tester: PipeTester, blocked: list[str], *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """A driver (``args``) whose phase 1 of each of ``blocked`` holds its item until the
    test creates ``go``; returned once every one of them is held there."""
    driver = tester.popen("pipeline.py", *args, env={**env, "BLOCK_ON": ",".join(blocked)})
    deadline = time.monotonic() + 60
    while not all((tester.path / f"blocked-{item_id}").exists() for item_id in blocked):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.02)
    return driver


def communicate(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[tuple[str, str]]:
    """Every driver's output, read at once: a driver blocked on a full pipe would hold its items."""
    with ThreadPoolExecutor(len(procs)) as pool:
        return list(pool.map(lambda proc: proc.communicate(timeout=timeout), procs))
