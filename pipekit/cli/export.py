"""``pipekit export MODULE --phase N|NAME``: get one phase's finished outputs out.

``-o DIR`` writes one file per item (a safe name derived from the id; ``.txt``
for a ``str`` output, ``.json`` holding the value for any other) and
``index.jsonl`` mapping ids to files; ``--jsonl`` prints one JSON object per
item on stdout, its ``output`` the value itself (an object stays an object).
Items are read one at a time, so memory stays flat.
"""

from __future__ import annotations

from collections import Counter
import json
from pathlib import Path
import sys
from typing import Any

from pipekit.cli.parsing import ArgumentParser
from pipekit.cli.parsing import add_item_sources
from pipekit.cli.parsing import command_parser
from pipekit.cli.target import Target
from pipekit.cli.target import batch_items
from pipekit.cli.target import open_target
from pipekit.cli.target import parse
from pipekit.engine.selection import chosen_item_ids
from pipekit.engine.selection import resolve_phase
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.state.escaping import plain_json_text
from pipekit.state.model import COMPLETED
from pipekit.state.model import COMPLETED_WITH_ERRORS
from pipekit.state.model import FAILED
from pipekit.state.model import IN_PROGRESS
from pipekit.state.model import PENDING
from pipekit.state.model import is_finished
from pipekit.state.model import state_outcome
from pipekit.state.store import encode_item_id
from pipekit.state.store import write_atomically


#: The item outcomes, in the order the summary line counts them.
OUTCOMES = (COMPLETED, COMPLETED_WITH_ERRORS, FAILED, IN_PROGRESS, PENDING)
#: The file in the ``-o`` folder that maps item ids to file names.
INDEX_NAME = "index.jsonl"


def export_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """Write the outputs of one phase, per item, to a folder or to stdout."""
    option = parse(_parser(), args)
    if option is None:
        return ExitCode.OK
    if not option.phase:
        raise UsageError("pipekit export: say which phase with --phase N or --phase NAME")
    if bool(option.output) == bool(option.jsonl):
        raise UsageError("pipekit export: give exactly one of -o DIR and --jsonl")
    with open_target(option) as target:
        definition = resolve_phase(target.pipeline, option.phase)
        errors: list[StateFileError] = []
        ids = _item_ids(option, target, plugins, errors)
        folder = Path(option.output) if option.output else None
        index = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            index = (folder / INDEX_NAME).open("w", encoding="utf-8")
        exported = 0
        missing: Counter[str] = Counter()  # items without the output, by item_outcome
        unreadable = len(errors)
        for error in errors:
            print(f"pipekit: error: {error}", file=sys.stderr)
        try:
            for item_id in ids:
                try:
                    state = target.manager(item_id).state
                except StateFileError as exc:
                    unreadable += 1
                    print(f"pipekit: error: {exc}", file=sys.stderr)
                    continue
                except UsageError:  # no state: an item of the sources that never started
                    missing[PENDING] += 1
                    continue
                phase = state.phases.get(definition.num)
                done = phase is not None and is_finished((phase.status,))
                if not done or definition.num not in state.phase_outputs:
                    missing[state_outcome(state, target.pipeline.phases)] += 1
                    continue
                output = state.phase_outputs[definition.num]
                record: dict[str, Any] = {"item_id": item_id, "metadata": state.metadata}
                if folder is not None and index is not None:
                    name, content = _file(item_id, output)
                    write_atomically(folder / name, content, durable=False)
                    index.write(plain_json_text({**record, "file": name}) + "\n")
                else:
                    record.update(phase=definition.num, phase_name=definition.name, output=output)
                    sys.stdout.write(plain_json_text(record) + "\n")
                exported += 1
        finally:
            if index is not None:
                index.close()
        where = f" to {folder}" if folder is not None else ""
        print(
            f"pipekit: exported {exported} output(s) of phase {definition.num} {definition.name}{where}"
            + (f"; {sum(missing.values())} item(s) have none yet ({_by_outcome(missing)})" if missing else ""),
            file=sys.stderr,
        )
        return ExitCode.USAGE_ERROR if unreadable else ExitCode.OK


def _item_ids(option: Any, target: Target, plugins: list[Any], errors: list[StateFileError]) -> list[str]:
    """The items a run with the same ``--item``/``--items`` would select (never-started
    ones included), else those of the saved state ``--item`` chooses."""
    specs = batch_items(option, target, plugins)
    if specs is not None:
        return [item_id for item_id, _ in specs]
    return chosen_item_ids(target.store, option.item, errors)


def _by_outcome(counts: Counter[str]) -> str:
    """``1 failed, 2 pending``: items counted by ``item_outcome``."""
    return ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in OUTCOMES if counts[s])


def _parser() -> ArgumentParser:
    parser = command_parser("pipekit export", "Write one phase's outputs: a file per item, or JSON lines.", state=True)
    parser.add_argument("--phase", required=False, metavar="N|NAME", help="the phase whose outputs to export")
    parser.add_argument("-o", "--output", metavar="DIR", help="folder for one file per item plus index.jsonl")
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per item on stdout")
    add_item_sources(parser, item_help="only these items (globs allowed)")
    return parser


def _file(item_id: str, output: Any) -> tuple[str, bytes]:
    """The ``-o`` file of one item's output: its name and content."""
    if type(output) is str:
        # A lone surrogate is written as "surrogatepass" writes it (read it back so too).
        return f"{encode_item_id(item_id)}.txt", output.encode("utf-8", "surrogatepass")
    text = json.dumps(output, ensure_ascii=False, indent=2) + "\n"
    return f"{encode_item_id(item_id)}.json", text.encode("utf-8", "surrogatepass")
