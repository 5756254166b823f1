"""A test helper for pipelines and plugins, like pytest's ``pytester``.

Enable it with ``pytest_plugins = ["pipekit.testing"]`` (or ``-p pipekit.testing``)
and use the ``pipetester`` fixture::

    def test_resume(pipetester):
        pipetester.make_pipeline('''
            from pipekit import phase

            @phase(1)
            def hello(item_id):
                return f"hello {item_id}"
        ''')
        result = pipetester.run("pipeline.py", "--item", "a")
        assert result.ret == 0
        assert result.state("a").phase_outputs[1] == "hello a"

``run`` works in this process (fast, sees every hook call); ``run_subprocess``
starts ``python -m pipekit`` with ``--jsonl`` and can kill it at a chosen event.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import contextlib
import csv
from dataclasses import dataclass
from dataclasses import field
import fnmatch
import io
import json
import os
from pathlib import Path
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from pipekit.hookspecs import hookimpl
from pipekit.outcomes import ExitCode
from pipekit.pipeline.fakebatch import FakeBatch
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.manager import PipelineStateManager
from pipekit.state.model import PipelineState
from pipekit.state.store import StateStore


_STATE_LINE = re.compile(r"^pipekit: state: (.+)$", re.M)

#: Observer hooks and the event names they correspond to (CONTRACT §6).
HOOK_EVENTS = {
    "pipekit_run_start": "run_start",
    "pipekit_item_start": "item_start",
    "pipekit_phase_wait": "phase_wait",
    "pipekit_phase_start": "phase_start",
    "pipekit_phase_progress": "phase_progress",
    "pipekit_subitem_finish": "subitem_finish",
    "pipekit_phase_complete": "phase_complete",
    "pipekit_phase_retry": "phase_retry",
    "pipekit_phase_fail": "phase_fail",
    "pipekit_phase_skip": "phase_skip",
    "pipekit_item_finish": "item_finish",
    "pipekit_budget_reached": "budget_reached",
    "pipekit_run_finish": "run_finish",
}


#: Hook arguments named otherwise in ``--jsonl`` events.
_EVENT_FIELDS = {"exitstatus": "exit_status", "spent": "spent_usd", "cap": "cap_usd"}


class HookRecorder:
    """A plugin that records every hook call from ``pipekit_configure`` on, in the
    order the calls start, with their arguments (through pluggy's hook-call
    monitoring, so hooks added by plugins are recorded too).

    ``pipekit_addoption`` comes before any plugin can see the plugin manager and
    is not recorded.
    """

    name = "pipetester-recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._undo: Callable[[], None] | None = None

    def _before(self, hookname: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.calls.append((hookname, dict(kwargs)))

    def _after(self, outcome: Any, hookname: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        pass

    @hookimpl(tryfirst=True)
    def pipekit_configure(self, config: Any) -> None:
        # The call that hands over the plugin manager is already under way.
        self.calls.append(("pipekit_configure", {"config": config}))
        self._undo = config.pluginmanager.add_hookcall_monitoring(self._before, self._after)

    @hookimpl(trylast=True)
    def pipekit_unconfigure(self, config: Any) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """The calls as ``(event name, payload)`` pairs shaped like ``--jsonl`` events."""
        events = []
        for hookname, kwargs in self.calls:
            if hookname not in HOOK_EVENTS:
                continue
            payload: dict[str, Any] = {}
            if "item" in kwargs:
                payload["item_id"] = kwargs["item"].id
            if "phase" in kwargs:
                payload["phase"] = kwargs["phase"].num
                payload["phase_name"] = kwargs["phase"].name
            for key in ("reason", "attempt", "exitstatus", "seconds", "spent", "cap"):
                if key in kwargs:
                    payload[_EVENT_FIELDS.get(key, key)] = kwargs[key]
            if "error" in kwargs:
                payload["error"] = str(kwargs["error"])
            events.append((HOOK_EVENTS[hookname], payload))
        return events


@dataclass
class PipeResult:
    """The outcome of a pipekit command run by ``pipetester``."""

    args: list[str]
    ret: int
    stdout: str
    stderr: str
    #: ``(event name, payload)`` in the order they happened.
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    recorder: HookRecorder | None = None
    killed: bool = False
    #: The ``PIPEKIT_STORE`` the command ran with (None: the JSON state dir it printed).
    store_url: str | None = None

    def __repr__(self) -> str:
        return (
            f"<PipeResult pipekit {' '.join(self.args)} -> {self.ret}>\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def calls(self, hookname: str) -> list[dict[str, Any]]:
        """The arguments of every call of ``hookname`` (in-process runs only)."""
        if self.recorder is None:
            raise ValueError("hook calls are recorded by run(), not run_subprocess()")
        return [kwargs for name, kwargs in self.recorder.calls if name == hookname]

    def event_names(self, item_id: str | None = None) -> list[str]:
        """Event names in order, optionally only those of ``item_id``."""
        return [n for n, p in self.events if item_id is None or p.get("item_id") == item_id]

    def fnmatch_lines(self, patterns: Iterable[str], stream: str = "stderr") -> None:
        """Assert that ``patterns`` match lines of ``stream``, in this order."""
        lines = getattr(self, stream).splitlines()
        position = 0
        for pattern in patterns:
            for index in range(position, len(lines)):
                if fnmatch.fnmatch(lines[index], pattern):
                    position = index + 1
                    break
            else:
                raise AssertionError(f"no line after line {position} matches {pattern!r}\n{self!r}")

    @property
    def state_dir(self) -> Path:
        """The state directory the run printed."""
        match = _STATE_LINE.search(self.stderr)
        if match is None:
            raise AssertionError(f"the run printed no state location\n{self!r}")
        return Path(match.group(1).strip())

    def open_store(self) -> StateStore:
        """The store the run used (the caller closes it)."""
        if self.store_url:
            from pipekit.state.open import open_store_url

            return open_store_url(self.store_url, pipeline="pipeline")
        return JsonDirStore(self.state_dir)

    def state(self, item_id: str) -> PipelineState:
        """The item's state as saved in the run's store."""
        store = self.open_store()
        try:
            manager = PipelineStateManager(item_id, store)
            if not manager.load_state():
                raise AssertionError(f"no state saved for {item_id!r} in {store.location}")
            return manager.state
        finally:
            store.close()

    def has_state(self, item_id: str) -> bool:
        """Whether the run's store holds a state for ``item_id``."""
        store = self.open_store()
        try:
            return store.load(item_id) is not None
        finally:
            store.close()

    def assert_outcomes(self, item_ids: Iterable[str] | None = None, **expected: int) -> None:
        """Count phase statuses over ``item_ids`` (default: every saved item) and compare.

        ``assert_outcomes(completed=6, failed=1)``; unnamed statuses are not checked.
        """
        if item_ids is None:
            store = self.open_store()
            try:
                ids = list(store.item_ids())
            finally:
                store.close()
        else:
            ids = list(item_ids)
        counts: dict[str, int] = {}
        for item_id in ids:
            for phase in self.state(item_id).phases.values():
                counts[phase.status] = counts.get(phase.status, 0) + 1
        got = {status: counts.get(status, 0) for status in expected}
        assert got == expected, f"phase outcomes {got} != {expected}\n{self!r}"


