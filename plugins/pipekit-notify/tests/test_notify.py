"""pipekit-notify end to end: Apprise posting to a JSON webhook on 127.0.0.1."""

from __future__ import annotations

import signal

import pytest

from pipekit.testing import PipeTester


PIPELINE = '''
    from pipekit import phase

    PIPELINE_NAME = "books"
    ITEM_NOUN = "books"

    @phase(1)
    def research(item_id, ctx):
        ctx.record_cost(tokens_in=1000, tokens_out=100, cost_usd=0.01)
        return "notes"

    @phase(2)
    def draft(item_id, research):
        if item_id.startswith("bad"):
            raise ValueError(f"no draft for {item_id}")
        return research + " drafted"
'''


def test_a_finished_run_and_a_critical_failure_are_notified(pipetester: PipeTester, webhook) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("emma", "bad-one", "moby")
    result = pipetester.run("pipeline.py", "--items", "items.txt", "-p", "notify", "--notify", webhook.url())
    assert result.ret == 1, result
    alert, finish = webhook.messages()
    assert alert["type"] == "failure"
    assert alert["title"] == "pipekit: books: item 'bad-one' failed phase 2"
    assert "item 'bad-one' phase 2 (draft): ValueError: no draft for bad-one" in alert["message"]
    assert finish["type"] == "failure"
    assert finish["title"] == "pipekit: books finished with unfinished items: 2/3 completed, $0.03"
    body = finish["message"]
    assert "pipeline: books (exit status 1)" in body
    assert "books: 3 total, 2 completed, 1 failed" in body
    assert "phases this run: 5 completed, 1 failed, 0 skipped" in body
    assert "tokens: 3,000 in, 300 out; cost: $0.0300" in body
    assert "first failures (1 of 1):\n  - item 'bad-one' phase 2 (draft): ValueError: no draft for bad-one" in body
    assert f"state: {result.state_dir}" in body
    assert "could not deliver" not in result.stderr


def test_urls_come_from_the_environment(pipetester: PipeTester, webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    pipetester.make_pipeline(PIPELINE)
    monkeypatch.setenv("PIPEKIT_NOTIFY", f"{webhook.url('one')}, {webhook.url('two')}")
    result = pipetester.run("pipeline.py", "--item", "emma", "-p", "notify")
    assert result.ret == 0, result
    for path in ("/one", "/two"):
        (finish,) = webhook.messages(path)
        assert finish["type"] == "success"
        assert finish["title"].startswith("pipekit: books finished: 1/1 completed")
    # --notify wins over the environment.
    again = pipetester.run("pipeline.py", "--item", "moby", "-p", "notify", "--notify", webhook.url("three"))
    assert again.ret == 0, again
    assert len(webhook.messages("/one")) == 1
    assert len(webhook.messages("/three")) == 1


def test_no_urls_means_no_notifications(pipetester: PipeTester, webhook) -> None:
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", "--item", "emma", "-p", "notify")
    assert result.ret == 0, result
    assert webhook.received == []


def test_an_undeliverable_notification_is_reported_once_and_changes_nothing(
    pipetester: PipeTester, closed_port: int
) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("emma", "bad-one", "bad-two")
    result = pipetester.run(
        "pipeline.py", "--items", "items.txt", "-p", "notify", "--notify", f"json://127.0.0.1:{closed_port}/hook"
    )
    # Two failure alerts and the final message all failed: one report, same exit status.
    assert result.ret == 1, result
    assert result.stderr.count("could not deliver a notification") == 1, result
    assert f"json://127.0.0.1:{closed_port}/hook" in result.stderr
    result.assert_outcomes(completed=4, failed=2)


def test_an_endpoint_that_never_answers_cannot_hold_the_run(pipetester: PipeTester, silent_port: int) -> None:
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run(
        "pipeline.py", "--item", "emma", "-p", "notify",
        "--notify", f"json://127.0.0.1:{silent_port}/hook", "--notify-timeout", "0.3",
    )
    assert result.ret == 0, result
    assert result.stderr.count("could not deliver a notification") == 1, result
    result.assert_outcomes(completed=2)


def test_a_url_apprise_cannot_use_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", "--item", "emma", "-p", "notify", "--notify", "nosuchservice://x")
    assert result.ret == 4, result
    assert "--notify: Apprise cannot use the URL nosuchservice://..." in result.stderr
    assert not (pipetester.path / "state").exists()
    zero = pipetester.run("pipeline.py", "--item", "e", "-p", "notify", "--notify", "json://x", "--notify-timeout", "0")
    assert zero.ret == 4, zero
    assert "--notify-timeout must be more than 0 seconds" in zero.stderr


def test_a_long_stall_is_notified_once(pipetester: PipeTester, webhook) -> None:
    pipetester.make_pipeline('''
        import time
        from pipekit import phase

        @phase(1)
        def slow(item_id):
            time.sleep(1.5)
    ''')
    result = pipetester.run(
        "pipeline.py", "--item", "emma", "-p", "notify", "--notify", webhook.url(), "--notify-stall", "0.3"
    )
    assert result.ret == 0, result
    stall, finish = webhook.messages()
    assert stall["type"] == "warning"
    assert stall["title"].startswith("pipekit: pipeline looks stalled")
    assert "item 'emma', phase 1 (slow)" in stall["message"]
    assert finish["type"] == "success"


@pytest.mark.slow
def test_an_interrupted_run_says_so(pipetester: PipeTester, webhook) -> None:
    pipetester.make_pipeline('''
        import time
        from pipekit import phase

        @phase(1)
        def slow(item_id):
            time.sleep(30)
    ''')
    result = pipetester.run_subprocess(
        "pipeline.py", "--item", "emma", "-p", "notify", "--notify", webhook.url(),
        kill_at=("phase_start", "emma", 1), signal=signal.SIGINT,
    )
    assert result.ret == 2, result
    (finish,) = webhook.messages()
    assert finish["type"] == "warning"
    assert finish["title"].startswith("pipekit: pipeline was interrupted: 0/1 completed")
    assert "1 interrupted" in finish["message"]


@pytest.mark.slow
def test_installed_it_loads_itself_and_can_be_turned_off(pipetester: PipeTester, webhook) -> None:
    pipetester.make_pipeline(PIPELINE)
    env = {"PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "", "PIPEKIT_NOTIFY": webhook.url()}
    on = pipetester.run_subprocess("pipeline.py", "--item", "emma", env=env)
    assert on.ret == 0, on
    assert [m["type"] for m in webhook.messages()] == ["success"]
    blocked = pipetester.run_subprocess("pipeline.py", "--item", "moby", "-p", "no:notify", env=env)
    assert blocked.ret == 0, blocked
    off = pipetester.run_subprocess(
        "pipeline.py", "--item", "dick", env={**env, "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    )
    assert off.ret == 0, off
    assert len(webhook.messages()) == 1
