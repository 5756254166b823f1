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
    notify.item_start(1)
    pm.register(Recorder("second", log), "second")
    notify.item_start(2)
    pm.unregister(first)
    notify.item_start(3)
    pm.register(Wrapper(log), "wrapper")
    notify.item_start(4)
    # pluggy's order: the last registered first, wrappers around the rest
    assert log == ["first 1", "second 2", "first 2", "second 3", "before", "second 4", "after"]


def test_a_raising_implementation_is_reported_once_and_the_others_still_run() -> None:
    pm, notify, reports = notifier()
    log: list[str] = []
    pm.register(Recorder("good", log), "good")
    pm.register(Recorder("bad", log, fail=True), "bad")
    pm.register(Wrapper(log), "wrapper")
    for item in (1, 2):
        notify.item_start(item)
    assert log == ["before", "bad 1", "good 1", "after", "before", "bad 2", "good 2", "after"]
    assert notify.errors == 2
    assert len(reports) == 1
    assert "plugin 'bad' raised in pipekit_item_start" in reports[0] and "RuntimeError: bad broke" in reports[0]


def test_a_hook_nobody_implements_is_a_no_op() -> None:
    _, notify, reports = notifier()
    notify.item_start(1)
    assert notify.errors == 0 and reports == []


class ResultWrapper:
    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    @hookimpl(wrapper=True)
    def pipekit_item_start(self, item: object) -> Iterator[None]:
        result = yield
        self.seen.append(result)
        return result


class Answer:
    @hookimpl
    def pipekit_item_start(self, item: object) -> str:
        return f"answer {item}"


def test_wrappers_receive_the_results_as_pluggy_gives_them() -> None:
    pm, notify, _ = notifier()
    seen: list[object] = []
    pm.register(Recorder("plain", []), "plain")
    pm.register(Answer(), "answer")
    pm.register(ResultWrapper(seen), "wrapper")
    notify.item_start(1)
    assert seen == [["answer 1"]]


def test_hook_call_monitoring_sees_every_observer_call() -> None:
    pm, notify, _ = notifier()
    pm.register(Recorder("plain", []), "plain")
    before: list[tuple[str, dict[str, object]]] = []
    after: list[str] = []
    pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: before.append((name, dict(kwargs))),
        lambda outcome, name, impls, kwargs: after.append(name),
    )
    notify.item_start(7)
    assert before == [("pipekit_item_start", {"item": 7})]
    assert after == ["pipekit_item_start"]


class Exits:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    @hookimpl
    def pipekit_item_start(self, item: object) -> None:
        raise self.error


def test_system_exit_and_keyboard_interrupt_in_an_observer_are_plugin_errors() -> None:
    pm, notify, reports = notifier()
    log: list[str] = []
    pm.register(Recorder("good", log), "good")
    pm.register(Exits(SystemExit(3)), "exits")
    pm.register(Exits(KeyboardInterrupt()), "ctrl-c")
    notify.item_start(1)
    assert log == ["good 1"]
    assert notify.errors == 2
    assert any("plugin 'exits' raised in pipekit_item_start" in r and "SystemExit: 3" in r for r in reports)
    assert any("plugin 'ctrl-c' raised in pipekit_item_start" in r for r in reports)


class BrokenWrapper:
    def __init__(self, when: str) -> None:
        self.when = when

    @hookimpl(wrapper=True)
    def pipekit_item_start(self, item: object) -> Iterator[None]:
        if self.when == "before":
            raise RuntimeError("before")
        yield
        raise RuntimeError("after")


def test_a_raising_wrapper_is_reported_and_the_implementations_it_wraps_still_run() -> None:
    pm, notify, reports = notifier()
    log: list[str] = []
    pm.register(Recorder("good", log), "good")
    pm.register(BrokenWrapper("before"), "before")
    pm.register(BrokenWrapper("after"), "after")
    notify.item_start(1)
    assert log == ["good 1"]
    assert notify.errors == 2
    # the last registered wraps the others: it starts first and ends last
    assert [r.split(" (")[0] for r in reports] == [
        "pipekit: plugin 'before' raised in pipekit_item_start",
        "pipekit: plugin 'after' raised in pipekit_item_start",
    ]
