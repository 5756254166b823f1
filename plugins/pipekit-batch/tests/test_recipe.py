"""docs/recipes/batch-apis.md: its pipeline's requests through OpenAIBatch and the fake OpenAI server."""

from __future__ import annotations

from pathlib import Path
import runpy
from typing import Any

import pytest

import pipekit
from pipekit.pipeline.batch import BatchRequest
from pipekit.testing import PipeTester
from pipekit_batch.fakeserver import FakeServer


RECIPE = Path(__file__).resolve().parents[3] / "docs" / "snippets" / "batch_recipe.py"


def recipe_functions(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The recipe module's functions as plain functions (``@phase`` leaves them as they are)."""
    monkeypatch.setattr(pipekit, "phase", lambda *args, **kwargs: lambda function: function, raising=False)
    return runpy.run_path(str(RECIPE))


def test_the_recipes_requests_are_accepted_answered_and_assembled(
    openai_fake: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recipe = recipe_functions(monkeypatch)
    provider = recipe["BATCHES"]["openai"]
    assert recipe["items"]() == ["aesop", "andersen", "grimm"]
    chapters = recipe["split"]("aesop")
    assert len(chapters) == 12 and chapters[0]["number"] == 1 and chapters[0]["text"]
    requests = [BatchRequest(*provider.check_request(r)) for r in recipe["summarise"]("aesop", chapters)]
    assert all(provider.wire_id_ok(r.custom_id) for r in requests)
    batch_id = provider.submit("recipe", requests)
    openai_fake.advance()
    answers = {r.custom_id: r.body for r in provider.results(batch_id) if r.outcome == "succeeded"}
    assert len(answers) == 12
    assert recipe["assemble"]("aesop", chapters, answers, tmp_path) == "report.md"
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# aesop\n") and report.count("\n## ") == 12
    assert chapters[0]["text"] in report  # the fake answers with the chapter itself


@pytest.mark.slow
def test_the_recipe_waits_then_completes_at_half_the_price(openai_fake: FakeServer, pipetester: PipeTester) -> None:
    args = [str(RECIPE), "--state-dir", "state"]
    first = pipetester.run_subprocess(*args)
    assert first.ret == 6, first  # waiting on the batch
    assert len(openai_fake.stats()["batches"]) == 1
    openai_fake.advance()
    second = pipetester.run_subprocess(*args)
    assert second.ret == 0, second
    submitted = openai_fake.stats()["submitted"]
    assert len(submitted) == 12 + 3 + 4 and set(submitted.values()) == {1}  # every chapter once
    for book in ("aesop", "andersen", "grimm"):
        phase = second.state(book).phases[2]
        assert phase.status == "completed"
        assert phase.cost_usd == pytest.approx((phase.tokens_in * 0.15 + phase.tokens_out * 0.60) / 1e6 * 0.5)
    assert len(list(Path("state").glob("outputs/*/report.md"))) == 3
