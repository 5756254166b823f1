"""Batch phases end to end: ``pipekit run`` in a subprocess against ``FakeBatch``,
whose batches live in a file so that they outlive each run (and a kill -9)."""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import Any

import pytest

from pipekit.outcomes import ExitCode
from pipekit.outcomes import worst_exit_code
from pipekit.state.batches import BatchRecords
from pipekit.testing import FakeBatch
from pipekit.testing import PipeResult
from pipekit.testing import PipeTester


PIPELINE = '''
import json, os
from pipekit import phase
from pipekit.testing import FakeBatch

BATCHES = {"fake": FakeBatch("fake.json", **json.loads(os.environ.get("FAKE_OPTIONS", "{}")))}

@phase(1)
def prep(item_id):
    if item_id == os.environ.get("BROKEN_ITEM"):
        raise RuntimeError("prep broke")
    return f"text of {item_id}"

@phase(2, batch="fake", retries=int(os.environ.get("BATCH_RETRIES", "0")))
def summarise(item_id, prep):
    if os.environ.get("DUPLICATE"):
        return [{"custom_id": "x", "body": {}}, {"custom_id": "x", "body": {}}]
    return [
        {"custom_id": f"{item_id}-sum", "body": {"text": prep}},
        {"custom_id": "title: not a wire id!", "body": {"title": item_id}},
    ]

@phase(3)
def final(summarise):
    return summarise["title: not a wire id!"]["content"] + " | " + summarise[f"{sorted(summarise)[0]}"]["content"]
'''


def _setup(pipetester: PipeTester, items: int) -> list[str]:
    pipetester.make_pipeline(PIPELINE)
    ids = [f"i{n:02d}" for n in range(items)]
    pipetester.make_items(*ids)
    return ids


def _run(pipetester: PipeTester, *args: str, **env: Any) -> PipeResult:
    environment = {k: v if isinstance(v, str) else json.dumps(v) for k, v in env.items()}
    return pipetester.run_subprocess(
        "pipeline.py", "--items", "items.txt", "--state-dir", "state", "-p", "no:prices", *args, env=environment
    )


def _cli(pipetester: PipeTester, *args: str, **env: Any) -> tuple[int, str, str]:
    """``pipekit ARGS`` (not a run) in a subprocess: exit code, stdout, stderr."""
    environment = {k: v if isinstance(v, str) else json.dumps(v) for k, v in env.items()}
    proc = pipetester.popen(*args, "--state-dir", "state", env=environment)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _fake(pipetester: PipeTester) -> FakeBatch:
    return FakeBatch(pipetester.path / "fake.json")


def test_twenty_items_go_in_one_batch_and_the_next_run_completes_them(pipetester: PipeTester) -> None:
    ids = _setup(pipetester, 20)
    first = _run(pipetester)
    assert first.ret == ExitCode.WAITING, first.stderr
    assert "waiting for 40 requests in 1 batch at 'fake'" in first.stderr
    submitted = _fake(pipetester).submitted
    assert len(submitted) == 1 and len(submitted[0]) == 40 == len(set(submitted[0]))
    assert {f"{i}-sum" for i in ids} <= set(submitted[0])  # ids that fit go as they are
    assert all(first.state(i).phases[2].status == "waiting" for i in ids)
    assert all(first.state(i).phases[3].status == "pending" for i in ids)

    second = _run(pipetester)
    assert second.ret == ExitCode.OK, second.stderr
    state = second.state("i03")
    output = state.phase_outputs[2]
    assert sorted(output) == ["i03-sum", "title: not a wire id!"]  # keyed by the handler's own ids
    assert output["i03-sum"]["echo"] == {"text": "text of i03"}
    assert output["title: not a wire id!"]["echo"] == {"title": "i03"}
    assert state.phases[3].status == "completed"
    assert _fake(pipetester).calls["submit"] == 1
    # Tokens: the sums of the answers' usage (FakeBatch: 10 + len(wire id) in, 5 out each).
    wires = [w for w in submitted[0] if w == "i03-sum"]
    assert state.phases[2].tokens_out == 10
    assert state.phases[2].tokens_in == 2 * 10 + len(wires[0]) + len("pk-") + 20
    # Priced at the provider's online price times its discount: $2/M in, $8/M out, half price.
    expected = (state.phases[2].tokens_in * 2.0 + 10 * 8.0) / 1_000_000 * 0.5
    assert state.phases[2].cost_usd == pytest.approx(expected)

    third = _run(pipetester)
    assert third.ret == ExitCode.OK
    assert _fake(pipetester).calls["submit"] == 1


