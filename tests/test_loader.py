"""Loading a pipeline module: discovery, declaration mistakes, module attributes."""

from __future__ import annotations

import pytest

import pipekit
from pipekit.testing import PipeTester


def test_load_returns_phases_sorted_with_name_and_noun(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline('''
        from pipekit import phase
        PIPELINE_NAME = "books"
        ITEM_NOUN = "books"

        @phase(2, name="second", critical=False, timeout=None, retries=3)
        def b(item_id): ...

        @phase(1)
        async def a(item_id): ...
    ''')
    pipeline = pipekit.load(str(path))
    assert pipeline.name == "books"
    assert pipeline.item_noun == "books"
    assert [(p.num, p.name) for p in pipeline.phases] == [(1, "a"), (2, "second")]
    second = pipeline.phases[1]
    assert (second.critical, second.timeout_seconds, second.retries) == (False, None, 3)
    assert pipeline.phases[0].is_async and not second.is_async


def test_decorated_function_stays_callable() -> None:
    @pipekit.phase(1)
    def shout(item_id: str) -> str:
        return item_id.upper()

    assert shout("a") == "A"


def test_default_pipeline_name_is_the_file_stem(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline("from pipekit import phase\n@phase(1)\ndef a(): ...\n", name="my_flow")
    assert pipekit.load(str(path)).name == "my_flow"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("@phase(1)\ndef a(): ...\n@phase(1)\ndef b(): ...\n", "a, b: duplicate phase num 1"),
        ("@phase(1)\ndef a(): ...\n@phase(2, name='a')\ndef b(): ...\n", "duplicate phase name 'a'"),
        ("@phase(1)\ndef a(nonsense): ...\n", "a: handler parameter 'nonsense' cannot be injected"),
        ("@phase('1')\ndef a(): ...\n", "a: phase num must be an int"),
        ("@phase(1)\ndef metadata(): ...\n", "phase name 'metadata' clashes with an injected argument"),
        ("@phase(1)\ndef a(later): ...\n@phase(2)\ndef later(): ...\n", "'later' cannot be injected"),
        ("@phase(1, cache=lambda what: True)\ndef a(): ...\n", "a: cache parameter 'what'"),
        ("x = 1\n", "no phases in"),
    ],
)
def test_declaration_mistakes_are_usage_errors_naming_the_function(
    pipetester: PipeTester, source: str, expected: str
) -> None:
    pipetester.make_pipeline("from pipekit import phase\n" + source)
    result = pipetester.run("pipeline.py", "--item", "x")
    assert result.ret == 4, result
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (pipetester.path / "state").exists()


def test_parameter_with_default_keeps_it(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1)
        def a(item_id, temperature=0.5):
            return f"{item_id} at {temperature}"
    ''')
    result = pipetester.run("pipeline.py", "--item", "x")
    assert result.ret == 0, result
    assert result.state("x").phase_outputs[1] == "x at 0.5"


def test_module_that_raises_shows_the_users_traceback_not_pipekits(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        def broken_helper():
            raise RuntimeError("config missing")

        broken_helper()
    ''')
    result = pipetester.run("pipeline.py", "--item", "x")
    assert result.ret == 4
    assert "pipeline.py" in result.stderr and "broken_helper" in result.stderr
    assert "RuntimeError: config missing" in result.stderr
    assert "pipekit/loader.py" not in result.stderr


def test_dotted_module_name_from_the_current_folder(pipetester: PipeTester) -> None:
    daily = "from pipekit import phase\n@phase(1)\ndef a(item_id):\n    return item_id\n"
    pipetester.make_files({"flows": {"__init__.py": "", "daily.py": daily}})
    result = pipetester.run("run", "flows.daily", "--item", "x")
    assert result.ret == 0, result
    assert result.state_dir.name == "daily"


def test_missing_module_is_a_usage_error(pipetester: PipeTester) -> None:
    result = pipetester.run("no_such_module_here", "--item", "x")
    assert result.ret == 4
    assert "no module named 'no_such_module_here'" in result.stderr


def test_unknown_option_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline("from pipekit import phase\n@phase(1)\ndef a(): ...\n")
    result = pipetester.run("pipeline.py", "--item", "x", "--frobnicate")
    assert result.ret == 4
    assert "--frobnicate" in result.stderr


_SIMPLE = """
from pipekit import phase

@phase(1)
def one(item_id):
    return "1"
"""


@pytest.mark.parametrize("call", ["sys.exit()", "sys.exit(0)", "sys.exit(3)", "sys.exit('bye')"])
def test_a_module_calling_sys_exit_on_import_is_a_usage_error_naming_it(pipetester: PipeTester, call: str) -> None:
    pipetester.make_pipeline("import sys\n" + call + "\n" + _SIMPLE)
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 4, result
    assert f"pipeline 'pipeline.py' called {call} while being imported" in result.stderr
    assert not (pipetester.path / "state").exists()


@pytest.mark.slow
def test_a_module_calling_sys_exit_on_import_fails_the_command_line(pipetester: PipeTester) -> None:
    pipetester.make_pipeline("import sys\nsys.exit(0)\n" + _SIMPLE)
    result = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert result.ret == 4, result
    assert "pipeline 'pipeline.py' called sys.exit(0) while being imported" in result.stderr
