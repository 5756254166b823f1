"""``pipekit new NAME``: write a runnable pipeline, its items file and a test.

The seed's *create-pipeline* task. The module shows an async phase, a sync
phase with a cache, a non-critical phase and cost recording; the test uses
``pipekit.testing``. Existing files are never overwritten.
"""

from __future__ import annotations

import keyword
from pathlib import Path
from typing import Any

from pipekit.cli.parsing import command_parser
from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError


MODULE_TEMPLATE = '''\
"""{name}: a pipekit pipeline. Run it with `pipekit run {name}.py`.

Each item goes through the phases below, in order. State is saved after every
phase, so a run that stops (Ctrl-C, a crash, a failure) resumes where it left.
"""

from pathlib import Path

from pipekit import PhaseResult
from pipekit import phase


PIPELINE_NAME = "{name}"
ITEM_NOUN = "items"


def items():
    """The items to process: one id a line in {name}_items.txt, beside this file."""
    path = Path(__file__).with_name("{name}_items.txt")
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.strip()


@phase(1, timeout=60)
async def gather(item_id, metadata, ctx):
    """An async phase (call APIs here); record what it cost with ctx.record_cost."""
    ctx.record_cost(tokens_in=120, tokens_out=40, cost_usd=0.0004)
    return f"notes about {{item_id}}"


def draft_exists(item_id, output_dir):
    """A cache check: a truthy return skips the phase; a str becomes its output."""
    done = output_dir / "draft.txt"
    return done.read_text(encoding="utf-8") if done.exists() else None


@phase(2, cache=draft_exists, retries=1)
def draft(item_id, gather, ctx):
    """A sync phase (it runs in a thread); it writes a file and returns a PhaseResult."""
    text = f"A draft built from: {{gather}}"
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    (ctx.output_dir / "draft.txt").write_text(text, encoding="utf-8")
    return PhaseResult(output=text, tokens_in=300, tokens_out=200, cost_usd=0.002)


@phase(3, critical=False)
def review(draft):
    """A non-critical phase: if it fails, the item still counts as done."""
    return f"looks fine: {{len(draft)}} characters"
'''

ITEMS_TEMPLATE = """\
# one item id a line; lines starting with # are ignored
first
second
third
"""

TEST_TEMPLATE = '''\
"""Tests for the {name} pipeline.

They need pytest: `pip install 'pipekit[testing]'`, then `python -m pytest test_{name}.py`.
"""

from pathlib import Path

import {name}


pytest_plugins = ["pipekit.testing"]

MODULE = str(Path(__file__).with_name("{name}.py"))


def test_a_handler_is_a_plain_function():
    assert {name}.review("abc") == "looks fine: 3 characters"


def test_every_phase_completes_and_costs_add_up(pipetester):
    result = pipetester.run("run", MODULE, "--item", "one", "--progress", "none")
    assert result.ret == 0, result
    state = result.state("one")
    assert [p.status for p in state.phases.values()] == ["completed"] * 3
    assert state.phase_outputs[1] == "notes about one"
    assert round(state.total_cost_usd, 6) == 0.0024


def test_a_second_run_does_nothing(pipetester):
    assert pipetester.run("run", MODULE, "--item", "one", "--progress", "none").ret == 0
    again = pipetester.run("run", MODULE, "--item", "one", "--progress", "none")
    assert again.ret == 0, again
    assert again.calls("pipekit_phase_start") == []
'''


def new_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit new NAME``: write NAME.py, NAME_items.txt and test_NAME.py here."""
    parser = command_parser("pipekit new", "Write a runnable pipeline, an items file and a test.", module=False)
    parser.add_argument("name", nargs="?", metavar="NAME", help="the pipeline's name (a Python identifier)")
    option = parser.parse_args(args)
    if option.help:
        parser.print_help()
        return ExitCode.OK
    name = option.name or ""
    if name.endswith(".py"):
        name = name[:-3]
    folder = Path(name).parent
    name = Path(name).name
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("test"):
        raise UsageError(
            f"pipekit new: {option.name!r} is not a usable module name (a Python identifier not starting with 'test')"
        )
    files = {
        folder / f"{name}.py": MODULE_TEMPLATE.format(name=name),
        folder / f"{name}_items.txt": ITEMS_TEMPLATE,
        folder / f"test_{name}.py": TEST_TEMPLATE.format(name=name),
    }
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise UsageError(f"pipekit new: refusing to overwrite {', '.join(existing)}")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    print("next:")
    print(f"  pipekit run {folder / (name + '.py')}")
    # The test needs pytest, which pipekit itself does not depend on.
    print(f"  pip install 'pipekit[testing]' && python -m pytest {folder / ('test_' + name + '.py')}")
    return ExitCode.OK
