"""End-to-end behaviour of `pipekit run`: order, outputs, resume, failures, costs."""

from __future__ import annotations

import json

from pipekit import PipelineStateManager
from pipekit.testing import PipeTester


COUNTING = '''
    import json, os
    from pathlib import Path
    from pipekit import phase, PhaseResult

    LOG = Path(os.environ.get("EXEC_LOG", "executions.log"))

    def log(item_id, name):
        with LOG.open("a") as f:
            f.write(json.dumps([item_id, name]) + "\\n")

    @phase(1)
    async def research(item_id):
        log(item_id, "research")
        return f"notes on {item_id}"

    @phase(2)
    def draft(item_id, research, ctx):
        log(item_id, "draft")
        ctx.record_cost(tokens_in=10, tokens_out=5, cost_usd=0.01)
        if Path(f"fail-draft-{item_id}").exists():
            raise RuntimeError(f"draft broke on {item_id}")
        return PhaseResult(output=f"draft from {research}", tokens_in=1, cost_usd=0.001)

    @phase(3)
    def review(previous_outputs, draft, **kwargs):
        log(kwargs["item_id"], "review")
        assert previous_outputs[2] == draft
        return draft.upper()
'''


def executions(tester: PipeTester) -> list[list[str]]:
    log = tester.path / "executions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_phases_run_in_order_and_pass_outputs_on(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    assert result.ret == 0, result
    assert [name for item, name in executions(pipetester) if item == "a"] == ["research", "draft", "review"]
    state = result.state("a")
    assert state.status == "completed"
    assert state.phase_outputs == {1: "notes on a", 2: "draft from notes on a", 3: "DRAFT FROM NOTES ON A"}
    assert result.stdout == ""


def test_costs_add_up_per_phase_item_and_run(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    state = result.state("a")
    assert state.phases[2].tokens_in == 11
    assert state.phases[2].tokens_out == 5
    assert abs(state.phases[2].cost_usd - 0.011) < 1e-9
    assert state.total_tokens_in == 11
    assert abs(state.total_cost_usd - 0.011) < 1e-9
    finish = result.calls("pipekit_run_finish")[0]["run"]
    assert finish.tokens_in == 22
    assert abs(finish.cost_usd - 0.022) < 1e-9


def test_resume_after_critical_failure_runs_only_what_is_left(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    (pipetester.path / "fail-draft-a").touch()
    first = pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    assert first.ret == 1, first
    state = first.state("a")
    assert [state.phases[n].status for n in (1, 2, 3)] == ["completed", "failed", "pending"]
    assert state.phases[2].error == "RuntimeError: draft broke on a"
    assert "Traceback" in (state.phases[2].traceback or "")
    assert state.status == "failed"
    (pipetester.path / "fail-draft-a").unlink()
    (pipetester.path / "executions.log").unlink()
    second = pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    assert second.ret == 0, second
    assert executions(pipetester) == [["a", "draft"], ["a", "review"]]
    state = second.state("a")
    assert state.phases[2].attempts == 2
    # the failed attempt's spending still counts
    assert abs(state.phases[2].cost_usd - 0.021) < 1e-9


def test_finished_items_fire_no_hooks_and_execute_nothing(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    pipetester.run("pipeline.py", "--item", "a")
    (pipetester.path / "executions.log").unlink()
    again = pipetester.run("pipeline.py", "--item", "a")
    assert again.ret == 0
    assert executions(pipetester) == []
    assert again.event_names() == ["run_start", "run_finish"]
    assert again.calls("pipekit_run_finish")[0]["run"].items_completed == 1


def test_non_critical_failure_lets_the_item_go_on(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1, critical=False)
        def flaky(item_id):
            raise ValueError("nope")

        @phase(2)
        def after(flaky, previous_outputs):
            return f"flaky gave {flaky!r}; previous={sorted(previous_outputs)}"
    ''')
    result = pipetester.run("pipeline.py", "--item", "x")
    assert result.ret == 0, result
    state = result.state("x")
    assert state.phases[1].status == "failed"
    assert state.phases[2].status == "completed"
    assert state.phase_outputs[2] == "flaky gave None; previous=[]"
    assert state.status == "completed_with_errors"


def test_force_reruns_everything_and_from_phase_reruns_the_tail(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    pipetester.run("pipeline.py", "--item", "a")
    (pipetester.path / "executions.log").unlink()
    forced = pipetester.run("pipeline.py", "--item", "a", "--force")
    assert forced.ret == 0
    assert [n for _, n in executions(pipetester)] == ["research", "draft", "review"]
    (pipetester.path / "executions.log").unlink()
    tail = pipetester.run("pipeline.py", "--item", "a", "--from-phase", "2")
    assert tail.ret == 0
    assert [n for _, n in executions(pipetester)] == ["draft", "review"]
    assert tail.state("a").phases[1].attempts == 2


def test_hooks_fire_in_lifecycle_order(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.event_names() == [
        "run_start",
        "item_start",
        "phase_start", "phase_complete",
        "phase_start", "phase_complete",
        "phase_start", "phase_complete",
        "item_finish",
        "run_finish",
    ]


def test_phase_added_to_the_module_runs_on_the_next_run(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    pipetester.run("pipeline.py", "--item", "a")
    pipetester.make_pipeline(COUNTING.replace("@phase(3)", "@phase(4)") + '''
    @phase(3)
    def polish(draft):
        return draft + "!"
    ''')
    (pipetester.path / "executions.log").unlink()
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    state = result.state("a")
    assert [(n, p.name, p.status) for n, p in sorted(state.phases.items())] == [
        (1, "research", "completed"),
        (2, "draft", "completed"),
        (3, "polish", "completed"),
        (4, "review", "completed"),
    ]
    assert executions(pipetester) == []  # review kept its completed state under its new num
    assert state.phase_outputs[4] == "DRAFT FROM NOTES ON A"


def test_a_phase_removed_and_added_back_keeps_its_work(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(COUNTING)
    pipetester.run("pipeline.py", "--item", "a")
    without_review = COUNTING[: COUNTING.index("    @phase(3)")] + '''
    @phase(4)
    def polish(draft):
        return draft + "!"
    '''
    pipetester.make_pipeline(without_review)
    removed = pipetester.run("pipeline.py", "--item", "a")
    assert removed.ret == 0, removed
    state = removed.state("a")
    assert sorted(state.phases) == [1, 2, 4]
    assert state.retired_phases["review"]["output"] == "DRAFT FROM NOTES ON A"
    (pipetester.path / "executions.log").unlink()
    pipetester.make_pipeline(COUNTING)
    back = pipetester.run("pipeline.py", "--item", "a")
    assert back.ret == 0, back
    assert executions(pipetester) == []  # review came back completed: nothing to do
    manager = PipelineStateManager("a", back.state_dir)
    manager.load_state()
    manager.reconcile([(1, "research"), (2, "draft"), (3, "review")])
    assert manager.state.phases[3].status == "completed"
    assert manager.state.phase_outputs[3] == "DRAFT FROM NOTES ON A"
    assert list(manager.state.retired_phases) == ["polish"]
