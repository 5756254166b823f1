"""Bad input and odd situations: each gets a clear message, and nothing done is lost."""

from __future__ import annotations

import asyncio
import signal

import pytest

import pipekit
from pipekit.state.jsondir import JsonDirStore
from pipekit.testing import PipeTester


ONE = '''
    from pipekit import phase

    @phase(1)
    def one(item_id, metadata):
        metadata["scratch"] = {1, 2}  # handlers get a copy: this never reaches the state
        metadata.pop("title", None)
        return item_id
'''


def test_handlers_cannot_corrupt_the_saved_metadata(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ONE)
    pipetester.make_items({"id": "a", "title": "Emma"}, name="items.jsonl")
    result = pipetester.run("pipeline.py", "--items", "items.jsonl")
    assert result.ret == 0, result
    assert result.state("a").metadata == {"title": "Emma"}


def test_metadata_that_is_not_json_is_a_usage_error_naming_the_item(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ONE + '''
    import datetime
    def items():
        yield ("a", {"when": datetime.date(2026, 1, 1)})
    ''')
    result = pipetester.run("pipeline.py")
    assert result.ret == 4
    assert "metadata of item 'a' cannot be saved as JSON" in result.stderr


def test_items_function_that_raises_shows_the_users_traceback(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ONE + '''
    def items():
        yield "a"
        raise ConnectionError("catalogue is down")
    ''')
    result = pipetester.run("pipeline.py")
    assert result.ret == 4, result
    assert "items() in" in result.stderr and "ConnectionError: catalogue is down" in result.stderr
    assert "pluggy" not in result.stderr


def test_byte_order_mark_in_items_files_is_ignored(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ONE)
    (pipetester.path / "items.csv").write_bytes("\ufeffid,title\nb,Emma\n".encode())
    (pipetester.path / "items.txt").write_bytes("\ufeffa\n".encode())
    result = pipetester.run("pipeline.py", "--items", "items.csv", "--items", "items.txt")
    assert result.ret == 0, result
    assert result.state("a").phase_outputs[1] == "a"


@pytest.mark.parametrize(
    ("decorator", "message"),
    [("@phase(1, cache=True)", "cache must be a callable"), ("@phase(1, retry_backoff='1')", "retry_backoff must be")],
)
def test_bad_decorator_arguments_are_reported_at_load(pipetester: PipeTester, decorator: str, message: str) -> None:
    pipetester.make_pipeline(f"from pipekit import phase\n{decorator}\ndef one(): ...\n")
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 4
    assert message in result.stderr


def test_from_phase_past_the_last_phase_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ONE)
    result = pipetester.run("pipeline.py", "--item", "a", "--from-phase", "99")
    assert result.ret == 4
    assert "--from-phase 99: no phase has that num or a later one (1)" in result.stderr


def test_default_state_dir_is_the_pipeline_name(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ONE + '\n    PIPELINE_NAME = "BookPipeline"\n')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.state_dir == pipetester.path / "state" / "BookPipeline"


def test_a_handler_that_changes_folder_does_not_lose_state(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import os
        from pipekit import phase

        @phase(1)
        def wander(item_id):
            os.makedirs("elsewhere", exist_ok=True)
            os.chdir("elsewhere")
            return "moved"

        @phase(2)
        def after(wander):
            return wander + " and back"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--state-dir", "st")
    assert result.ret == 0, result
    assert (pipetester.path / "st" / "a.json").exists()


def test_a_bug_while_saving_ends_with_an_internal_error_not_a_quiet_exit_1(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipetester.make_pipeline(ONE)
    original = JsonDirStore.save

    def save(self: JsonDirStore, item_id: str, document: dict) -> None:  # type: ignore[type-arg]
        if item_id == "b" and document["phases"]["1"]["status"] == "completed":
            raise RuntimeError("simulated bug")
        original(self, item_id, document)

    monkeypatch.setattr(JsonDirStore, "save", save)
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "--item", "c")
    assert result.ret == 3, result
    assert "RuntimeError: simulated bug" in result.stderr
    assert result.calls("pipekit_run_finish")[0]["exitstatus"] == 3
    assert result.state("a").status == "completed"


def test_library_run_gives_the_host_its_signal_handlers_back(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(ONE)

    def mine(signum: int, frame: object) -> None: ...

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        pipekit.run(str(path), ["a"], progress="none")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_cancelling_arun_records_the_phase_in_flight_as_interrupted(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline('''
        import asyncio
        from pipekit import phase

        @phase(1)
        async def slow(item_id):
            await asyncio.sleep(30)
            return "late"
    ''')

    async def host() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pipekit.arun(str(path), ["a"], progress="none"), 0.5)

    asyncio.run(host())
    state = pipekit.PipelineStateManager("a", pipetester.path / "state" / "pipeline")
    assert state.load_state()
    assert (state.state.phases[1].status, state.state.phases[1].reason) == ("failed", "interrupted")


@pytest.mark.parametrize("how", ["ctx.record_cost(cost_usd=float('nan'))", "return PhaseResult('x', cost_usd=-1.0)"])
def test_usage_that_would_corrupt_totals_fails_the_phase(pipetester: PipeTester, how: str) -> None:
    pipetester.make_pipeline(f'''
        from pipekit import phase, PhaseResult

        @phase(1)
        def spend(item_id, ctx):
            {how}
            return "x"
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--jsonl")
    assert result.ret == 1, result
    state = result.state("a")
    assert "must be a finite number >= 0" in (state.phases[1].error or "")
    assert state.total_cost_usd == 0.0
    assert "NaN" not in (result.state_dir / "a.json").read_text()


def test_command_line_state_dir_beats_a_configured_store(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ONE)
    (pipetester.path / "pyproject.toml").write_text('[tool.pipekit]\nstore = "json:cfgstate"\n')
    result = pipetester.run("pipeline.py", "--item", "a", "--state-dir", "cli_state")
    assert result.ret == 0, result
    assert result.state_dir == pipetester.path / "cli_state"
    configured = pipetester.run("pipeline.py", "--item", "b")
    assert configured.state_dir == pipetester.path / "cfgstate"


def test_max_cost_counts_the_cost_a_phase_result_reports(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase, PhaseResult

        @phase(1, max_cost=1.0)
        def pricey(item_id):
            return PhaseResult("x", cost_usd=5.0)
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1, result
    phase = result.state("a").phases[1]
    assert phase.status == "failed" and "over its max_cost" in (phase.error or "")
    assert phase.cost_usd == 5.0  # spent is spent


def test_no_retry_starts_once_the_budget_is_reached(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1, retries=5, retry_backoff=0.01)
        def flaky(item_id, ctx):
            ctx.record_cost(cost_usd=1.0)
            raise ConnectionError("down")
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "--max-cost", "1.5")
    assert result.ret == 1, result
    spent = sum(result.state(i).total_cost_usd for i in ("a", "b") if (result.state_dir / f"{i}.json").exists())
    assert spent <= 3.0


@pytest.mark.parametrize("item_id", ["book[1]", "star*"])
def test_ids_with_glob_characters_can_be_named_literally(pipetester: PipeTester, item_id: str) -> None:
    pipetester.make_pipeline(ONE)
    pipetester.run("pipeline.py", "--item", item_id)
    reset = pipetester.run("reset", "pipeline.py", "--item", item_id, "--phase", "1")
    assert reset.ret == 0, reset
    manager = pipekit.PipelineStateManager(item_id, pipetester.path / "state" / "pipeline")
    assert manager.load_state()
    assert manager.state.phases[1].status == "pending"