def test_wait_polls_until_the_batch_ends_and_goes_on(pipetester: PipeTester) -> None:
    ids = _setup(pipetester, 3)
    result = _run(
        pipetester, "--wait", "--poll-interval", "0.05", "--progress", "simple", FAKE_OPTIONS={"finish_after_polls": 2}
    )
    assert result.ret == ExitCode.OK, result.stderr
    assert all(result.state(i).phases[3].status == "completed" for i in ids)
    assert "batch fake fakebatch-1: in_progress, 6 requests (processing 6)" in result.stderr
    assert _fake(pipetester).calls["submit"] == 1
    # The summary counts one execution of the batch phase per item, though it was started
    # in the pass that asked and again in the pass that collected.
    assert re.search(r"^2 summarise +3 +3 +0 +0 ", result.stderr, re.M), result.stderr


POLL_LOG = """
from pipekit import hookimpl

@hookimpl
def pipekit_batch_event(event, next_poll):
    if event == "batch_waiting":
        with open("waits.log", "a") as log:
            log.write(f"{next_poll}\\n")
"""


@pytest.mark.parametrize(("option", "first"), [((), 0.01), (("--poll-interval", "0.02"), 0.02)])
def test_wait_polls_at_the_providers_interval_growing_to_ten_times_it(
    pipetester: PipeTester, option: tuple[str, ...], first: float
) -> None:
    """The provider's ``poll_interval`` unless ``--poll-interval`` says otherwise, 1.5 times
    longer after each poll that finds the batch running, at most 10 times the first."""
    pipetester.make_pipeline(PIPELINE + POLL_LOG)
    pipetester.make_items("i00")
    options = {"poll_interval": 0.01, "finish_after_polls": 8}
    assert _run(pipetester, "--wait", *option, FAKE_OPTIONS=options).ret == ExitCode.OK
    waits = [float(line) for line in (pipetester.path / "waits.log").read_text().split()]
    assert waits == pytest.approx([min(first * 1.5**k, first * 10) for k in range(9)])


def test_a_poisoned_request_fails_only_its_item(pipetester: PipeTester) -> None:
    _setup(pipetester, 3)
    options = {"poison": ["i01-sum"]}
    assert _run(pipetester, FAKE_OPTIONS=options).ret == ExitCode.WAITING
    second = _run(pipetester, FAKE_OPTIONS=options)
    assert second.ret == ExitCode.ITEMS_FAILED, second.stderr
    failed = second.state("i01").phases[2]
    assert failed.status == "failed"
    assert "poisoned request i01-sum" in (failed.error or "")
    assert second.state("i00").phases[3].status == "completed"
    assert second.state("i02").phases[3].status == "completed"


def test_a_failed_batch_phase_counts_the_answers_it_paid_for_once(pipetester: PipeTester) -> None:
    """A poisoned request fails its item, but the item's other request was answered, and
    paid: its usage is on the failed phase and in the run's cost. Taken up again, the
    phase completes with each answer's usage counted once."""
    _setup(pipetester, 2)
    poisoned = {"FAKE_OPTIONS": {"poison": ["i01-sum"]}}
    assert _run(pipetester, **poisoned).ret == ExitCode.WAITING
    failed_run = _run(pipetester, "--progress", "simple", **poisoned)
    assert failed_run.ret == ExitCode.ITEMS_FAILED, failed_run.stderr
    failed = failed_run.state("i01").phases[2]
    assert failed.status == "failed"
    title = 10 + len("pk-") + 20  # FakeBatch's usage of the answered request (its wire id is mapped)
    assert (failed.tokens_in, failed.tokens_out) == (title, 5)
    assert failed.cost_usd == pytest.approx((title * 2.0 + 5 * 8.0) / 1_000_000 * 0.5)
    paid = failed.cost_usd + failed_run.state("i00").phases[2].cost_usd
    assert f"cost ${paid:.4f} this run" in failed_run.stderr

    again = _run(pipetester, "--wait")  # the poison is gone: the failed request goes out again
    assert again.ret == ExitCode.OK, again.stderr
    done = again.state("i01").phases[2]
    assert done.status == "completed"
    assert (done.tokens_in, done.tokens_out) == (title + 10 + len("i01-sum"), 10)
    assert done.cost_usd == pytest.approx((done.tokens_in * 2.0 + 10 * 8.0) / 1_000_000 * 0.5)
    assert again.state("i01").total_tokens_in == done.tokens_in


