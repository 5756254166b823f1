"""Unit tests of pipekit.stale.fingerprint: what counts as a code change, inputs, the source archive (#10)."""

from __future__ import annotations

import linecache
from pathlib import Path
from typing import Any

from pipekit.pipeline.phases import phase
from pipekit.pipeline.phases import phase_definition_of
from pipekit.stale.fingerprint import SourceArchive
from pipekit.stale.fingerprint import code_identity
from pipekit.stale.fingerprint import consumed_phases
from pipekit.stale.fingerprint import input_hash
from pipekit.stale.fingerprint import phase_fingerprint
from pipekit.state.digest import text_hash


def define(tmp_path: Path, source: str, name: str = "handler") -> Any:
    """Compile ``source`` from a real file (so that its source can be read) and return ``name``."""
    path = tmp_path / f"mod_{text_hash(source)}.py"
    path.write_text(source)
    namespace: dict[str, Any] = {"phase": phase}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace[name]


BASE = "@phase(1)\ndef handler(item_id):\n    return item_id.upper()\n"


def test_formatting_comments_and_decorator_do_not_count(tmp_path: Path) -> None:
    base = code_identity(define(tmp_path, BASE)).hash
    assert base is not None
    same = [
        "@phase(1, version='7', timeout=5)\ndef handler(item_id):\n    return item_id.upper()\n",
        "@phase(1)\ndef handler( item_id ):\n    # shout\n\n    return (item_id.upper())  # really\n",
    ]
    for source in same:
        assert code_identity(define(tmp_path, source)).hash == base, source


def test_every_other_edit_counts(tmp_path: Path) -> None:
    base = code_identity(define(tmp_path, BASE)).hash
    changed = [
        "@phase(1)\ndef handler(item_id):\n    return item_id.lower()\n",
        '@phase(1)\ndef handler(item_id):\n    """A docstring."""\n    return item_id.upper()\n',
        "@phase(1)\ndef handler(item_id, metadata=None):\n    return item_id.upper()\n",
    ]
    for source in changed:
        identity = code_identity(define(tmp_path, source))
        assert identity.hash != base, source
        assert identity.source == source


def test_no_source_is_unknown() -> None:
    handler = eval("lambda item_id: item_id")
    assert code_identity(handler).hash is None


def test_unrelated_text_under_the_functions_file_name_is_not_its_source() -> None:
    # Python 3.13 keeps a ``python -c`` program's text under "<string>", the file name of
    # every function made there with exec(): that text is not the function's source.
    namespace: dict[str, Any] = {}
    exec(compile("def research(item_id):\n    return item_id\n", "<made-by-exec>", "exec"), namespace)
    text = "import sys; exec(sys.stdin.read())\n"
    linecache.cache["<made-by-exec>"] = (len(text), None, [text], "<made-by-exec>")
    try:
        assert code_identity(namespace["research"]).hash is None
    finally:
        del linecache.cache["<made-by-exec>"]


def test_inputs_are_hashed_as_json_and_may_be_async() -> None:
    async def model(metadata: dict[str, Any]) -> dict[str, Any]:
        return {"model": metadata["model"], "temperature": 0}

    @phase(1, fingerprint=model)
    def one(item_id: str) -> str:
        return item_id

    definition = phase_definition_of(one)
    assert definition is not None
    first = input_hash(definition, {"metadata": {"model": "a"}, "item_id": "x"})
    assert first == input_hash(definition, {"metadata": {"model": "a"}, "item_id": "y"})
    assert first != input_hash(definition, {"metadata": {"model": "b"}, "item_id": "x"})


def test_consumed_are_the_outputs_the_handler_is_given() -> None:
    @phase(1)
    def first() -> str:
        return "1"

    @phase(2)
    def second(first: str) -> str:
        return first

    @phase(3)
    def third(second: str) -> str:
        return second

    @phase(4)
    def fourth(**kwargs: Any) -> str:
        return ""

    phases = [phase_definition_of(f) for f in (first, second, third, fourth)]
    assert all(phases)
    definitions = [p for p in phases if p is not None]
    assert [p.name for p in consumed_phases(definitions[2], definitions)] == ["second"]
    assert [p.name for p in consumed_phases(definitions[3], definitions)] == ["first", "second", "third"]
    fingerprint = phase_fingerprint(definitions[2], definitions, {1: "a", 2: "b"}, lambda f: {})
    assert fingerprint["consumed"] == {"second": text_hash("b")}
    assert fingerprint["version"] is None and fingerprint["input"] is None


def test_source_archive_is_written_once_per_hash(tmp_path: Path) -> None:
    identity = code_identity(define(tmp_path, BASE))
    assert identity.hash is not None
    archive = SourceArchive(tmp_path / "sources")
    archive.save(identity)
    archive.save(identity)
    assert [p.name for p in (tmp_path / "sources").iterdir()] == [f"{identity.hash}.py"]
    assert archive.load(identity.hash) == BASE
    assert archive.load("0" * 16) is None
