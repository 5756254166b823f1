"""``ctx.idempotency_key`` names the phase's intent: one side effect per item,
phase and inputs, however many attempts it takes."""

from __future__ import annotations

import json

import pytest

from pipekit.testing import PipeTester


PIPELINE = '''
    import json, os, signal
    from pathlib import Path
    from pipekit import phase

    def log(ctx):
        with open("keys.log", "a") as f:
            f.write(json.dumps([ctx.item_id, ctx.phase.name, ctx.attempt, ctx.idempotency_key]) + "\\n")

    @phase(1)
    def draft(item_id):
        return Path("draft.txt").read_text() if Path("draft.txt").exists() else f"draft of {item_id}"

    @phase(2, retries=1, retry_backoff=0.01)
    def send(draft, ctx):
        log(ctx)
        for kind in ("kill", "fail"):
            flag = Path(f"{kind}-send")
            if flag.exists():
                flag.unlink()
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("mail server busy")
        return "sent"

    @phase(3)
    def archive(ctx):
        log(ctx)
        return "archived"
'''


def keys(tester: PipeTester) -> list[tuple[str, str, int, str]]:
    return [tuple(json.loads(line)) for line in (tester.path / "keys.log").read_text().splitlines()]


def test_the_key_is_the_same_across_a_retry_and_differs_between_items_and_phases(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    (pipetester.path / "fail-send").touch()
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    assert pipetester.run("pipeline.py", "--item", "b").ret == 0
    seen = keys(pipetester)
    assert [(item, name, attempt) for item, name, attempt, _ in seen] == [
        ("a", "send", 1), ("a", "send", 2), ("a", "archive", 1), ("b", "send", 1), ("b", "archive", 1)
    ]
    a_send, a_retry, a_archive, b_send, b_archive = (key for *_, key in seen)
    assert a_send == a_retry
    assert len({a_send, a_archive, b_send, b_archive}) == 4


@pytest.mark.slow
def test_the_key_survives_a_kill_and_changes_with_an_upstream_output(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    (pipetester.path / "kill-send").touch()
    assert pipetester.run_subprocess("pipeline.py", "--item", "a").ret == -9
    assert pipetester.run_subprocess("pipeline.py", "--item", "a").ret == 0
    (first, _, attempt_1, killed_key), (_, _, attempt_2, resumed_key) = keys(pipetester)[:2]
    assert (attempt_1, attempt_2) == (1, 2)
    assert killed_key == resumed_key

    # Another draft is another e-mail: the key of "send" changes, that of "archive"
    # (which consumes no output) does not.
    (pipetester.path / "draft.txt").write_text("second draft")
    assert pipetester.run_subprocess("pipeline.py", "--item", "a", "--force").ret == 0
    after = {name: key for _, name, _, key in keys(pipetester)[3:]}
    before = {name: key for _, name, _, key in keys(pipetester)[:3]}
    assert after["send"] != before["send"]
    assert after["archive"] == before["archive"]