def test_an_errored_request_is_sent_again_per_retries_without_calling_the_handler(pipetester: PipeTester) -> None:
    _setup(pipetester, 2)
    env: dict[str, Any] = {"FAKE_OPTIONS": {"poison": ["i01-sum"]}, "BATCH_RETRIES": "1"}
    assert _run(pipetester, **env).ret == ExitCode.WAITING
    second = _run(pipetester, **env)
    assert second.ret == ExitCode.WAITING  # i01's errored request went in a second batch
    assert _fake(pipetester).submitted[1] == ["i01-sum"]
    third = _run(pipetester, **env)
    assert third.ret == ExitCode.ITEMS_FAILED
    assert third.state("i01").phases[2].attempts == 1  # the handler ran once


def test_exit_1_wins_over_6(pipetester: PipeTester) -> None:
    _setup(pipetester, 3)
    result = _run(pipetester, BROKEN_ITEM="i02")
    assert result.ret == ExitCode.ITEMS_FAILED, result.stderr
    assert result.state("i00").phases[2].status == "waiting"
    assert worst_exit_code({ExitCode.WAITING, ExitCode.NO_ITEMS}) == ExitCode.WAITING
    assert worst_exit_code({ExitCode.WAITING, ExitCode.USAGE_ERROR}) == ExitCode.USAGE_ERROR


def test_expired_requests_are_sent_again_in_a_new_batch(pipetester: PipeTester) -> None:
    ids = _setup(pipetester, 3)
    options = {"expire": ["i00-sum"]}
    assert _run(pipetester, FAKE_OPTIONS=options).ret == ExitCode.WAITING
    second = _run(pipetester, FAKE_OPTIONS=options)
    assert second.ret == ExitCode.WAITING
    assert second.state("i01").phases[3].status == "completed"
    assert _fake(pipetester).submitted[1] == ["i00-sum"]
    third = _run(pipetester, FAKE_OPTIONS=options)
    assert third.ret == ExitCode.OK
    assert all(third.state(i).phases[3].status == "completed" for i in ids)
    assert third.state("i00").phases[2].attempts == 1


def test_batches_are_split_at_max_requests(pipetester: PipeTester) -> None:
    _setup(pipetester, 4)
    assert _run(pipetester, FAKE_OPTIONS={"max_requests": 3}).ret == ExitCode.WAITING
    assert [len(b) for b in _fake(pipetester).submitted] == [3, 3, 2]
    assert _run(pipetester, FAKE_OPTIONS={"max_requests": 3}).ret == ExitCode.OK


def test_batches_are_split_at_max_bytes(pipetester: PipeTester) -> None:
    _setup(pipetester, 3)
    one = len(json.dumps({"custom_id": "i00-sum", "body": {"text": "text of i00"}})) + 1
    assert _run(pipetester, FAKE_OPTIONS={"max_bytes": 2 * one}).ret == ExitCode.WAITING
    submitted = _fake(pipetester).submitted
    assert len(submitted) > 1 and sum(map(len, submitted)) == 6


def test_a_duplicate_custom_id_fails_the_phase_naming_it(pipetester: PipeTester) -> None:
    _setup(pipetester, 1)
    result = _run(pipetester, DUPLICATE="1")
    assert result.ret == ExitCode.ITEMS_FAILED
    assert "duplicate custom_id 'x'" in (result.state("i00").phases[2].error or "")
    assert not (pipetester.path / "fake.json").exists() or _fake(pipetester).submitted == []


def test_an_unknown_batch_name_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        @phase(1, batch="nope")
        def ask():
            return []
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == ExitCode.USAGE_ERROR
    assert "no batch provider named 'nope' in BATCHES (none declared)" in result.stderr


