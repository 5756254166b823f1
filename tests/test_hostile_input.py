"""Broken and hostile input: each is a clear error, and nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipekit import hookimpl
from pipekit.testing import PipeTester


TWO_PHASES = '''
    import os
    from pipekit import phase

    @phase(1)
    def one(item_id):
        return f"one {item_id}"

    @phase(2)
    def two(item_id, one):
        if os.environ.get("FAIL_TWO"):
            raise RuntimeError("not yet")
        return one + " two"
'''


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: "", "not valid JSON"),
        (lambda text: text.replace('"schema_version": 1', '"schema_version": 99'), "schema_version 99 is newer"),
        (lambda text: json.dumps({**json.loads(text), "phases": "?"}), "missing or malformed field"),
    ],
)
def test_a_broken_state_file_is_named_left_alone_and_the_others_still_run(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, damage: object, message: str
) -> None:
    pipetester.make_pipeline(TWO_PHASES)
    pipetester.make_items("a", "b", "c")
    monkeypatch.setenv("FAIL_TWO", "1")
    first = pipetester.run("pipeline.py", "--items", "items.txt")
    assert first.ret == 1
    monkeypatch.delenv("FAIL_TWO")
    broken = first.state_dir / "b.json"
    broken.write_text(damage(broken.read_text()))  # type: ignore[operator]
    content = broken.read_bytes()
    result = pipetester.run("pipeline.py", "--items", "items.txt")
    assert result.ret == 4, result
    assert f"corrupt state file {broken}" in result.stderr and message in result.stderr
    assert "item 'b' not run" in result.stderr
    assert "Traceback" not in result.stderr
    assert broken.read_bytes() == content
    for item_id in "ac":
        assert result.state(item_id).status == "completed"
    recovered = pipetester.run("reset", "pipeline.py", "--item", "b")
    assert recovered.ret == 0, recovered
    again = pipetester.run("pipeline.py", "--items", "items.txt")
    assert again.ret == 0, again
    assert again.state("b").phase_outputs == {1: "one b", 2: "one b two"}


class RaisesEverywhere:
    """A plugin whose every observer hook raises."""

    name = "raises-everywhere"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def _boom(self, hook: str) -> None:
        self.seen.append(hook)
        raise RuntimeError(f"bug in {hook}")

    @hookimpl
    def pipekit_run_start(self, run):  # type: ignore[no-untyped-def]
        self._boom("pipekit_run_start")

    @hookimpl
    def pipekit_item_start(self, item):  # type: ignore[no-untyped-def]
        self._boom("pipekit_item_start")

    @hookimpl
    def pipekit_phase_start(self, item, phase):  # type: ignore[no-untyped-def]
        self._boom("pipekit_phase_start")

    @hookimpl
    def pipekit_phase_complete(self, item, phase, result):  # type: ignore[no-untyped-def]
        self._boom("pipekit_phase_complete")

    @hookimpl
    def pipekit_phase_retry(self, item, phase, error, attempt):  # type: ignore[no-untyped-def]
        self._boom("pipekit_phase_retry")

    @hookimpl
    def pipekit_phase_fail(self, item, phase, error):  # type: ignore[no-untyped-def]
        self._boom("pipekit_phase_fail")

    @hookimpl
    def pipekit_phase_skip(self, item, phase, reason):  # type: ignore[no-untyped-def]
        self._boom("pipekit_phase_skip")

    @hookimpl
    def pipekit_item_finish(self, item):  # type: ignore[no-untyped-def]
        self._boom("pipekit_item_finish")

    @hookimpl
    def pipekit_run_finish(self, run, exitstatus):  # type: ignore[no-untyped-def]
        self._boom("pipekit_run_finish")


def test_a_plugin_raising_in_every_hook_changes_neither_state_nor_exit_status(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1, cache=lambda item_id: item_id == "cached")
        def one(item_id):
            return "one"

        @phase(2, retries=1, retry_backoff=0.001)
        def two(item_id, ctx):
            if item_id == "bad" or ctx.attempt == 1:
                raise ValueError(f"attempt {ctx.attempt}")
            return "two"
    ''')
    plugin = RaisesEverywhere()
    result = pipetester.run("pipeline.py", "--item", "good", "--item", "bad", "--item", "cached", plugins=[plugin])
    assert result.ret == 1, result  # "bad" failed: the plugin's errors do not change that
    hooks = {
        "pipekit_run_start", "pipekit_item_start", "pipekit_phase_start", "pipekit_phase_complete",
        "pipekit_phase_retry", "pipekit_phase_fail", "pipekit_phase_skip", "pipekit_item_finish",
        "pipekit_run_finish",
    }
    assert set(plugin.seen) == hooks
    for hook in hooks:
        assert result.stderr.count(f"plugin 'raises-everywhere' raised in {hook}") == 1
    assert result.state("good").phase_outputs == {1: "one", 2: "two"}
    assert result.state("bad").phases[2].status == "failed"
    assert result.state("cached").phases[1].status == "skipped"
    assert result.events[-1] == ("run_finish", {"exit_status": 1})


# -- a full or read-only disk (a small tmpfs in a private mount namespace) ---------------------


def _private_mounts_available() -> str | None:
    if not shutil.which("unshare"):
        return "no unshare command"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, text=True,
    )
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.strip()}"
    return None


SCRIPT = r'''
set -u
cd "$WORK"
mount -t tmpfs -o size=256k tmpfs "$STATE"
run() { "$PYTHON" -m pipekit pipeline.py --item a --state-dir "$STATE" --progress none "$@"; }
run > /dev/null 2> first.err; echo $? > first.rc
cp "$STATE/a.json" before.json
dd if=/dev/zero of="$STATE/fill" bs=4k > /dev/null 2>&1
run --force 2> full.err; echo $? > full.rc
cmp -s "$STATE/a.json" before.json && echo same > full.same
find "$STATE" -name '*.tmp' > full.tmp
rm "$STATE/fill"
mount -o remount,ro "$STATE"
run --force 2> ro.err; echo $? > ro.rc
cmp -s "$STATE/a.json" before.json && echo same > ro.same
'''


@pytest.mark.slow
def test_a_full_or_read_only_disk_is_a_clear_error_and_the_old_state_stays(pipetester: PipeTester) -> None:
    reason = _private_mounts_available()
    if reason:
        pytest.skip(reason)
    pipetester.make_pipeline(TWO_PHASES)
    state = pipetester.path / "mnt"
    state.mkdir()
    env = {**os.environ, "WORK": str(pipetester.path), "STATE": str(state), "PYTHON": sys.executable}
    subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", SCRIPT], env=env, check=True, timeout=120
    )
    read = lambda name: (pipetester.path / name).read_text().strip()  # noqa: E731
    assert read("first.rc") == "0", read("first.err")
    assert read("full.rc") == "3", read("full.err")
    assert f"cannot write state {state}/a.json: No space left on device (the previous state is intact)" in read(
        "full.err"
    )
    assert "Traceback" not in read("full.err")
    assert read("full.same") == "same"
    assert read("full.tmp") == ""  # the failed write cleaned up its temporary file
    assert read("ro.rc") == "3", read("ro.err")
    assert "Read-only file system (the previous state is intact)" in read("ro.err")
    assert "Traceback" not in read("ro.err")
    assert read("ro.same") == "same"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("items.jsonl", '{"id": "a"}\n{"id": ""}\n', "item 2 has an invalid id ''"),
        ("items.jsonl", '{"id": "a"}\n{"id": null}\n', "item 2 has an invalid id None"),
        ("items.csv", "id,title\na,x\n,y\n", "items.csv, line 3: empty id"),
        ("items.jsonl", '{"id": "a"}\n\n{"id": "b"\n', "items.jsonl, line 3: invalid JSON"),
    ],
)
def test_empty_and_missing_ids_are_refused_before_anything_runs(
    pipetester: PipeTester, name: str, content: str, message: str
) -> None:
    pipetester.make_pipeline(TWO_PHASES)
    (pipetester.path / name).write_text(content)
    result = pipetester.run("pipeline.py", "--items", name)
    assert result.ret == 4, result
    assert message in result.stderr
    assert not (pipetester.path / "state").exists()


def test_ids_with_newlines_slashes_and_dots_each_get_their_own_state(pipetester: PipeTester) -> None:
    ids = ["a\nb", "a/b", "a%2Fb", "../a", "..", ".", "📚" * 100, "é", "e\u0301"]
    pipetester.make_pipeline(TWO_PHASES)
    pipetester.make_items(*({"id": i} for i in ids), name="items.jsonl")
    result = pipetester.run("pipeline.py", "--items", "items.jsonl")
    assert result.ret == 0, result
    assert len(list(result.state_dir.glob("*.json"))) == len(ids)
    for item_id in ids:
        assert result.state(item_id).phase_outputs[2] == f"one {item_id} two"
    assert sorted(p.name for p in pipetester.path.iterdir()) == ["items.jsonl", "pipeline.py", "state"]
