"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` as separate processes.

The cluster keeps Dask's default configuration (a task whose worker died is
run again, work stealing on), as a cluster of the user's own would, so the
tests see what ``--dask-scheduler`` users see. Each command runs in a session
of its own, so stopping it reaches the nanny and the worker processes it
started.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any


class DaskCluster:
    """A scheduler on a free port of 127.0.0.1 and ``workers`` worker processes
    of ``threads`` threads each, every one under a nanny that restarts it when it dies.

    :param folder: where the processes run and keep their files; it holds no pipeline,
        so workers can only run a pipeline's code by getting it from the driver.
    :param gpu_workers: how many of the workers are started with ``--resources GPU=1``.
    """

    def __init__(self, folder: Path, workers: int = 2, threads: int = 1, gpu_workers: int = 0) -> None:
        self.folder = folder
        self.workers = workers
        self.threads = threads
        self.gpu_workers = gpu_workers
        self.address = ""
        self._processes: list[subprocess.Popen[bytes]] = []
        self._client: Any = None

    def start(self, timeout: float = 60) -> None:
        """Start the scheduler and the workers; return once every worker has registered."""
        self.folder.mkdir(parents=True, exist_ok=True)
        scheduler_file = self.folder / "scheduler.json"
        self._spawn("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(scheduler_file))
        deadline = time.monotonic() + timeout
        while not self.address:
            self._check_alive(deadline)
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = json.loads(scheduler_file.read_text())["address"]
            time.sleep(0.05)
        for count, extra in ((self.workers - self.gpu_workers, ()), (self.gpu_workers, ("--resources", "GPU=1"))):
            if count:
                self._spawn("worker", self.address, "--host", "127.0.0.1", "--nworkers", str(count),
                            "--nthreads", str(self.threads), "--no-dashboard", "--local-directory",
                            str(self.folder), *extra)
        while self.registered_workers() < self.workers:
            self._check_alive(deadline)
            time.sleep(0.1)

    def registered_workers(self) -> int:
        """How many workers the scheduler knows now."""
        from distributed import Client

        if self._client is None:
            self._client = Client(self.address, timeout=20)
        return len(self._client.scheduler_info(n_workers=-1)["workers"])

    def worker_resources(self) -> dict[str, dict[str, float]]:
        """Each registered worker's address and the resources it was started with."""
        workers = self._client.scheduler_info(n_workers=-1)["workers"]
        return {address: dict(info.get("resources") or {}) for address, info in workers.items()}

    def wait_for_workers(self, timeout: float = 60) -> None:
        """Wait until every worker is registered again (a nanny restarts a killed one)."""
        deadline = time.monotonic() + timeout
        while self.registered_workers() < self.workers:
            self._check_alive(deadline)
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate every process of the cluster, killing what does not end at once."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        for proc in self._processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self._processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            # The nanny's workers may outlive it: kill the whole session whatever happened.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._processes.clear()

    def _spawn(self, command: str, *args: str) -> None:
        dask = Path(sys.executable).with_name("dask")
        log = (self.folder / f"{command}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        self._processes.append(
            subprocess.Popen(
                [str(dask), command, *args],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
        log.close()

    def _check_alive(self, deadline: float) -> None:
        for proc in self._processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[1]} exited with {proc.returncode}:\n{self.logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Dask cluster did not start in time:\n{self.logs()}")

    def logs(self) -> str:
        """What the scheduler and the workers wrote, for failure messages."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))