def test_output_on_a_batch_phase_is_a_usage_error_naming_the_phase(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pydantic import BaseModel
        from pipekit import phase
        from pipekit.testing import FakeBatch

        BATCHES = {"fake": FakeBatch("fake.json")}

        class Summary(BaseModel):
            content: str

        @phase(1, batch="fake", output=Summary)
        def summarise(item_id):
            return [{"custom_id": item_id, "body": {}}]
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == ExitCode.USAGE_ERROR, result.stderr
    assert "@phase(1) summarise: output= cannot be combined with batch=" in result.stderr
    assert "validate the responses in the phase that reads them" in result.stderr
    assert not (pipetester.path / "fake.json").exists()  # nothing was asked nor sent


def test_a_kill_between_submit_and_record_does_not_submit_twice(pipetester: PipeTester) -> None:
    ids = _setup(pipetester, 5)
    killed = _run(pipetester, FAKE_OPTIONS={"crash_after_submit": True})
    assert killed.ret == -9
    assert len(_fake(pipetester).submitted) == 1  # it reached the provider, not pipekit's record
    second = _run(pipetester, FAKE_OPTIONS={"crash_after_submit": True})
    assert second.ret == ExitCode.OK, second.stderr  # found, polled (ended), collected, went on
    fake = _fake(pipetester)
    assert fake.calls["submit"] == 1 and fake.calls["find"] == 1
    assert all(second.state(i).phases[3].status == "completed" for i in ids)


def test_fake_batch_keeps_its_batches_in_its_file(tmp_path: Path) -> None:
    from pipekit.pipeline.batch import BatchRequest

    fake = FakeBatch(tmp_path / "f.json", finish_after_polls=1, expire=["b"])
    batch_id = fake.submit("k", [BatchRequest("a", {}), BatchRequest("b", {})])
    again = FakeBatch(tmp_path / "f.json", finish_after_polls=1, expire=["b"])
    assert again.find("k", []) == batch_id and again.find("other", []) is None
    assert not again.poll(batch_id).ended
    status = again.poll(batch_id)
    assert status.ended and dict(status.counts) == {"succeeded": 1, "expired": 1}
    outcomes = {r.custom_id: r.outcome for r in again.results(batch_id)}
    assert outcomes == {"a": "succeeded", "b": "expired"}
    assert not fake.wire_id_ok("a b") and fake.wire_id_ok("a-b_1")


def test_status_shows_waiting_cells_and_the_batches(pipetester: PipeTester) -> None:
    _setup(pipetester, 2)
    _run(pipetester)
    ret, shown, _ = _cli(pipetester, "status", "pipeline.py")
    assert ret == 0
    assert "i00   ✓ ⧗ ·" in shown
    assert "⧗ waiting" in shown
    assert "0 pending, 2 waiting;" in shown
    assert "batches:\n  fake  fakebatch-1  submitted  4 requests  age " in shown
    as_json = json.loads(_cli(pipetester, "status", "pipeline.py", "--json")[1])
    assert as_json["totals"]["waiting"] == 2
    assert as_json["items"][0]["status"] == "waiting"
    assert [(b["provider"], b["batch_id"], b["requests"]) for b in as_json["batches"]] == [("fake", "fakebatch-1", 4)]
    assert "payload" not in json.dumps(as_json["batches"])


def test_status_of_a_pipeline_without_batch_phases_is_unchanged(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        @phase(1)
        def one():
            return "x"
        """
    )
    pipetester.run("pipeline.py", "--item", "a")
    shown = pipetester.run("status", "pipeline.py")
    assert "waiting" not in shown.stdout and "batches" not in shown.stdout


def test_reset_of_a_waiting_cell_says_its_batch_runs_and_cancels_only_when_asked(pipetester: PipeTester) -> None:
    _setup(pipetester, 2)
    options = {"FAKE_OPTIONS": {"finish_after_polls": 100}}
    assert _run(pipetester, **options).ret == ExitCode.WAITING
    ret, told, err = _cli(pipetester, "reset", "pipeline.py", "--item", "i00", "--phase", "2", **options)
    assert ret == 0, err
    assert "batch fakebatch-1 at 'fake' is still running (in_progress, 4 requests)" in told
    assert "add --cancel to cancel it" in told
    assert "cancel" not in _fake(pipetester).calls
    _, cancelled, _ = _cli(pipetester, "reset", "pipeline.py", "--item", "i01", "--phase", "2", "--cancel", **options)
    assert "batch fakebatch-1 at 'fake' cancelled" in cancelled
    assert _fake(pipetester).calls["cancel"] == 1
    # Both cells were reset: the next run asks both handlers again and sends their requests anew.
    again = _run(pipetester)
    assert again.ret == ExitCode.WAITING
    assert len(_fake(pipetester).submitted) == 2
    assert _run(pipetester).ret == ExitCode.OK


def _batch_events(result: PipeResult) -> list[tuple[str, dict[str, Any]]]:
    """The batch events of a ``--jsonl`` run, without their ``time``."""
    return [
        (name, {k: v for k, v in payload.items() if k != "time"})
        for name, payload in result.events
        if name.startswith("batch_")
    ]


def test_jsonl_tells_each_batch_submitted_polled_and_completed_without_payloads(pipetester: PipeTester) -> None:
    _setup(pipetester, 3)
    first = _run(pipetester)
    assert first.ret == ExitCode.WAITING, first.stderr
    assert _batch_events(first) == [
        (
            "batch_submitted",
            {"provider": "fake", "batch_id": "fakebatch-1", "requests": 6, "status": "submitted", "counts": {}},
        )
    ]
    second = _run(pipetester)
    assert second.ret == ExitCode.OK, second.stderr
    events = _batch_events(second)
    assert [name for name, _ in events] == ["batch_polled", "batch_completed"]
    assert all(p["batch_id"] == "fakebatch-1" and p["requests"] == 6 for _, p in events)
    assert events[-1][1]["counts"] == {"succeeded": 6}
    lines = [line for line in second.stdout.splitlines() if '"batch_' in line]
    assert lines and not any("text of" in line or "echo" in line for line in lines)  # no request or answer


def test_the_summary_says_how_many_requests_went_by_batch_and_what_they_saved(pipetester: PipeTester) -> None:
    _setup(pipetester, 3)
    first = _run(pipetester, "--progress", "simple")
    assert "batches:" not in first.stderr  # nothing answered yet
    second = _run(pipetester, "--progress", "simple")
    assert second.ret == ExitCode.OK, second.stderr
    paid = sum(second.state(f"i{n:02d}").phases[2].cost_usd for n in range(3))
    assert paid > 0
    # FakeBatch's discount is one half: the saving equals what was paid.
    assert f"batches: 6 requests, cost ${paid:.4f} (saved ${paid:.4f} against online prices)" in second.stderr
    third = _run(pipetester, "--progress", "simple")
    assert "batches:" not in third.stderr  # counted in the run that completed them only


def test_the_report_shows_waiting_cells_and_the_batch_saving(pipetester: PipeTester) -> None:
    from test_report import CHROMIUM
    from test_report import chromium

    _setup(pipetester, 3)
    assert _run(pipetester).ret == ExitCode.WAITING
    assert _cli(pipetester, "report", "pipeline.py", "-o", "waiting.html")[0] == 0
    page = (pipetester.path / "waiting.html").read_text()
    assert "card-batch" not in page
    assert '"waiting"' in page and "<th class=\"n\">waiting</th>" in page
    if CHROMIUM is not None:
        matrix = chromium(pipetester.path / "waiting.html", "--dump-dom").split('id="matrix"')[1].split("</table>")[0]
        assert len(re.findall(r'class="dot s-waiting"[^>]*>⧗</span>', matrix)) == 3
    collected = _run(pipetester)
    assert collected.ret == ExitCode.OK
    assert _cli(pipetester, "report", "pipeline.py", "-o", "done.html")[0] == 0
    done = (pipetester.path / "done.html").read_text()
    paid = sum(collected.state(f"i{n:02d}").phases[2].cost_usd for n in range(3))
    card = done.split('id="card-batch">')[1].split("</div>")[0]
    assert card == (
        f"<b>6</b><span>requests by batch &middot; cost ${paid:,.4f}, saved ${paid:,.4f} against online prices</span>"
    )



def _run_in_store(pipetester: PipeTester) -> PipeResult:
    """``_run`` in the store ``PIPEKIT_STORE`` names (``--state-dir`` would win over it)."""
    return pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-p", "no:prices")


def _cli_in_store(pipetester: PipeTester, *args: str) -> tuple[int, str, str]:
    proc = pipetester.popen(*args)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_the_main_flow_over_every_store(pipetester: PipeTester, any_store: str | None) -> None:
    """20 items -> one batch, each request once, exit 6, ``status`` shows them waiting; the
    batch ends -> the next run completes the phase and the later ones, with the answers' usage."""
    ids = _setup(pipetester, 20)
    first = _run_in_store(pipetester)
    assert first.ret == ExitCode.WAITING, first.stderr
    submitted = _fake(pipetester).submitted
    assert len(submitted) == 1 and len(submitted[0]) == 40 == len(set(submitted[0]))
    assert all(first.state(i).phases[2].status == "waiting" for i in ids)  # read from the store
    store = first.open_store()
    try:
        assert [len(r["requests"]) for r in BatchRecords(store).submissions().values()] == [40]
    finally:
        store.close()
    ret, shown, err = _cli_in_store(pipetester, "status", "pipeline.py")
    assert ret == 0, err
    assert "0 pending, 20 waiting;" in shown
    assert "batches:\n  fake  fakebatch-1  submitted  40 requests  age " in shown

    second = _run_in_store(pipetester)
    assert second.ret == ExitCode.OK, second.stderr
    fake = _fake(pipetester)
    assert fake.calls["submit"] == 1 and len(fake.submitted) == 1
    for item_id in ids:
        state = second.state(item_id)
        assert [state.phases[n].status for n in (1, 2, 3)] == ["completed"] * 3
        # FakeBatch's usage per answer: 10 + len(wire id) in, 5 out; the unfit id goes as "pk-" + 20 hex.
        assert state.phases[2].tokens_in == (10 + len(f"{item_id}-sum")) + (10 + len("pk-") + 20)
        assert state.phases[2].tokens_out == 2 * 5
