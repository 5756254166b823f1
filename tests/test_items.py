"""Where items come from, in which order of precedence, and how bad items are reported."""

from __future__ import annotations

import pytest

from pipekit.testing import PipeTester


ECHO = '''
    from pipekit import phase, hookimpl

    @phase(1)
    def echo(item_id, metadata):
        return f"{item_id}:{sorted(metadata.items())}"
'''


def outputs(result, *ids):
    return [result.state(i).phase_outputs[1] for i in ids]


def test_txt_items_file_skips_blanks_and_comments(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO)
    (pipetester.path / "items.txt").write_text("  a  \n\n# a comment\nb\n")
    result = pipetester.run("pipeline.py", "--items", "items.txt")
    assert result.ret == 0, result
    assert outputs(result, "a", "b") == ["a:[]", "b:[]"]
    assert result.calls("pipekit_run_start")[0]["run"].total_items == 2


def test_jsonl_and_csv_items_carry_metadata(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO)
    pipetester.make_items({"id": "a", "title": "Emma"}, name="items.jsonl")
    pipetester.make_items({"id": "b", "year": "1851"}, name="more.csv")
    result = pipetester.run("pipeline.py", "--items", "items.jsonl", "--items", "more.csv")
    assert result.ret == 0, result
    assert outputs(result, "a", "b") == ["a:[('title', 'Emma')]", "b:[('year', '1851')]"]
    assert result.state("a").metadata == {"title": "Emma"}


def test_module_items_function_yields_ids_pairs_and_dicts(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO + '''
    def items():
        yield "a"
        yield ("b", {"k": 1})
        yield {"id": "c", "k": 2}
    ''')
    result = pipetester.run("pipeline.py")
    assert result.ret == 0, result
    assert outputs(result, "a", "b", "c") == ["a:[]", "b:[('k', 1)]", "c:[('k', 2)]"]


def test_command_line_items_win_and_items_function_is_not_called(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO + '''
    def items():
        raise AssertionError("must not be called")
    ''')
    result = pipetester.run("pipeline.py", "--item", "only")
    assert result.ret == 0, result
    assert outputs(result, "only") == ["only:[]"]


def test_collect_items_hook_comes_before_items_function(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO + '''
    @hookimpl
    def pipekit_collect_items(config, pipeline):
        return [("from-hook", {"source": "hook"})]

    def items():
        return ["from-function"]
    ''')
    result = pipetester.run("pipeline.py")
    assert result.ret == 0, result
    assert outputs(result, "from-hook") == ["from-hook:[('source', 'hook')]"]
    assert not (result.state_dir / "from-function.json").exists()


def test_metadata_from_the_source_wins_and_is_saved(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO)
    pipetester.make_items({"id": "a", "title": "old", "keep": "yes"}, name="items.jsonl")
    pipetester.run("pipeline.py", "--items", "items.jsonl")
    pipetester.make_items({"id": "a", "title": "new"}, name="items.jsonl")
    result = pipetester.run("pipeline.py", "--items", "items.jsonl")
    assert result.ret == 0
    assert result.state("a").metadata == {"title": "new", "keep": "yes"}


def test_no_items_exits_5(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO + "\n    def items():\n        return []\n")
    result = pipetester.run("pipeline.py")
    assert result.ret == 5
    assert "no items to process" in result.stderr


def test_no_item_source_at_all_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO)
    result = pipetester.run("pipeline.py")
    assert result.ret == 4
    assert "give --item/--items" in result.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("items.txt", "a\nb\na\n", "duplicate item id 'a'"),
        ("items.jsonl", '{"id": "a"}\n{"id": \n', "items.jsonl, line 2: invalid JSON"),
        ("items.jsonl", '{"name": "a"}\n', 'line 1: expected an object with an "id" key'),
        ("items.csv", "name,year\nx,1\n", "the header has no 'id' column"),
        ("missing.txt", None, "cannot read items file missing.txt"),
    ],
)
def test_bad_items_files_are_usage_errors_that_say_where(
    pipetester: PipeTester, name: str, content: str | None, message: str
) -> None:
    pipetester.make_pipeline(ECHO)
    if content is not None:
        (pipetester.path / name).write_text(content)
    result = pipetester.run("pipeline.py", "--items", name)
    assert result.ret == 4, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


WEIRD_IDS = [
    "../../etc/passwd",
    "a/b/c",
    "..",
    ".hidden",
    "with space and\ttab",
    "line\nbreak",
    "Ünïcödé 書 📚",
    "x" * 600,
    "CaseSensitive",
    "casesensitive",
    "%41",
    "A",
]


def test_weird_ids_get_their_own_file_inside_the_state_dir(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ECHO + f"\n    def items():\n        return {WEIRD_IDS!r}\n")
    result = pipetester.run("pipeline.py")
    assert result.ret == 0, result
    state_dir = result.state_dir
    files = sorted(p.name for p in state_dir.glob("*.json"))
    assert len(files) == len(WEIRD_IDS)
    assert all(len(name.encode()) <= 255 for name in files)
    for item_id in WEIRD_IDS:
        assert result.state(item_id).item_id == item_id
    assert not (pipetester.path / "etc").exists()
    assert [p for p in (pipetester.path).rglob("*.json") if state_dir not in p.parents] == []