class PipeTester:
    """Writes pipelines and items into a fresh folder and runs pipekit on them."""

    def __init__(self, path: Path) -> None:
        #: The folder the test works in (also the current directory).
        self.path = path
        self._started: list[subprocess.Popen[str]] = []

    def make_pipeline(self, source: str, name: str = "pipeline") -> Path:
        """Write ``<name>.py`` (dedented) and return its path."""
        target = self.path / f"{name}.py"
        target.write_text(textwrap.dedent(source).lstrip("\n"))
        return target

    def make_items(self, *entries: Any, name: str = "items.txt") -> Path:
        """Write an items file: ``.txt`` of ids, ``.jsonl`` or ``.csv`` of dicts."""
        target = self.path / name
        if name.endswith(".jsonl"):
            target.write_text("".join(json.dumps(e) + "\n" for e in entries))
        elif name.endswith(".csv"):
            with target.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(entries[0]))
                writer.writeheader()
                writer.writerows(entries)
        else:
            target.write_text("".join(f"{e}\n" for e in entries))
        return target

    def make_files(self, files: dict[str, Any], root: Path | None = None) -> None:
        """Create a tree: strings are file contents, dicts are folders."""
        root = root or self.path
        for name, content in files.items():
            if isinstance(content, dict):
                (root / name).mkdir(parents=True, exist_ok=True)
                self.make_files(content, root / name)
            else:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(textwrap.dedent(content))

    def run(self, *args: str, plugins: Iterable[Any] = ()) -> PipeResult:
        """Run ``pipekit ARGS`` in this process, recording every hook call."""
        from pipekit.cli.main import main

        recorder = HookRecorder()
        out, err = io.StringIO(), io.StringIO()
        with _isolated_modules(self.path), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            ret = main(list(args), plugins=[recorder, *plugins])
        return PipeResult(
            list(args), int(ret), out.getvalue(), err.getvalue(), recorder.events(), recorder,
            store_url=os.environ.get("PIPEKIT_STORE"),
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``python -m pipekit ARGS`` with piped output (``--jsonl`` added for runs)."""
        from pipekit.cli.main import COMMANDS

        is_run = not args or args[0] == "run" or args[0] not in COMMANDS
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipekit", *args, *(["--jsonl"] if is_run else [])],
            cwd=self.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._started.append(proc)
        return proc

    def stop_processes(self) -> None:
        """SIGKILL what ``popen`` started and is still running, and close its pipes.

        The ``pipetester`` fixture calls this when the test ends, so a test that
        fails before it waited for its process leaves nothing running.
        """
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a process the run started still holds its output open
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
                proc.wait()
        self._started.clear()

    def run_subprocess(
        self,
        *args: str,
        timeout: float = 120,
        kill_at: tuple[str, str | None, int | None] | None = None,
        signal: int = signal.SIGKILL,
        env: dict[str, str] | None = None,
    ) -> PipeResult:
        """Run ``python -m pipekit ARGS --jsonl`` and collect its events.

        :param kill_at: ``(event, item_id, phase)``: send ``signal`` as soon as
            that event is seen (``None`` matches any item or phase).
        """
        proc = self.popen(*args, env=env)
        stdout_lines, killed = _read_events(proc, timeout, kill_at, signal)
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            raise AssertionError(f"pipekit {' '.join(args)} did not finish in {timeout}s:\n{stderr}") from None
        events = []
        for line in stdout_lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                events.append((record.pop("event"), record))
        return PipeResult(
            list(args), proc.returncode, "".join(stdout_lines), stderr, events, killed=killed,
            store_url={**os.environ, **(env or {})}.get("PIPEKIT_STORE"),
        )


def _read_events(
    proc: subprocess.Popen[str],
    timeout: float,
    kill_at: tuple[str, str | None, int | None] | None,
    signum: int,
) -> tuple[list[str], bool]:
    assert proc.stdout is not None
    # Read the pipe's bytes directly: a buffered readline() can pull several
    # events into its buffer at once, and select() would then wait for output
    # that already arrived (the kill came only when the process next wrote).
    fd = proc.stdout.fileno()
    lines: list[str] = []
    pending = b""
    killed = False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *complete, pending = (pending + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace") + "\n"
                lines.append(line)
                if kill_at is not None and not killed and _matches(line, kill_at):
                    proc.send_signal(signum)
                    killed = True
    if pending:
        lines.append(pending.decode("utf-8", "replace"))
    return lines, killed


def _matches(line: str, kill_at: tuple[str, str | None, int | None]) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    event, item_id, phase = kill_at
    return (
        record.get("event") == event
        and (item_id is None or record.get("item_id") == item_id)
        and (phase is None or record.get("phase") == phase)
    )


@contextlib.contextmanager
def _isolated_modules(root: Path) -> Iterator[None]:
    """Undo imports from ``root`` and ``sys.path`` changes of an in-process run
    (every test's pipeline may be called ``pipeline``).

    Libraries a plugin imported stay imported: a second copy of ``requests``
    or ``http.cookiejar`` beside the first breaks their ``isinstance`` checks.
    """
    modules = dict(sys.modules)
    path = list(sys.path)
    try:
        yield
    finally:
        for name in set(sys.modules) - set(modules):
            where = getattr(sys.modules[name], "__file__", None)
            if where is None or Path(where).resolve().is_relative_to(root.resolve()):
                del sys.modules[name]
        sys.modules.update(modules)
        sys.path[:] = path


@pytest.fixture
def pipetester(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipeTester]:
    """A fresh folder (the current directory) with pipekit's environment isolated;
    processes started with ``popen`` are killed when the test ends."""
    path = tmp_path / "project"
    path.mkdir()
    monkeypatch.chdir(path)
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.setenv("PIPEKIT_STATE_DIR", str(path / "state"))
    monkeypatch.setenv("PIPEKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    for name in ("PIPEKIT_PLUGINS", "PIPEKIT_STORE", "PIPEKIT_OUTPUT_DIR", "PIPEKIT_DEBUG_HOOKS"):
        monkeypatch.delenv(name, raising=False)
    tester = PipeTester(path)
    yield tester
    tester.stop_processes()


__all__ = ["ExitCode", "FakeBatch", "HookRecorder", "PipeResult", "PipeTester", "pipetester"]
