"""HookNotifier: every implementation called on its own, in pluggy's order, as plugins come and go."""

from __future__ import annotations

from collections.abc import Iterator

from pipekit.hookspecs import hookimpl
from pipekit.manager import PipekitPluginManager
from pipekit.notify import HookNotifier


class Recorder:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    @hookimpl
    def pipekit_item_start(self, item: object) -> None:
        self.log.append(f"{self.name} {item}")
        if self.fail:
            raise RuntimeError(f"{self.name} broke")


class Wrapper:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    @hookimpl(wrapper=True)
    def pipekit_item_start(self, item: object) -> Iterator[None]:
        self.log.append("before")
        yield
        self.log.append("after")


def notifier() -> tuple[PipekitPluginManager, HookNotifier, list[str]]:
    pm = PipekitPluginManager()
    reports: list[str] = []
    return pm, HookNotifier(pm, report=reports.append), reports


def test_plugins_registered_or_removed_between_calls_are_seen() -> None:
    pm, notify, _ = notifier()
    log: list[str] = []
    first = Recorder("first", log)
    pm.register(first, "first")
    notify("pipekit_item_start", item=1)
    pm.register(Recorder("second", log), "second")
    notify("pipekit_item_start", item=2)
    pm.unregister(first)
    notify("pipekit_item_start", item=3)
    pm.register(Wrapper(log), "wrapper")
    notify("pipekit_item_start", item=4)
    # pluggy's order: the last registered first, wrappers around the rest
    assert log == ["first 1", "second 2", "first 2", "second 3", "before", "second 4", "after"]


def test_a_raising_implementation_is_reported_once_and_the_others_still_run() -> None:
    pm, notify, reports = notifier()
    log: list[str] = []
    pm.register(Recorder("good", log), "good")
    pm.register(Recorder("bad", log, fail=True), "bad")
    pm.register(Wrapper(log), "wrapper")
    for item in (1, 2):
        notify("pipekit_item_start", item=item)
    assert log == ["before", "bad 1", "good 1", "after", "before", "bad 2", "good 2", "after"]
    assert notify.errors == 2
    assert len(reports) == 1
    assert "plugin 'bad' raised in pipekit_item_start" in reports[0] and "RuntimeError: bad broke" in reports[0]


def test_a_hook_nobody_implements_is_a_no_op() -> None:
    _, notify, reports = notifier()
    notify("pipekit_item_start", item=1)
    assert notify.errors == 0 and reports == []
